"""The sync twin Router, and the module-level genrouter.generate / agenerate."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import genrouter
from genrouter import (
    AsyncRouter,
    ConfigError,
    GenerationRequest,
    JobFailedError,
    JobHandle,
    JobState,
    NoRouteError,
    Router,
)
from genrouter.testing import FakeBackend, Hang

PARITY_METHODS = (
    "generate",
    "explain",
    "submit",
    "status",
    "result",
    "cancel",
    "handle_webhook",
    "from_config",
)

SIM_CONFIG: dict[str, Any] = {
    "version": 1,
    "providers": {
        "sim-fast": {
            "type": "simulated",
            "latency": {"median_s": 0.01, "p99_s": 0.03},
            "price": {"per_image": "0.030"},
            "seed": 1,
        },
        "sim-cheap": {
            "type": "simulated",
            "latency": {"median_s": 0.02, "p99_s": 0.05},
            "price": {"per_image": "0.010"},
            "seed": 2,
        },
    },
    "routing": {
        "default": {
            "strategy": "balanced",
            "latency_slo_s": 5,
            "retry": {"max_attempts": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.05},
            "timeouts": {"attempt_s": 5, "deadline_s": 10},
        },
        "models": {"flux-schnell": {"strategy": "cost"}},
    },
}


def parameters(function: Any) -> list[tuple[str, Any]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values() if p.name != "self"]


# -- parity ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PARITY_METHODS)
def test_sync_router_has_the_same_parameters_as_async_router(name: str) -> None:
    """Router.<method> takes the same parameter names and kinds as AsyncRouter.<method>."""
    assert parameters(getattr(Router, name)) == parameters(getattr(AsyncRouter, name))


@pytest.mark.parametrize("name", PARITY_METHODS)
def test_sync_router_has_the_same_defaults_as_async_router(name: str) -> None:
    """Router.<method>'s parameter defaults match AsyncRouter.<method>'s."""

    def defaults(function: Any) -> dict[str, Any]:
        return {p.name: p.default for p in inspect.signature(function).parameters.values()}

    assert defaults(getattr(Router, name)) == defaults(getattr(AsyncRouter, name))


@pytest.mark.parametrize("name", PARITY_METHODS)
def test_sync_router_methods_are_blocking(name: str) -> None:
    """Every Router method is a plain (non-async) callable."""
    assert not inspect.iscoroutinefunction(getattr(Router, name))


# -- end to end ---------------------------------------------------------------------------------------


def test_router_works_as_a_context_manager_end_to_end() -> None:
    """`with Router.from_config(...)` generates, explains and runs the jobs API, blocking."""
    with Router.from_config(SIM_CONFIG) as router:
        result = router.generate("a red fox in snow", model="flux-dev", width=64, height=64, seed=7)
        assert result.provider in ("sim-fast", "sim-cheap")
        assert result.outputs[0].read().startswith(b"\x89PNG")
        assert result.cost.amount_usd is not None

        plan = router.explain("a red fox", model="flux-schnell")
        assert plan.strategy == "cost"
        assert plan.candidates[0].provider == "sim-cheap"

        handle = router.submit(GenerationRequest(model="flux-dev", prompt="a fox", width=32, height=32))
        assert router.status(handle).state in (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED)
        finished = router.result(handle, timeout=5)
        assert finished.provider_request_id == handle.provider_request_id


def test_router_resumes_a_handle_from_json() -> None:
    """A handle serialised by one sync Router is finished by another built from the same config."""
    with Router.from_config(SIM_CONFIG) as first:
        handle = first.submit("a fox", model="flux-dev", width=32, height=32, seed=3)
    text = handle.model_dump_json()
    with Router.from_config(SIM_CONFIG) as second:
        result = second.result(JobHandle.model_validate_json(text), timeout=5)
    assert result.seed == 3


def test_router_cancel_blocks_until_sent() -> None:
    """Router.cancel() stops a job; Router.result() then raises JobFailedError(state='cancelled')."""
    backend = FakeBackend(name="a", script=[Hang()])
    cfg = {"version": 1, "providers": {"a": {"type": "custom", "models": {"flux-dev": {"endpoint": "x"}}}}}
    with Router.from_config(cfg, backends={"a": backend}) as router:
        handle = router.submit("a fox", model="flux-dev")
        router.cancel(handle)
        assert backend.cancelled == [handle.provider_request_id]
        with pytest.raises(JobFailedError) as info:
            router.result(handle)
    assert info.value.state == "cancelled"


def test_router_raises_the_same_typed_errors() -> None:
    """The sync Router raises genrouter's typed errors, not wrapped ones."""
    with Router.from_config(SIM_CONFIG) as router, pytest.raises(NoRouteError, match="did you mean"):
        router.generate("a fox", model="flux-devv")


def test_router_close_is_idempotent() -> None:
    """close() can be called again after the context manager closed the router."""
    router = Router.from_config(SIM_CONFIG)
    with router:
        pass
    router.close()


def test_router_from_config_failure_raises_config_error() -> None:
    """A bad config raises ConfigError from Router.from_config and leaves no portal thread running."""

    def portals() -> int:
        return sum(t.name == "genrouter-portal" and t.is_alive() for t in threading.enumerate())

    before = portals()
    with pytest.raises(ConfigError):
        Router.from_config({"version": 1, "providers": {"a": {"type": "custom"}}})
    assert portals() == before


def test_router_exposes_its_async_router() -> None:
    """Router.async_router is the AsyncRouter underneath."""
    with Router.from_config(SIM_CONFIG) as router:
        assert isinstance(router.async_router, AsyncRouter)
        assert set(router.async_router.backends) == {"sim-fast", "sim-cheap"}


# -- module-level generate -------------------------------------------------------------------------------


@pytest.fixture
def discovered_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """GENROUTER_CONFIG points at a simulated config; the default routers are reset afterwards."""
    path = tmp_path / "genrouter.yaml"
    path.write_text(yaml.safe_dump(SIM_CONFIG), encoding="utf-8")
    monkeypatch.setenv("GENROUTER_CONFIG", str(path))
    monkeypatch.setattr(genrouter, "_default_sync", None)
    yield path
    router = genrouter._default_sync
    if router is not None:
        router.close()
    genrouter._default_sync = None
    genrouter._default_async.clear()


def test_module_generate_uses_the_discovered_config(discovered_config: Path) -> None:
    """genrouter.generate() builds a Router from GENROUTER_CONFIG and generates with it."""
    result = genrouter.generate("a red fox in snow", model="flux-dev", width=64, height=64, seed=7)
    assert result.provider in ("sim-fast", "sim-cheap")
    assert result.outputs[0].width == 64


def test_module_generate_reuses_its_router(discovered_config: Path) -> None:
    """Successive genrouter.generate() calls reuse one Router."""
    genrouter.generate("a fox", model="flux-dev", width=32, height=32)
    first = genrouter._default_sync
    genrouter.generate("a fox", model="flux-dev", width=32, height=32)
    assert genrouter._default_sync is first is not None


async def test_module_agenerate_uses_the_discovered_config(discovered_config: Path) -> None:
    """genrouter.agenerate() generates with the discovered config, asynchronously."""
    result = await genrouter.agenerate("a fox", model="flux-dev", width=32, height=32)
    assert result.provider in ("sim-fast", "sim-cheap")


def test_module_generate_without_any_config_explains_how_to_configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no config and no credentials, generate() raises ConfigError and never simulates."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(genrouter, "_default_sync", None)
    with pytest.raises(ConfigError, match="GENROUTER_CONFIG") as info:
        genrouter.generate("a fox", model="flux-dev")
    assert "examples/offline.yaml" in str(info.value)
    assert genrouter._default_sync is None
