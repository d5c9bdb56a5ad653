"""Spillover routing: with strategy cost and latency_slo_s, the cheapest deployment keeps the
requests its predicted completion time fits within the SLO; the rest go to the next one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from genrouter import AsyncRouter
from genrouter.routing.capacity import CapacityFacts
from genrouter.routing.health import DeploymentHealth
from genrouter.routing.spillover import predict_completion
from genrouter.testing import FakeClock

ROOT = Path(__file__).resolve().parents[1]


def spill_config(slo_s: float = 5.0, *, spillover: bool = True, **autoscale: Any) -> dict[str, Any]:
    """A cheap self-hosted GPU (2 s jobs) that autoscales, and a dearer always-warm hosted API."""
    return {
        "version": 1,
        "providers": {
            "gpu": {
                "type": "simulated",
                "latency": {"median_s": 2, "p99_s": 2},
                "autoscale": {"min_containers": 1, "max_containers": 1, "cold_start_s": 20, **autoscale},
                "models": {
                    "flux-dev": {
                        "endpoint": "flux-dev",
                        "gpu_seconds_per_output": 2,
                        "price": {"per_gpu_second": "0.001"},
                    }
                },
            },
            "hosted": {
                "type": "simulated",
                "latency": {"median_s": 3, "p99_s": 3},
                "models": {"flux-dev": {"endpoint": "flux-dev", "price": {"per_image": "0.025"}}},
            },
        },
        "routing": {
            "default": {"strategy": "cost", "latency_slo_s": slo_s, "spillover": {"enabled": spillover}}
        },
    }


async def providers_of(router: AsyncRouter, n: int) -> list[str]:
    return [(await router.submit("a fox", model="flux-dev")).provider for _ in range(n)]


def test_explain_shows_the_prediction_of_a_capacity_reporting_deployment() -> None:
    """explain() notes the predicted completion with the backlog and containers behind it."""
    router = AsyncRouter.from_config(spill_config(), clock=FakeClock())
    plan = router.explain("a fox", model="flux-dev")
    assert plan.candidates[0].provider == "gpu"
    assert plan.candidates[0].estimated_p95_s == 2.0
    (note,) = plan.notes
    assert note.startswith("gpu: predicted completion 2.0s")
    assert "backlog 0, running 0, containers 1 warm + 0 starting" in note
    assert "fits the SLO 5s" in note


async def test_the_cheapest_keeps_requests_while_the_prediction_fits_then_the_rest_spill() -> None:
    """Two requests fit on one 2 s container within a 5 s SLO; the third goes to hosted."""
    router = AsyncRouter.from_config(spill_config(), clock=FakeClock())
    assert await providers_of(router, 3) == ["gpu", "gpu", "hosted"]
    plan = router.explain("a fox", model="flux-dev")
    assert [c.provider for c in plan.candidates] == ["hosted", "gpu"]
    assert plan.candidates[1].estimated_p95_s == 6.0
    assert "over the SLO 5s: spills to the next" in plan.notes[0]


async def test_traffic_returns_to_the_cheapest_once_its_queue_drains() -> None:
    """When the queued work has finished, the self-hosted deployment leads again."""
    clock = FakeClock()
    router = AsyncRouter.from_config(spill_config(), clock=clock)
    await providers_of(router, 3)
    clock.advance(4.1)
    assert await providers_of(router, 1) == ["gpu"]


async def test_containers_that_will_join_count_in_the_prediction() -> None:
    """With room to scale and a cold start inside the SLO, a queue fits: new containers will take it."""
    router = AsyncRouter.from_config(
        spill_config(slo_s=10, max_containers=8, cold_start_s=5), clock=FakeClock()
    )
    assert await providers_of(router, 8) == ["gpu"] * 8


async def test_spillover_disabled_ranks_by_the_observed_p95() -> None:
    """spillover: {enabled: false} keeps the plain cost ranking: no prediction, no spill."""
    router = AsyncRouter.from_config(spill_config(spillover=False), clock=FakeClock())
    assert await providers_of(router, 3) == ["gpu", "gpu", "gpu"]
    assert router.explain("a fox", model="flux-dev").notes == []


async def test_without_an_slo_nothing_is_predicted() -> None:
    """Spillover needs latency_slo_s: without it the cheapest takes everything."""
    config = spill_config()
    del config["routing"]["default"]["latency_slo_s"]
    router = AsyncRouter.from_config(config, clock=FakeClock())
    assert await providers_of(router, 3) == ["gpu", "gpu", "gpu"]
    assert router.explain("a fox", model="flux-dev").notes == []


# -- the prediction math ------------------------------------------------------------------------

facts_strategy = st.builds(
    CapacityFacts,
    backlog=st.integers(0, 500),
    running=st.integers(0, 100),
    containers_warm=st.integers(0, 20),
    containers_starting=st.integers(0, 20),
    concurrency_per_container=st.integers(1, 8),
    max_containers=st.one_of(st.none(), st.integers(1, 40)),
    cold_start_s=st.one_of(st.none(), st.floats(0, 120)),
)
service = st.floats(0.1, 30)


@given(facts_strategy, service, st.floats(1, 3))
def test_a_prediction_is_never_faster_than_one_job(facts: CapacityFacts, mean: float, tail: float) -> None:
    """The predicted completion is at least the service p95."""
    assert predict_completion(facts, mean, mean * tail).completion_s >= mean * tail


@given(facts_strategy, service)
def test_a_free_slot_means_no_wait(facts: CapacityFacts, mean: float) -> None:
    """With fewer jobs than warm slots, the prediction is exactly the service p95."""
    slots = facts.containers_warm * facts.concurrency_per_container
    if facts.running + facts.backlog < slots:
        assert predict_completion(facts, mean, mean).wait_s == 0.0


@given(facts_strategy, service, st.integers(1, 50))
def test_a_longer_backlog_never_predicts_sooner(facts: CapacityFacts, mean: float, more: int) -> None:
    """More queued jobs ahead never shorten the predicted wait."""
    longer = CapacityFacts(**{**_fields(facts), "backlog": facts.backlog + more})
    assert predict_completion(longer, mean, mean).wait_s >= predict_completion(facts, mean, mean).wait_s


@given(facts_strategy, service, st.integers(1, 10))
def test_more_warm_containers_never_predict_later(facts: CapacityFacts, mean: float, more: int) -> None:
    """Warm capacity only helps."""
    warmer = CapacityFacts(**{**_fields(facts), "containers_warm": facts.containers_warm + more})
    assert predict_completion(warmer, mean, mean).wait_s <= predict_completion(facts, mean, mean).wait_s


@given(facts_strategy, service)
def test_room_to_scale_bounds_the_wait_by_the_cold_start(facts: CapacityFacts, mean: float) -> None:
    """When the ceiling allows a container per queued job, nothing waits past the cold start."""
    if facts.cold_start_s is None:
        return
    ahead = facts.running + facts.backlog + 1
    roomy = CapacityFacts(**{**_fields(facts), "max_containers": ahead + facts.containers_warm})
    assert predict_completion(roomy, mean, mean).wait_s <= facts.cold_start_s + 1e-9


@given(st.integers(0, 50), service)
def test_no_warm_slot_and_unknown_cold_start_never_fits(backlog: int, mean: float) -> None:
    """Nothing warm and no known cold start: the wait is infinite."""
    facts = CapacityFacts(backlog=backlog, running=0, containers_warm=0, cold_start_s=None)
    assert math.isinf(predict_completion(facts, mean, mean).wait_s)


def _fields(facts: CapacityFacts) -> dict[str, Any]:
    return {name: getattr(facts, name) for name in CapacityFacts.__slots__}


# -- found by bench/spillover.py ------------------------------------------------------------------


def test_a_change_detected_after_old_samples_expired_keeps_an_estimate() -> None:
    """When a slowdown is detected while expiry has left fewer than 16 samples, the
    deployment still gets a p95 estimate (the newest samples' p95), not an error."""
    health = DeploymentHealth()
    for _ in range(20):
        health.record_success(1.0, 0.0)
    for i in range(10):
        health.record_success(50.0 + i, 119.0)
    health.record_success(70.0, 125.0)  # the 20 fast samples expire here
    health.record_success(71.0, 126.0)
    assert health.estimated_p95 == 70.0


async def test_the_readmes_worked_example() -> None:
    """examples/spillover.yaml, one warm container, 1.2 s jobs, SLO 4 s: predictions 1.2, 2.4,
    3.6 s stay self-hosted; the fourth request (4.8 s predicted) goes to hosted."""
    router = AsyncRouter.from_config(ROOT / "examples" / "spillover.yaml", clock=FakeClock())
    predicted = []
    for _ in range(4):
        plan = router.explain("a fox", model="flux-dev")
        predicted.append(next(c.estimated_p95_s for c in plan.candidates if c.provider == "self-hosted"))
        await router.submit("a fox", model="flux-dev")
    assert [round(p or 0, 1) for p in predicted] == [1.2, 2.4, 3.6, 4.8]
    assert [c.provider for c in router.explain("a fox", model="flux-dev").candidates] == [
        "hosted",
        "self-hosted",
    ]
