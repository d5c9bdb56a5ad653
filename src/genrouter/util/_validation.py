"""Pydantic validation errors as the user's key paths: ``key.path: problem (got value); did you
mean 'x'?``, one line per problem.

The config, the catalog files and request validation all report through it; it knows none of
their models. Paths are the user's keys (pydantic's union and tag labels are dropped); an
unknown key gets the nearest valid key, or the list of valid keys; a bad literal the nearest
valid value; secret values show as ``***``. A caller with a tagged union passes ``tags`` (tag →
model: pydantic puts the tag into ``loc`` after the key), its own error types get ``custom``
formatters, and ``keep`` drops errors it reports elsewhere.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from genrouter.util._secrets import SECRET_KEY_PATTERN

__all__ = [
    "CustomProblem",
    "describe_value",
    "field_names",
    "format_errors",
    "format_validation_errors",
    "is_secret_path",
    "model_at",
    "render_path",
    "suggest",
]

CustomProblem = Callable[[Sequence[Any], Any], tuple[str, str]]
"""(cleaned key path, the error's input) → (key path, message), for a caller's own error type."""

_NO_TAGS: Mapping[str, type[BaseModel]] = {}


def is_secret_path(path: Sequence[Any]) -> bool:
    """Whether the last key of ``path`` names a credential (its value is never shown)."""
    last = next((p for p in reversed(path) if isinstance(p, str)), None)
    return last is not None and bool(SECRET_KEY_PATTERN.search(last))


def render_path(loc: Sequence[Any]) -> str:
    """``("routing", "default", "retry")`` → ``routing.default.retry``; ints as ``[i]``."""
    out = ""
    for part in loc:
        if type(part) is int:
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _first_model(candidates: list[Any]) -> type[BaseModel] | None:
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def model_at(
    root: type[BaseModel], loc: Sequence[Any], tags: Mapping[str, type[BaseModel]] = _NO_TAGS
) -> tuple[type[BaseModel] | None, list[Any]]:
    """Walk ``loc`` from ``root``; return the model class at its end and the cleaned path.

    The cleaned path drops what pydantic adds to ``loc`` that is no key of the
    user's: union branch labels (``function-after[...]``, ``int``), tagged-union
    tags (``simulated``), ``[key]`` markers.
    """
    current: Any = root
    clean: list[Any] = []
    parts = list(loc)
    i = 0
    while i < len(parts):
        part = parts[i]
        candidates = _unwrap(current)
        if isinstance(part, str) and _is_union_label(part, candidates):
            i += 1
            continue
        model = _first_model(candidates)
        if model is not None:
            field = model.model_fields.get(str(part))
            if field is None:
                return None, clean + [p for p in parts[i:] if not _is_marker(p)]
            clean.append(part)
            current = field.annotation
            i += 1
            continue
        container = next((c for c in candidates if typing.get_origin(c) in (dict, list, tuple)), None)
        if container is not None:
            args = typing.get_args(container)
            clean.append(part)
            current = args[-1] if args else Any
            i += 1
            # A tagged union member: the tag follows the key in pydantic's loc.
            members = _unwrap(current)
            if len(members) > 1 and i < len(parts) and str(parts[i]) in tags:
                current = tags[str(parts[i])]
                i += 1
            continue
        return None, clean + [p for p in parts[i:] if not _is_marker(p)]
    return _first_model(_unwrap(current)), clean


def _is_marker(part: Any) -> bool:
    return isinstance(part, str) and "[" in part and part.endswith("]")


def _is_union_label(part: str, candidates: list[Any]) -> bool:
    """Pydantic puts union branch labels (``function-after[...]``, ``int``) into ``loc``."""
    names = {c.__name__ for c in candidates if isinstance(c, type)}
    return "[" in part or (part in names and len(candidates) > 1)


def field_names(model: type[BaseModel]) -> list[str]:
    """The keys ``model`` accepts, in declaration order."""
    return [name for name, f in model.model_fields.items() if not f.exclude]


_PLAIN_MESSAGES = {
    "missing": "required key is missing",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "decimal_type": "expected a decimal number",
    "decimal_parsing": "expected a decimal number",
    "decimal_max_places": "too many decimal places",
    "invalid_key": "keys must be strings; quote the key in YAML",
}


def describe_value(value: Any) -> str:
    """A value as an error message shows it: its kind for containers, else a short repr."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def suggest(given: Any, options: Sequence[str], cutoff: float = 0.6) -> str | None:
    """The option nearest ``given`` (difflib), or None when none is close enough."""
    close = difflib.get_close_matches(str(given), list(options), n=1, cutoff=cutoff)
    return close[0] if close else None


def _problem(
    error: ErrorDetails,
    root: type[BaseModel],
    prefix: Sequence[Any],
    tags: Mapping[str, type[BaseModel]],
    custom: Mapping[str, CustomProblem],
) -> tuple[str, str]:
    """(key path, message) for one pydantic error."""
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        parent_model, parent_path = model_at(root, loc[:-1], tags)
        unknown = str(loc[-1])
        path = render_path((*prefix, *parent_path, loc[-1]))
        message = f"unknown key {unknown!r}"
        if parent_model is not None:
            names = field_names(parent_model)
            hint = suggest(unknown, names)
            if hint is not None:
                message += f"; did you mean {hint!r}?"
            else:
                message += f"; valid keys are {', '.join(names)}"
        return path, message
    _, clean = model_at(root, loc, tags)
    if kind in custom:
        return custom[kind]((*prefix, *clean), error["input"])
    path = render_path((*prefix, *clean))
    if loc and loc[-1] == "[key]":
        return path, f"key {describe_value(error['input'])} is not a string; quote it in YAML"
    message = _PLAIN_MESSAGES.get(kind, error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "too_short" and clean == ["providers"]:
        message = "at least one provider is needed"
    elif kind == "literal_error" and clean == ["version"]:
        message = "only version 1 is supported"
    value = error.get("input")
    scalar = not isinstance(value, Mapping | list | tuple | set | frozenset)
    if kind not in ("missing", "too_short") and (scalar or kind in _PLAIN_MESSAGES):
        shown = "***" if is_secret_path(clean) else describe_value(value)
        message += f" (got {shown})"
    if kind in ("literal_error", "enum"):
        expected = re.findall(r"'([^']+)'", str(error.get("ctx", {}).get("expected", "")))
        hint = suggest(error.get("input"), expected, cutoff=0.5)
        if hint is not None:
            message += f"; did you mean {hint!r}?"
    return path, message


def format_errors(
    errors: Sequence[ErrorDetails],
    *,
    root: type[BaseModel],
    prefix: Sequence[Any] = (),
    tags: Mapping[str, type[BaseModel]] = _NO_TAGS,
    custom: Mapping[str, CustomProblem] | None = None,
    keep: Callable[[str, ErrorDetails], bool] | None = None,
) -> list[str]:
    """One line per key path with a problem; several messages on one path are joined with "or".

    ``keep(path, error)`` False drops an error (reported elsewhere).
    """
    merged: dict[str, list[str]] = {}
    for error in errors:
        path, message = _problem(error, root, prefix, tags, custom or {})
        if keep is not None and not keep(path, error):
            continue
        messages = merged.setdefault(path, [])
        if message not in messages:
            messages.append(message)
    # Several messages on one path are a union's branches: any one of them would do.
    return [f"{path}: {' or '.join(messages)}" for path, messages in merged.items()]


def format_validation_errors(
    exc: ValidationError, *, root: type[BaseModel], prefix: Sequence[Any] = ()
) -> list[str]:
    """One line per problem of ``exc`` (a validation of ``root``): ``key.path: problem (got value)``."""
    return format_errors(exc.errors(include_url=False), root=root, prefix=prefix)
