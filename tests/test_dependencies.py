"""Core dependencies are what ``src/`` imports at run time; provider SDKs are test-only."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDKS = {"fal-client": "fal_client", "replicate": "replicate"}


def _project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project: dict[str, object] = data["project"]
    return project


def _names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    return {re.split(r"[<>=\[; ]", req, maxsplit=1)[0].lower() for req in requirements}


def _imported_roots() -> set[str]:
    roots: set[str] = set()
    for path in (ROOT / "src" / "genrouter").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    return roots


def test_provider_sdks_are_not_core_dependencies() -> None:
    """fal-client and replicate are not installed with genrouter: it speaks HTTP to both."""
    assert not set(SDKS) & _names(_project()["dependencies"])


def test_nothing_in_src_imports_a_provider_sdk() -> None:
    """No module of the package imports fal_client or replicate (so dropping them is safe)."""
    assert not set(SDKS.values()) & _imported_roots()


def test_the_test_extra_keeps_the_sdks_for_the_agreement_tests() -> None:
    """The SDK-agreement tests still find both clients through the test extra."""
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert set(SDKS) <= _names(extras["test"])
