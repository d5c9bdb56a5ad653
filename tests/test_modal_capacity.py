"""The Modal backend reports the live deployment's backlog and runners (``get_current_stats``)
as capacity facts, so spillover routing works on the real self-hosted route too."""

from __future__ import annotations

import asyncio
from typing import Any

from genrouter import AsyncRouter
from genrouter.backends.modal import ModalBackend


class StatsTransport:
    """A Modal transport double whose ``current_stats`` answers what the test sets."""

    def __init__(self, stats: dict[str, int] | Exception) -> None:
        self.stats = stats
        self.queries: list[str] = []

    async def spawn(self, model_id: str, payload: dict[str, Any]) -> str:
        raise AssertionError("explain() never submits")

    async def get(self, call_id: str, timeout_s: float) -> dict[str, Any] | None:
        return None

    async def cancel(self, call_id: str) -> None:
        return None

    async def warm_containers(self, model_id: str) -> int | None:
        return None

    async def current_stats(self, model_id: str) -> dict[str, int]:
        self.queries.append(model_id)
        if isinstance(self.stats, Exception):
            raise self.stats
        return self.stats

    async def aclose(self) -> None:
        return None


def router_with(transport: StatsTransport) -> AsyncRouter:
    """Modal (the shipped flux-dev entry, per GPU-second) beside a hosted simulated API."""
    config = {
        "version": 1,
        "providers": {
            "modal": {"type": "modal"},
            "hosted": {
                "type": "simulated",
                "latency": {"median_s": 3, "p99_s": 4},
                "price": {"per_image": "0.025"},
            },
        },
        "routing": {"default": {"strategy": "cost", "latency_slo_s": 30}},
    }
    backend = ModalBackend(name="modal", settings={"cold_start_s": 40}, transport=transport)
    return AsyncRouter.from_config(config, backends={"modal": backend})


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_explain_shows_the_live_backlog_and_runners_once_fetched() -> None:
    """The first plan starts a stats query; the next shows a prediction from its answer."""
    transport = StatsTransport({"backlog": 2, "num_total_runners": 1, "num_running_inputs": 1})
    async with router_with(transport) as router:
        assert router.explain("a fox", model="flux-dev").notes == []
        await settle()
        plan = router.explain("a fox", model="flux-dev")
    assert transport.queries == ["flux-dev"]
    assert plan.candidates[0].provider == "modal"
    (note,) = plan.notes
    assert "backlog 2, running 1, containers 1 warm + 0 starting" in note
    assert "cold start 40s" in note


async def test_a_long_live_backlog_spills_to_the_hosted_api() -> None:
    """A backlog the runners cannot clear within the SLO ranks the hosted API first."""
    transport = StatsTransport({"backlog": 30, "num_total_runners": 2})
    async with router_with(transport) as router:
        router.explain("a fox", model="flux-dev")
        await settle()
        plan = router.explain("a fox", model="flux-dev")
    assert [c.provider for c in plan.candidates] == ["hosted", "modal"]
    assert "spills to the next" in plan.notes[0]


async def test_a_failed_stats_query_leaves_routing_as_it_was() -> None:
    """Stats are advice: when the query fails, no prediction is made and the cheapest leads."""
    transport = StatsTransport(RuntimeError("stats unavailable"))
    async with router_with(transport) as router:
        router.explain("a fox", model="flux-dev")
        await settle()
        plan = router.explain("a fox", model="flux-dev")
    assert plan.notes == []
    assert plan.candidates[0].provider == "modal"
