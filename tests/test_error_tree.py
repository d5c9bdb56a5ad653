"""Every error class lives in genrouter.errors and is drawn in its docstring tree under its parent."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import genrouter
import genrouter.errors

ERRORS = {
    name: obj
    for name, obj in vars(genrouter.errors).items()
    if inspect.isclass(obj) and issubclass(obj, genrouter.errors.GenRouterError)
}


def drawn_parents() -> dict[str, str]:
    """Each class named in the ``errors`` docstring tree, mapped to the class drawn above it."""
    doc = genrouter.errors.__doc__ or ""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^[\s│]*(?:[├└]── )?(\w+Error)\b", line)
        if match is None:
            continue
        depth = match.start(1)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[match.group(1)] = stack[-1][1]
        stack.append((depth, match.group(1)))
    return parents


def genrouter_modules() -> list[str]:
    """Every importable genrouter module (the ones needing an optional SDK are skipped)."""
    names = []
    for info in pkgutil.walk_packages(genrouter.__path__, "genrouter."):
        if info.name.endswith(".__main__"):
            continue  # runs the CLI
        try:
            importlib.import_module(info.name)
        except ImportError:
            continue
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", sorted(set(ERRORS) - {"GenRouterError"}))
def test_every_error_is_drawn_under_its_parent(name: str) -> None:
    """The docstring tree names each error class under the class it derives from."""
    parent = drawn_parents().get(name)
    assert parent is not None, f"{name} is not drawn in genrouter.errors' docstring tree"
    assert issubclass(ERRORS[name], ERRORS[parent]), f"{name} is drawn under {parent}"


@pytest.mark.parametrize(
    "name", ["MediaError", "AttemptTimedOutError", "SubmitOutcomeUnknownError", "WebhookVerificationError"]
)
def test_the_errors_other_modules_raise_are_in_the_tree(name: str) -> None:
    """Errors raised by media reads, attempt timeouts, submits and webhooks are drawn too."""
    assert name in drawn_parents()


def test_no_module_defines_a_public_error_outside_errors_py() -> None:
    """Every public GenRouterError subclass anywhere in the package is defined in genrouter.errors."""
    stray = []
    for module_name in genrouter_modules():
        for name, obj in vars(importlib.import_module(module_name)).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, genrouter.errors.GenRouterError)
                and not name.startswith("_")
                and obj.__module__ != "genrouter.errors"
            ):
                stray.append(f"{module_name}.{name}")
    assert stray == []
