"""The package's layers: which modules may import which (read from the source, lazy imports too)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "genrouter"
PROVIDERS = ("fal", "replicate", "modal", "simulated")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every absolute genrouter module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("genrouter")}


MODULES = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def importers_of(prefix: str) -> set[str]:
    pattern = re.compile(rf"^{re.escape(prefix)}(\.|$)")
    return {m for m, deps in MODULES.items() if any(pattern.match(d) for d in deps)}


def test_the_catalog_never_imports_the_config() -> None:
    """catalog → config was a cycle over a borrowed error formatter; the formatter is shared now."""
    assert {m for m in importers_of("genrouter.config") if m.startswith("genrouter.catalog")} == set()


def test_the_router_never_imports_the_webhooks_module() -> None:
    """The router verifies through each provider's verifier, so router ↔ webhooks is no cycle."""
    assert "genrouter.router" not in importers_of("genrouter.webhooks")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_provider_package_is_imported_only_through_the_registry_and_public_re_exports(
    provider: str,
) -> None:
    """Outside ``backends/<provider>/`` only the registry, the settings re-exports and
    ``genrouter.webhooks`` (the public verifiers) name a provider package's modules."""
    package = f"genrouter.backends.{provider}"
    outside = {m for m in importers_of(package) if not m.startswith(package)}
    assert outside <= {"genrouter.backends.base", "genrouter.backends.settings", "genrouter.webhooks"}


@pytest.mark.parametrize(
    "layer", ["genrouter.engine", "genrouter.routing", "genrouter.catalog", "genrouter.util"]
)
def test_lower_layers_never_import_the_router_or_the_entry_points(layer: str) -> None:
    """engine, routing, catalog and util import neither the router nor the CLI, batch or webhooks."""
    upper = ("genrouter.router", "genrouter.sync", "genrouter.cli", "genrouter.batch", "genrouter.webhooks")
    offenders = {
        m: sorted(d for d in deps if d.startswith(upper))
        for m, deps in MODULES.items()
        if m.startswith(layer) and any(d.startswith(upper) for d in deps)
    }
    assert offenders == {}


def test_no_private_module_is_left_at_the_package_root() -> None:
    """The root holds the public modules only; private ones live in their feature's package."""
    assert sorted(p.name for p in PACKAGE.glob("_*.py") if p.name != "__init__.py") == []
