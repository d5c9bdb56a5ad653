"""The public API: what `import genrouter` exposes, and that importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import genrouter
import genrouter.errors
import genrouter.types

# Every name ARCHITECTURE.md's public contract spells out as importable from `genrouter`.
CONTRACT_NAMES = frozenset(
    {
        "generate",
        "agenerate",
        "AsyncRouter",
        "Router",
        "load_config",
        "RouterConfig",
        "GenerationRequest",
        "GenerationResult",
        "Artifact",
        "Cost",
        "Timings",
        "Attempt",
        "JobHandle",
        "JobStatus",
        "LoRA",
        "RoutePlan",
        "Candidate",
        "GenRouterError",
        "ConfigError",
        "InvalidRequestError",
        "NoRouteError",
        "ProviderError",
        "RateLimitedError",
        "ProviderUnavailableError",
        "AuthenticationError",
        "JobFailedError",
        "DeadlineExceededError",
        "BudgetExceededError",
        "AllProvidersFailedError",
    }
)


def test_all_is_sorted() -> None:
    """genrouter.__all__ is in sorted order."""
    assert list(genrouter.__all__) == sorted(genrouter.__all__)


def test_all_has_no_duplicates() -> None:
    """genrouter.__all__ lists each name once."""
    assert len(set(genrouter.__all__)) == len(genrouter.__all__)


def test_all_covers_every_contract_name() -> None:
    """Every name of the public contract is in genrouter.__all__."""
    assert CONTRACT_NAMES - set(genrouter.__all__) == set()


@pytest.mark.parametrize("name", sorted(genrouter.__all__))
def test_every_name_in_all_is_importable(name: str) -> None:
    """Each name in __all__ is an attribute of the genrouter package."""
    assert getattr(genrouter, name) is not None


def test_star_import_gives_the_contract_names() -> None:
    """`from genrouter import *` brings in every contract name."""
    namespace: dict[str, object] = {}
    exec("from genrouter import *", namespace)
    assert set(namespace) >= CONTRACT_NAMES


@pytest.mark.parametrize("name", sorted(genrouter.errors.__all__))
def test_every_error_is_re_exported_from_genrouter(name: str) -> None:
    """Each public error class is the same object in genrouter and genrouter.errors."""
    assert name in genrouter.__all__
    assert getattr(genrouter, name) is getattr(genrouter.errors, name)


@pytest.mark.parametrize("name", sorted(n for n in genrouter.types.__all__ if n != "Strategy"))
def test_every_type_is_re_exported_from_genrouter(name: str) -> None:
    """Each public type is the same object in genrouter and genrouter.types."""
    assert name in genrouter.__all__
    assert getattr(genrouter, name) is getattr(genrouter.types, name)


def test_strategy_is_re_exported_from_genrouter() -> None:
    """genrouter.Strategy is the Literal of strategy names in genrouter.types."""
    assert "Strategy" in genrouter.__all__
    assert genrouter.Strategy is genrouter.types.Strategy  # type: ignore[attr-defined]


def test_version_is_a_string() -> None:
    """genrouter.__version__ is a version string."""
    assert isinstance(genrouter.__version__, str)
    assert genrouter.__version__.count(".") >= 1


def test_routers_are_the_documented_classes() -> None:
    """genrouter.AsyncRouter and genrouter.Router are the router and its sync twin."""
    from genrouter.router import AsyncRouter
    from genrouter.sync import Router

    assert genrouter.AsyncRouter is AsyncRouter
    assert genrouter.Router is Router


def test_importing_genrouter_imports_no_provider_sdk() -> None:
    """`import genrouter` loads no provider SDK (fal_client, replicate, modal)."""
    code = (
        "import sys, genrouter\n"
        "loaded = [m for m in ('fal_client', 'replicate', 'modal') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_routing_a_request_does_not_load_httpx_command_line_tool() -> None:
    """httpx's CLI (click, rich) stays unloaded in a process that imports genrouter and httpx."""
    code = (
        "import sys, genrouter, httpx\n"
        "genrouter.AsyncRouter.from_config({'version': 1, 'providers': {'fal': {'api_key': 'k'}}})\n"
        "print(','.join(m for m in ('click', 'rich') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_httpx_main_still_runs_the_real_httpx_command_line_tool() -> None:
    """Calling httpx.main after importing genrouter loads and runs httpx's own CLI."""
    code = "import genrouter, httpx\nhttpx.main(['--help'])\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Usage: httpx" in out.stdout
