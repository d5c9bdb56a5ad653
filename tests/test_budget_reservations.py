"""Budget reservations: each submission holds its estimate until it settles (issue 14)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fakes.fal import DEFAULT_KEY, Behaviour, FakeFal, start_server
from fakes.server import LoopbackServer
from genrouter import (
    AllProvidersFailedError,
    AsyncRouter,
    BudgetExceededError,
    Cost,
    GenerationRequest,
    GenerationResult,
    JobFailedError,
)
from genrouter.batch import run_batch
from genrouter.config import load_config
from genrouter.routing.redis_store import RedisStateStore
from genrouter.testing import FakeClock, FunctionBackend
from genrouter.types import Artifact
from routing_helpers import provider

REDIS_URL = "redis://127.0.0.1:6379/0"
PRICE = "0.025"


def config(*, limit: str = "1.00", store: str = "memory", namespace: str = "genrouter") -> dict[str, Any]:
    """One custom provider at $0.025 an image and one total budget: what a user writes."""
    return {
        "version": 1,
        "providers": {"gpu": provider("gpu", price=PRICE)},
        "routing": {"default": {"retry": {"max_attempts": 1}}},
        "budgets": [{"limit_usd": limit, "period": "total"}],
        "state": {"store": store, "namespace": namespace},
    }


class Gate:
    """Jobs that wait until the test opens the gate, so all of them are in flight at once."""

    def __init__(self, *, cost: Decimal | None = None, fail: bool = False) -> None:
        self.opened = asyncio.Event()
        self.started = 0
        self.cost = cost
        self.fail = fail

    async def __call__(self, request: GenerationRequest) -> GenerationResult | Sequence[Artifact]:
        self.started += 1
        await self.opened.wait()
        if self.fail:
            raise JobFailedError("the GPU fell over", retryable=False)
        artifact = Artifact(url="data:image/png;base64,iVBORw0KGgo=", content_type="image/png")
        if self.cost is None:
            return [artifact]
        return GenerationResult(
            id="",
            model=request.model,
            provider="gpu",
            endpoint="gpu/flux-dev",
            outputs=[artifact],
            cost=Cost(amount_usd=self.cost, estimated=False, basis="billed by the provider"),
        )


async def settle_in_flight(tasks: Sequence[asyncio.Future[Any]], gate: Gate) -> None:
    """Let every request reach its submission (or its refusal) before any job finishes."""
    for _ in range(5000):
        if gate.started + sum(t.done() for t in tasks) >= len(tasks):
            return
        await asyncio.sleep(0.001)
    raise AssertionError("requests did not all reach submission")


async def run_concurrently(routers: Sequence[AsyncRouter], gate: Gate, n: int) -> list[Any]:
    tasks = [
        asyncio.ensure_future(routers[i % len(routers)].generate("a fox", model="flux-dev")) for i in range(n)
    ]
    await settle_in_flight(tasks, gate)
    gate.opened.set()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def spent(outcomes: Sequence[Any]) -> Decimal:
    return sum((o.cost.amount_usd for o in outcomes if isinstance(o, GenerationResult)), Decimal(0))


async def test_concurrent_requests_never_overspend_a_budget() -> None:
    """100 requests at once against $1.00 at $0.025 each: at most $1.025 spent, the rest refused."""
    gate = Gate()
    async with AsyncRouter.from_config(
        config(), backends={"gpu": FunctionBackend(gate, name="gpu")}
    ) as router:
        outcomes = await run_concurrently([router], gate, 100)
    assert spent(outcomes) <= Decimal("1.025")
    assert spent(outcomes) == Decimal("1.000")
    refused = [o for o in outcomes if not isinstance(o, GenerationResult)]
    assert len(refused) == 60
    assert all(isinstance(o, BudgetExceededError) for o in refused)


async def test_the_budget_records_the_actual_cost_not_the_estimate() -> None:
    """A provider that reports what it billed ($0.01) settles the $0.025 hold at $0.01."""
    gate = Gate(cost=Decimal("0.01"))
    gate.opened.set()
    async with AsyncRouter.from_config(
        config(limit="0.05"), backends={"gpu": FunctionBackend(gate, name="gpu")}
    ) as router:
        result = await router.generate("a fox", model="flux-dev")
        assert result.cost.estimated is False
        assert router.state.spend("*", "total") == Decimal("0.01")
        plan = router.explain("a fox", model="flux-dev")
    assert plan.viable  # $0.01 + est. $0.025 fits in $0.05


async def test_a_failed_request_releases_its_reservation() -> None:
    """A job that fails spends nothing, and its hold is free for the next request."""
    gate = Gate(fail=True)
    gate.opened.set()
    backend = FunctionBackend(gate, name="gpu")
    async with AsyncRouter.from_config(config(limit=PRICE), backends={"gpu": backend}) as router:
        with pytest.raises(AllProvidersFailedError):
            await router.generate("a fox", model="flux-dev")
        assert router.state.spend("*", "total") == 0
        gate.fail = False
        result = await router.generate("a fox", model="flux-dev")
    assert result.cost.amount_usd == Decimal(PRICE)


async def test_a_submitted_job_holds_its_reservation_until_collected() -> None:
    """submit() holds the estimate; a second submit is refused until result() settles the first."""
    gate = Gate()
    async with AsyncRouter.from_config(
        config(limit=PRICE), backends={"gpu": FunctionBackend(gate, name="gpu")}
    ) as router:
        handle = await router.submit("a fox", model="flux-dev")
        with pytest.raises(BudgetExceededError, match="reserved"):
            await router.submit("a fox", model="flux-dev")
        gate.opened.set()
        await router.result(handle)
        assert router.state.spend("*", "total") == Decimal(PRICE)


async def test_cancelling_a_submitted_job_releases_its_reservation() -> None:
    """cancel() drops the hold: the budget is free again and nothing was spent."""
    gate = Gate()
    async with AsyncRouter.from_config(
        config(limit=PRICE), backends={"gpu": FunctionBackend(gate, name="gpu")}
    ) as router:
        handle = await router.submit("a fox", model="flux-dev")
        await router.cancel(handle)
        again = await router.submit("a fox", model="flux-dev")
        await router.cancel(again)
        assert router.state.spend("*", "total") == 0


async def test_a_submitted_job_nobody_collects_gives_its_hold_back_after_its_deadline() -> None:
    """A job submitted and never collected holds budget only until its deadline has passed."""
    gate = Gate()
    clock = FakeClock()
    async with AsyncRouter.from_config(
        config(limit=PRICE), backends={"gpu": FunctionBackend(gate, name="gpu")}, clock=clock
    ) as router:
        await router.submit("a fox", model="flux-dev", deadline_s=30)
        with pytest.raises(BudgetExceededError):
            await router.submit("a fox", model="flux-dev")
        await clock.sleep(31)
        later = await router.submit("a fox", model="flux-dev")
        await router.cancel(later)


async def test_a_submitted_job_that_fails_releases_its_hold() -> None:
    """result() of a failed job raises, and its hold is dropped without spending."""
    gate = Gate(fail=True)
    async with AsyncRouter.from_config(
        config(limit=PRICE), backends={"gpu": FunctionBackend(gate, name="gpu")}
    ) as router:
        handle = await router.submit("a fox", model="flux-dev")
        gate.opened.set()
        with pytest.raises(JobFailedError):
            await router.result(handle)
        assert router.state.spend("*", "total") == 0
        again = await router.submit("a fox", model="flux-dev")
        await router.cancel(again)


async def test_a_provider_whose_budget_is_held_sends_the_next_request_elsewhere() -> None:
    """With a provider's budget held by a job in flight, the next request goes to the next provider."""
    gate = Gate()
    cfg: dict[str, Any] = {
        "version": 1,
        "providers": {name: provider(name, price=PRICE) for name in ("a", "b")},
        "routing": {"default": {"strategy": "priority", "order": ["a", "b"]}},
        "budgets": [{"provider": "a", "limit_usd": PRICE, "period": "day"}],
    }
    backends = {name: FunctionBackend(gate, name=name) for name in ("a", "b")}
    async with AsyncRouter.from_config(cfg, backends=backends) as router:
        first = asyncio.ensure_future(router.generate("a fox", model="flux-dev"))
        await settle_in_flight([first], gate)
        second = asyncio.ensure_future(router.generate("a fox", model="flux-dev"))
        await started(gate, 2)
        gate.opened.set()
        assert [(await first).provider, (await second).provider] == ["a", "b"]


async def test_a_deployment_without_a_price_is_admitted_while_spend_is_below_the_limit() -> None:
    """An unknown estimate reserves nothing: such requests run while spend + holds < limit."""
    gate = Gate()
    cfg = config(limit="0.01")
    del cfg["providers"]["gpu"]["models"]["flux-dev"]["price"]
    async with AsyncRouter.from_config(cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}) as router:
        outcomes = await run_concurrently([router], gate, 3)
    assert all(isinstance(o, GenerationResult) for o in outcomes)


async def test_a_lost_hedge_releases_its_reservation() -> None:
    """The hedge that loses is cancelled and spends nothing: only the winner's cost is spent."""
    slow, fast = Gate(), Gate()
    fast.opened.set()
    cfg: dict[str, Any] = {
        "version": 1,
        "providers": {name: provider(name, price=PRICE) for name in ("slow", "fast")},
        "routing": {
            "default": {
                "strategy": "priority",
                "order": ["slow", "fast"],
                "hedge": {"enabled": True, "delay": 0.01, "max_extra_fraction": 1.0},
            }
        },
        "budgets": [{"limit_usd": "0.05", "period": "total"}],
    }
    backends = {"slow": FunctionBackend(slow, name="slow"), "fast": FunctionBackend(fast, name="fast")}
    async with AsyncRouter.from_config(cfg, backends=backends) as router:
        result = await router.generate("a fox", model="flux-dev")
        assert result.provider == "fast"
        assert router.state.spend("*", "total") == Decimal(PRICE)
        plan = router.explain("a fox", model="flux-dev")
    assert plan.viable  # $0.025 spent + est. $0.025 fits $0.05: the loser holds nothing


async def test_a_request_over_the_budget_is_refused_before_it_is_submitted() -> None:
    """With the budget fully held, a request fails with BudgetExceededError and submits nothing."""
    gate = Gate()
    async with AsyncRouter.from_config(
        config(limit=PRICE), backends={"gpu": FunctionBackend(gate, name="gpu")}
    ) as router:
        first = asyncio.ensure_future(router.generate("a fox", model="flux-dev"))
        await settle_in_flight([first], gate)
        with pytest.raises(BudgetExceededError):
            await router.generate("a fox", model="flux-dev")
        assert gate.started == 1
        gate.opened.set()
        await first


# -- shared through Redis ------------------------------------------------------------------


def _redis_up() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A fresh Redis key namespace, deleted afterwards (skips without a server, unless CI requires one)."""
    if not _redis_up():
        if os.environ.get("GENROUTER_REQUIRE_REDIS"):
            pytest.fail("Redis is not reachable on 127.0.0.1:6379")
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    ns = f"genrouter-test-{uuid.uuid4().hex[:12]}"
    yield ns
    import redis.asyncio as redis_asyncio

    client: Any = redis_asyncio.from_url(REDIS_URL, decode_responses=True)
    keys = [k async for k in client.scan_iter(f"{ns}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_with_redis_unreachable_reservations_fall_back_to_this_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down never fails a request: holds are checked against this process's own view."""
    gate = Gate()
    cfg = config(limit=PRICE, store="redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="genrouter.state"):
        async with AsyncRouter.from_config(
            cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}
        ) as router:
            outcomes = await run_concurrently([router], gate, 3)
    assert sum(isinstance(o, GenerationResult) for o in outcomes) == 1
    assert all(isinstance(o, BudgetExceededError) for o in outcomes if not isinstance(o, GenerationResult))
    assert any("reservation failed" in r.getMessage() for r in caplog.records)


async def test_concurrent_requests_across_routers_never_overspend_a_shared_budget(namespace: str) -> None:
    """100 requests over 4 routers sharing Redis, $1.00 at $0.025: at most $1.025 spent in all."""
    gate = Gate()
    cfg = config(store=REDIS_URL, namespace=namespace)
    routers = [
        AsyncRouter.from_config(cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}) for _ in range(4)
    ]
    try:
        outcomes = await run_concurrently(routers, gate, 100)
    finally:
        for router in routers:
            await router.aclose()
    assert spent(outcomes) <= Decimal("1.025")
    assert sum(isinstance(o, GenerationResult) for o in outcomes) == 40
    assert all(isinstance(o, BudgetExceededError) for o in outcomes if not isinstance(o, GenerationResult))
    async with AsyncRouter.from_config(cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}) as later:
        with pytest.raises(BudgetExceededError, match="budget"):
            await later.generate("a fox", model="flux-dev")


async def test_a_burst_of_submissions_waits_for_redis_connections_instead_of_failing(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """300 submissions at once (more than redis-py's pool of 100) all reserve in Redis."""
    gate = Gate()
    cfg = config(limit="100", store=REDIS_URL, namespace=namespace)
    with caplog.at_level(logging.WARNING, logger="genrouter.state"):
        async with AsyncRouter.from_config(
            cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}
        ) as router:
            outcomes = await run_concurrently([router], gate, 300)
    assert all(isinstance(o, GenerationResult) for o in outcomes)
    assert not [r for r in caplog.records if "redis" in r.getMessage()]


async def test_a_live_routers_reservation_is_seen_by_another(namespace: str) -> None:
    """A job held by one router blocks another router's submit while it runs; settling frees it."""
    gate = Gate()
    cfg = config(limit=PRICE, store=REDIS_URL, namespace=namespace)
    async with (
        AsyncRouter.from_config(cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}) as one,
        AsyncRouter.from_config(cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}) as two,
    ):
        handle = await one.submit("a fox", model="flux-dev")
        with pytest.raises(BudgetExceededError, match="reserved"):
            await two.submit("a fox", model="flux-dev")
        await one.cancel(handle)
        await one.state.flush()  # type: ignore[attr-defined]
        again = await two.submit("a fox", model="flux-dev")
        await two.cancel(again)


async def test_a_dead_processes_reservation_expires(namespace: str) -> None:
    """Holds of a router that stopped renewing them (its process died) expire after their TTL."""
    gate = Gate()
    cfg = load_config(config(limit=PRICE, store=REDIS_URL, namespace=namespace))
    doomed_store = RedisStateStore(REDIS_URL, namespace=namespace, reservation_ttl_s=0.3)
    doomed = AsyncRouter(cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}, state=doomed_store)
    try:
        await doomed.submit("a fox", model="flux-dev")
        await doomed_store.reservation_ledger().aclose()  # the process dies: nothing renews its hold
        async with AsyncRouter.from_config(cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}) as other:
            with pytest.raises(BudgetExceededError):
                await other.submit("a fox", model="flux-dev")
            await asyncio.sleep(0.6)
            handle = await other.submit("a fox", model="flux-dev")
            await other.cancel(handle)
    finally:
        await doomed.aclose()


async def test_a_live_processes_reservation_is_renewed_past_its_ttl(namespace: str) -> None:
    """A router that is alive renews its holds, so a long job keeps its share of the budget."""
    gate = Gate()
    cfg = load_config(config(limit=PRICE, store=REDIS_URL, namespace=namespace))
    store = RedisStateStore(REDIS_URL, namespace=namespace, reservation_ttl_s=1.0)
    async with (
        AsyncRouter(cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}, state=store) as one,
        AsyncRouter.from_config(cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}) as two,
    ):
        handle = await one.submit("a fox", model="flux-dev")
        await asyncio.sleep(2.5)
        with pytest.raises(BudgetExceededError, match="reserved"):
            await two.submit("a fox", model="flux-dev")
        await one.cancel(handle)


# -- batch ---------------------------------------------------------------------------------


async def started(gate: Gate, n: int) -> None:
    """Wait until ``n`` jobs are running, then a while longer (time for any that should not)."""
    for _ in range(5000):
        if gate.started >= n:
            break
        await asyncio.sleep(0.001)
    for _ in range(50):
        await asyncio.sleep(0.001)


def items(n: int) -> list[dict[str, str]]:
    return [{"id": f"fox-{i}", "prompt": "a fox"} for i in range(n)]


async def test_a_batch_budget_holds_with_many_items_in_flight(tmp_path: Path) -> None:
    """--budget-usd 0.10 at $0.025 an item with 10 in flight: 4 items submitted, $0.10 spent."""
    gate = Gate()
    cfg = config(limit="100")
    async with AsyncRouter.from_config(cfg, backends={"gpu": FunctionBackend(gate, name="gpu")}) as router:
        batch = asyncio.ensure_future(
            run_batch(router, items(20), tmp_path, model="flux-dev", concurrency=10, budget_usd="0.10")
        )
        await started(gate, 4)
        gate.opened.set()
        report = await batch
    assert gate.started == 4
    assert report.spend_usd == Decimal("0.100")
    assert report.counts["succeeded"] == 4
    assert report.stopped == "budget"


async def test_a_batch_under_a_config_budget_spends_within_it_and_counts_once(tmp_path: Path) -> None:
    """A top-level $0.05 budget over a batch of 4 at $0.025: 2 succeed, 2 are refused, spend $0.05."""
    gate = Gate()
    async with AsyncRouter.from_config(
        config(limit="0.05"), backends={"gpu": FunctionBackend(gate, name="gpu")}
    ) as router:
        batch = asyncio.ensure_future(run_batch(router, items(4), tmp_path, model="flux-dev", concurrency=4))
        await started(gate, 2)
        gate.opened.set()
        report = await batch
        assert gate.started == 2
        assert router.state.spend("*", "total") == Decimal("0.050")
    assert report.counts["succeeded"] == 2
    failed = [item for item in report.items if item.status == "failed"]
    assert len(failed) == 2
    assert all("budget" in (item.error or "") for item in failed)


# -- fal's billed units ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fal_server() -> Iterator[LoopbackServer]:
    server = start_server()
    yield server
    server.stop()


async def test_fal_billable_units_settle_the_reservation(fal_server: LoopbackServer) -> None:
    """fal bills 3 units ($0.075) for a job estimated at $0.025: the budget records $0.075."""
    fal_server.handler = FakeFal(
        api_key=DEFAULT_KEY, behaviour=Behaviour(queue_polls=0, progress_polls=0, billable_units="3")
    )
    cfg = {
        "version": 1,
        "providers": {"fal": {"api_key": DEFAULT_KEY, "base_url": fal_server.url}},
        "budgets": [{"limit_usd": "1", "period": "total"}],
    }
    async with AsyncRouter.from_config(cfg, clock=FakeClock()) as router:
        result = await router.generate("a fox", model="flux-dev", width=1024, height=1024)
        assert result.estimated_cost_usd == Decimal("0.025")
        assert router.state.spend("*", "total") == Decimal("0.075")
