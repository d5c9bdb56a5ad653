"""Simulated autoscaling: a queue in front of containers that start after a cold start and
leave after an idle window, all on the router's clock (FakeClock here)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrouter import AsyncRouter, ConfigError, JobState
from genrouter.backends.settings import Autoscale
from genrouter.backends.simulated._autoscale import AutoscaleModel
from genrouter.routing.capacity import CapacityFacts, ReportsCapacity
from genrouter.testing import FakeClock


def gpu_config(service_s: float = 2.0, **autoscale: Any) -> dict[str, Any]:
    """One simulated self-hosted provider, deterministic service time, the given autoscale."""
    return {
        "version": 1,
        "providers": {
            "gpu": {
                "type": "simulated",
                "latency": {"median_s": service_s, "p99_s": service_s},
                "autoscale": autoscale,
                "models": {"flux-dev": {"endpoint": "flux-dev", "price": {"per_gpu_second": "0.001"}}},
            }
        },
    }


def facts(router: AsyncRouter) -> CapacityFacts:
    backend = router.backends["gpu"]
    assert isinstance(backend, ReportsCapacity)
    result = backend.capacity(router.deployments("flux-dev")[0])
    assert result is not None
    return result


async def test_min_containers_are_warm_from_the_start() -> None:
    """min_containers serve at once: a first request runs without queueing."""
    clock = FakeClock()
    router = AsyncRouter.from_config(
        gpu_config(min_containers=2, max_containers=4, cold_start_s=20), clock=clock
    )
    handle = await router.submit("a fox", model="flux-dev")
    assert (await router.status(handle)).state is JobState.RUNNING
    assert facts(router) == CapacityFacts(
        backlog=0,
        running=1,
        containers_warm=2,
        containers_starting=0,
        concurrency_per_container=1,
        max_containers=4,
        cold_start_s=20.0,
    )


async def test_requests_beyond_capacity_queue() -> None:
    """With every slot busy and no room to scale, further requests wait in the backlog."""
    clock = FakeClock()
    router = AsyncRouter.from_config(gpu_config(min_containers=1, max_containers=1), clock=clock)
    handles = [await router.submit("a fox", model="flux-dev") for _ in range(3)]
    states = [(await router.status(h)).state for h in handles]
    assert states == [JobState.RUNNING, JobState.QUEUED, JobState.QUEUED]
    assert (facts(router).backlog, facts(router).running) == (2, 1)


async def test_a_new_container_joins_after_the_cold_start_when_the_queue_grows() -> None:
    """A queued request starts a container, which serves it cold_start_s later."""
    clock = FakeClock()
    router = AsyncRouter.from_config(
        gpu_config(service_s=30, min_containers=1, max_containers=2, cold_start_s=20), clock=clock
    )
    await router.submit("a fox", model="flux-dev")
    queued = await router.submit("a fox", model="flux-dev")
    assert (facts(router).containers_warm, facts(router).containers_starting) == (1, 1)
    clock.advance(19.9)
    assert (await router.status(queued)).state is JobState.QUEUED
    clock.advance(0.2)
    assert (await router.status(queued)).state is JobState.RUNNING
    assert (facts(router).containers_warm, facts(router).containers_starting) == (2, 0)


async def test_a_queued_request_takes_whichever_slot_frees_first() -> None:
    """A warm container finishing in 2 s beats a new one warming in 20 s."""
    clock = FakeClock()
    router = AsyncRouter.from_config(
        gpu_config(min_containers=1, max_containers=2, cold_start_s=20), clock=clock
    )
    await router.submit("a fox", model="flux-dev")
    queued = await router.submit("a fox", model="flux-dev")
    clock.advance(2.1)
    assert (await router.status(queued)).state is JobState.RUNNING


async def test_idle_containers_leave_after_scaledown() -> None:
    """A container idle for scaledown_s leaves, down to min_containers."""
    clock = FakeClock()
    router = AsyncRouter.from_config(
        gpu_config(service_s=30, min_containers=1, max_containers=3, cold_start_s=5, scaledown_s=60),
        clock=clock,
    )
    for _ in range(3):
        await router.submit("a fox", model="flux-dev")
    assert facts(router).containers_warm + facts(router).containers_starting == 3
    clock.advance(89)  # idle since 30 s (the first) and 35 s (the two that served from 5 s)
    assert facts(router).containers_warm == 3
    clock.advance(7)
    assert (facts(router).containers_warm, facts(router).containers_starting) == (1, 0)


async def test_scaling_never_exceeds_max_containers() -> None:
    """However long the queue, at most max_containers run or start."""
    clock = FakeClock()
    router = AsyncRouter.from_config(
        gpu_config(min_containers=0, max_containers=3, cold_start_s=5), clock=clock
    )
    for _ in range(20):
        await router.submit("a fox", model="flux-dev")
    current = facts(router)
    assert current.containers_warm + current.containers_starting == 3
    assert current.backlog == 20


async def test_cancelling_a_queued_request_frees_its_place() -> None:
    """A cancelled queued job leaves the backlog, and the next request takes its slot."""
    clock = FakeClock()
    router = AsyncRouter.from_config(gpu_config(min_containers=1, max_containers=1), clock=clock)
    await router.submit("a fox", model="flux-dev")
    queued = await router.submit("a fox", model="flux-dev")
    await router.cancel(queued)
    assert facts(router).backlog == 0
    clock.advance(2.1)
    later = await router.submit("a fox", model="flux-dev")
    assert (await router.status(later)).state is JobState.RUNNING


@pytest.mark.parametrize(
    ("autoscale", "field"),
    [
        ({"min_containers": 4, "max_containers": 2}, "max_containers"),
        ({"max_containers": 2, "cold_start_s": -1}, "cold_start_s"),
        ({"max_containers": 2, "cold_start": 5}, "cold_start"),
    ],
)
def test_bad_autoscale_settings_are_config_errors_naming_the_field(
    autoscale: dict[str, Any], field: str
) -> None:
    """Bad autoscale values raise ConfigError naming the key."""
    with pytest.raises(ConfigError, match=field):
        AsyncRouter.from_config(gpu_config(**autoscale))


def test_autoscale_and_max_concurrency_together_are_a_config_error() -> None:
    """One capacity model per provider: autoscale replaces max_concurrency."""
    config = gpu_config(max_containers=2)
    config["providers"]["gpu"]["max_concurrency"] = 4
    with pytest.raises(ConfigError, match="autoscale"):
        AsyncRouter.from_config(config)


def test_scaledown_defaults_to_modals_60_second_window() -> None:
    """Without scaledown_s, an idle container stays 60 s."""
    router = AsyncRouter.from_config(gpu_config(max_containers=2))
    assert router.backends["gpu"].settings.autoscale.scaledown_s == 60.0  # type: ignore[attr-defined]


def test_autoscale_takes_duration_strings() -> None:
    """cold_start_s and scaledown_s accept durations like '20s' and '2m'."""
    router = AsyncRouter.from_config(gpu_config(max_containers=2, cold_start_s="20s", scaledown_s="2m"))
    spec = router.backends["gpu"].settings.autoscale  # type: ignore[attr-defined]
    assert (spec.cold_start_s, spec.scaledown_s) == (20.0, 120.0)


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=60),
    services=st.lists(st.floats(0.1, 10), min_size=60, max_size=60),
    low=st.integers(0, 3),
    extra=st.integers(0, 4),
    per=st.integers(1, 3),
    cold=st.floats(0, 30),
)
def test_autoscale_model_invariants(
    gaps: list[float], services: list[float], low: int, extra: int, per: int, cold: float
) -> None:
    """Jobs never start before they arrive, containers stay within bounds, and no slot
    ever runs two jobs at once."""
    spec = Autoscale(
        min_containers=low,
        max_containers=max(1, low + extra),
        concurrency_per_container=per,
        cold_start_s=cold,
    )
    model = AutoscaleModel(spec, 0.0)
    now = 0.0
    runs: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for i, gap in enumerate(gaps):
        now += gap
        placement = model.place(now)
        assert placement.start_at >= now
        end = placement.start_at + services[i]
        model.commit(f"job{i}", placement, end)
        runs.setdefault((placement.container, placement.slot), []).append((placement.start_at, end))
        current = model.facts(now)
        assert current.containers_warm + current.containers_starting <= spec.max_containers
        assert current.containers_warm + current.containers_starting >= spec.min_containers
    for intervals in runs.values():
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end
