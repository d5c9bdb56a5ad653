"""Hedging: after the delay the next deployment runs beside the first; the first success wins."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from genrouter import AsyncRouter, AttemptOutcome, DeadlineExceededError, GenerationResult
from genrouter.engine._virtual_time import LoopClock, run_virtual
from genrouter.routing.throttle import HedgeBudget
from genrouter.testing import FakeBackend, FakeClock, Hang, Succeed
from routing_helpers import router_over as _router_over


def router_over(*backends: FakeBackend, **routing: Any) -> AsyncRouter:
    """These specs run on a FakeClock (deterministic, milliseconds each), but for the few
    that interleave requests with waits of their own (:func:`on_virtual_time`): a
    FakeClock moves on with each sleep, so concurrent sleepers would run its time several
    times too fast."""
    routing.setdefault("clock", FakeClock())
    return _router_over(*backends, **routing)


def on_virtual_time(spec: Callable[[LoopClock], Awaitable[None]]) -> Callable[[], None]:
    """Run an async spec on a virtual-time event loop, the router on its clock: time jumps
    to the next timer only when every task waits, so concurrent sleepers see one timeline
    (deterministic, milliseconds each, as on a FakeClock)."""

    def run() -> None:
        run_virtual(spec, start=1000.0)

    run.__name__, run.__qualname__, run.__doc__ = spec.__name__, spec.__qualname__, spec.__doc__
    return run


HEDGE = {"enabled": True, "delay": 0.05, "max_extra_fraction": 0.5}
HEDGE_WITH_FEW_TOKENS = {**HEDGE, "delay": 0.2}
"""Two primaries earn one token; a fresh budget holds one."""


async def test_a_slow_primary_is_hedged_and_the_hedge_wins() -> None:
    """A hung primary is hedged after the delay; the hedge's result is returned."""
    a, b = FakeBackend(name="a", script=[Hang()]), FakeBackend(name="b")
    async with router_over(a, b, hedge=HEDGE) as router:
        result = await router.generate("a fox", model="flux-dev")
    assert result.provider == "b"
    assert [(x.provider, x.outcome, x.hedged) for x in result.attempts] == [
        ("a", AttemptOutcome.HEDGE_LOST, False),
        ("b", AttemptOutcome.SUCCEEDED, True),
    ]


async def test_the_hedge_loser_is_cancelled_at_its_provider() -> None:
    """The losing job is cancelled at the provider (by the time the router closes)."""
    a, b = FakeBackend(name="a", script=[Hang()]), FakeBackend(name="b")
    async with router_over(a, b, hedge=HEDGE) as router:
        await router.generate("a fox", model="flux-dev")
    assert a.cancelled == ["a-1"]
    assert b.cancelled == []


async def test_the_primary_can_win_the_race() -> None:
    """When the primary finishes first, the hedge is the one recorded hedge_lost and cancelled."""
    a = FakeBackend(name="a", script=[Succeed(latency_s=0.1)])
    b = FakeBackend(name="b", script=[Hang()])
    async with router_over(a, b, hedge=HEDGE) as router:
        result = await router.generate("a fox", model="flux-dev")
    assert result.provider == "a"
    assert [(x.provider, x.outcome) for x in result.attempts] == [
        ("b", AttemptOutcome.HEDGE_LOST),
        ("a", AttemptOutcome.SUCCEEDED),
    ]
    assert b.cancelled == ["b-1"]


async def test_no_hedge_before_the_delay() -> None:
    """A primary that answers before the delay is never hedged."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    async with router_over(a, b, hedge={**HEDGE, "delay": 5}) as router:
        result = await router.generate("a fox", model="flux-dev")
    assert [x.provider for x in result.attempts] == ["a"]
    assert b.submit_count == 0


async def test_an_exhausted_hedge_budget_means_no_hedge() -> None:
    """With no tokens left, a slow primary is simply waited for."""
    a = FakeBackend(name="a", script=[Hang(), Succeed(latency_s=0.15)])
    b = FakeBackend(name="b")
    async with router_over(a, b, hedge={**HEDGE, "max_extra_fraction": 0.0}) as router:
        first = await router.generate("a fox", model="flux-dev")
        second = await router.generate("a fox", model="flux-dev")
    assert first.provider == "b"  # the one starting token paid for this hedge
    assert second.provider == "a"
    assert [x.provider for x in second.attempts] == ["a"]
    assert b.submit_count == 1


async def _two_late_then_two_quick(router: AsyncRouter, quick_after_s: float) -> list[GenerationResult]:
    """Two requests whose primaries are slow, then (after ``quick_after_s``) two quick ones."""

    async def later() -> GenerationResult:
        await asyncio.sleep(quick_after_s)
        return await router.generate("a fox", model="flux-dev")

    slow = [asyncio.create_task(router.generate("a fox", model="flux-dev")) for _ in range(2)]
    await asyncio.sleep(0)
    return list(await asyncio.gather(*slow, later(), later()))


@on_virtual_time
async def test_a_refused_hedge_takes_a_token_earned_while_it_waits(clock: LoopClock) -> None:
    """Refused at its delay, a request asks again and gets the token later primaries earn."""
    a = FakeBackend(name="a", script=[Hang(), Succeed(latency_s=2.0), Succeed(), Succeed()])
    b = FakeBackend(name="b")
    async with router_over(a, b, hedge=HEDGE_WITH_FEW_TOKENS, clock=clock) as router:
        first, second, _, _ = await _two_late_then_two_quick(router, quick_after_s=0.23)
    assert first.provider == "b"  # the starting token
    assert second.provider == "b"  # the token the two quick requests earned
    assert b.submit_count == 2


@on_virtual_time
async def test_a_refused_hedge_gives_up_half_a_delay_late(clock: LoopClock) -> None:
    """Half a delay past its hedge time a request stops asking; later tokens go to others."""
    a = FakeBackend(name="a", script=[Hang(), Succeed(latency_s=0.6), Succeed(), Succeed()])
    b = FakeBackend(name="b")
    async with router_over(a, b, hedge=HEDGE_WITH_FEW_TOKENS, clock=clock) as router:
        first, second, _, _ = await _two_late_then_two_quick(router, quick_after_s=0.4)
    assert first.provider == "b"
    assert second.provider == "a"
    assert [x.provider for x in second.attempts] == ["a"]
    assert b.submit_count == 1


async def test_hedging_is_disabled_by_default() -> None:
    """Without hedge.enabled, a slow primary runs alone to the deadline."""
    a, b = FakeBackend(name="a", script=[Hang()]), FakeBackend(name="b")
    async with router_over(a, b, timeouts={"attempt_s": 0.2, "deadline_s": 0.2}) as router:
        with pytest.raises(DeadlineExceededError):
            await router.generate("a fox", model="flux-dev")
    assert b.submit_count == 0


async def test_a_failed_hedge_leaves_the_primary_running() -> None:
    """If the hedge fails, the primary still gets to finish and win."""
    from genrouter import ProviderUnavailableError

    a = FakeBackend(name="a", script=[Succeed(latency_s=0.2)])
    b = FakeBackend(name="b", script=[ProviderUnavailableError("503")])
    async with router_over(a, b, hedge=HEDGE, retry={"max_attempts": 1}) as router:
        result = await router.generate("a fox", model="flux-dev")
    assert result.provider == "a"
    assert [(x.provider, x.outcome) for x in result.attempts] == [
        ("b", AttemptOutcome.FAILED),
        ("a", AttemptOutcome.SUCCEEDED),
    ]


async def test_the_deadline_cancels_primary_and_hedge() -> None:
    """When neither lane finishes in time, both jobs are cancelled and the deadline raised."""
    a, b = FakeBackend(name="a", script=[Hang()]), FakeBackend(name="b", script=[Hang()])
    async with router_over(a, b, hedge=HEDGE, timeouts={"attempt_s": 0.3, "deadline_s": 0.3}) as router:
        try:
            await router.generate("a fox", model="flux-dev")
        except DeadlineExceededError as exc:
            outcomes = sorted((x.provider, x.outcome) for x in exc.attempts)
        else:  # pragma: no cover
            raise AssertionError("expected DeadlineExceededError")
    assert outcomes == [("a", AttemptOutcome.CANCELLED), ("b", AttemptOutcome.CANCELLED)]
    assert a.cancelled == ["a-1"]
    assert b.cancelled == ["b-1"]


async def test_p95_delay_uses_the_primarys_estimated_p95() -> None:
    """hedge.delay p95 waits for the primary deployment's observed p95 before hedging."""
    a = FakeBackend(name="a", script=[Succeed(), Succeed(), Succeed(), Hang()])
    b = FakeBackend(name="b")
    async with router_over(a, b, hedge={**HEDGE, "delay": "p95"}, explore={"enabled": False}) as router:
        for _ in range(3):
            await router.generate("a fox", model="flux-dev")
        assert b.submit_count == 0
        result = await router.generate("a fox", model="flux-dev")
    assert result.provider == "b"
    assert result.attempts[-1].hedged


def test_hedge_budget_holds_one_token_when_fresh() -> None:
    """A fresh budget allows one hedge, then one per 1/fraction primaries."""
    budget = HedgeBudget(max_extra_fraction=0.25)
    assert budget.try_spend()
    assert not budget.try_spend()
    for _ in range(4):
        budget.on_primary()
    assert budget.try_spend()
    assert not budget.try_spend()


def test_hedge_budget_never_exceeds_its_fraction_over_many_requests() -> None:
    """Over N primaries, hedges ≤ fraction × N + 1."""
    budget = HedgeBudget(max_extra_fraction=0.05)
    hedges = 0
    for _ in range(1000):
        budget.on_primary()
        hedges += budget.try_spend()
    assert hedges <= 0.05 * 1000 + 1


def test_a_hedge_that_keeps_part_of_the_bucket_takes_only_the_surplus() -> None:
    """try_spend(keep=0.5) leaves half the bucket's capacity for hedges that need it."""
    budget = HedgeBudget(max_extra_fraction=0.5)
    for _ in range(20):
        budget.on_primary()  # capacity 10, full
    taken = 0
    while budget.try_spend(keep=0.5):
        taken += 1
    assert taken == 5
    assert budget.try_spend()  # the rest is there for a hedge that keeps nothing back


@on_virtual_time
async def test_hedge_losers_are_reaped_even_when_the_loser_is_mid_submit(clock: LoopClock) -> None:
    """A loser still submitting when the race ends gets its job cancelled once accepted."""

    class SlowSubmit(FakeBackend):
        async def submit(self, deployment, request, *, webhook_url=None):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.2)
            return await super().submit(deployment, request, webhook_url=webhook_url)

    a = FakeBackend(name="a", script=[Succeed(latency_s=0.1)])
    b = SlowSubmit(name="b", script=[Hang()])
    async with router_over(a, b, hedge=HEDGE, clock=clock) as router:
        result = await router.generate("a fox", model="flux-dev")
    assert result.provider == "a"
    assert b.cancelled == ["b-1"]


@on_virtual_time
async def test_a_primary_holding_no_job_is_replaced_not_raced(clock: LoopClock) -> None:
    """At the hedge delay, a primary waiting out a Retry-After has no job to race: the next
    deployment takes over as a fallback and the primary never submits again."""
    from genrouter import RateLimitedError

    a = FakeBackend(name="a", script=[RateLimitedError("429", retry_after=0.5), Succeed()])
    b = FakeBackend(name="b")
    async with router_over(a, b, hedge=HEDGE, retry={"max_attempts": 3}, clock=clock) as router:
        result = await router.generate("a fox", model="flux-dev")
        await asyncio.sleep(0.6)  # past the Retry-After: a stopped lane would submit now
    assert result.provider == "b"
    assert [(x.provider, x.outcome, x.hedged) for x in result.attempts] == [
        ("a", AttemptOutcome.FAILED, False),
        ("b", AttemptOutcome.SUCCEEDED, False),
    ]
    assert a.submit_count == 1


async def test_a_hedge_whose_job_finishes_stops_the_primary_as_it_finishes() -> None:
    """The first job to finish at its provider wins: the other lane is stopped then, not
    after the winner's result has been read, and its job is cancelled."""
    a = FakeBackend(name="a", script=[Hang()])
    b = FakeBackend(name="b", script=[Succeed(latency_s=0.1)])
    async with router_over(a, b, hedge=HEDGE) as router:
        result = await router.generate("a fox", model="flux-dev")
    assert a.cancelled == ["a-1"]
    assert result.provider == "b"
    assert result.attempts[0].outcome is AttemptOutcome.HEDGE_LOST
    assert result.attempts[0].error == "another provider's job finished first; cancelled"


# -- delay: p95 hedges only where it pays ------------------------------------------------

P95_HEDGE = {"enabled": True, "delay": "p95", "max_extra_fraction": 1.0}


def _light_tail(router: AsyncRouter, *, slowest_s: float) -> None:
    """Give ``a`` a light tail (p95 0.1 s, slowest ``slowest_s``) where hedges lose."""
    health = router.state.health("a/a/flux-dev")
    for latency in [0.05] * 90 + [0.1] * 9 + [slowest_s]:
        health.record_success(latency)
    for _ in range(10):
        health.record_race(hedge_won=False)


async def _one_request_after_a_light_tail(
    step: Succeed | Hang, *, hedge: dict[str, object], slowest_s: float
) -> tuple[GenerationResult, FakeBackend]:
    """One request whose primary on ``a`` does ``step``, after ``_light_tail``; returns b too."""
    a, b = FakeBackend(name="a", script=[step]), FakeBackend(name="b")
    async with router_over(a, b, hedge=hedge, explore={"enabled": False}) as router:
        _light_tail(router, slowest_s=slowest_s)
        return await router.generate("a fox", model="flux-dev"), b


async def test_a_p95_delay_does_not_hedge_a_light_tail_routinely() -> None:
    """Past its p95 but within the usual tail, where hedges lose, a request is left to finish."""
    result, b = await _one_request_after_a_light_tail(Succeed(latency_s=0.2), hedge=P95_HEDGE, slowest_s=0.3)
    assert [x.provider for x in result.attempts] == ["a"]
    assert b.submit_count == 0


async def test_a_p95_delay_hedges_a_request_that_outlives_every_latency_seen() -> None:
    """A request running longer than anything in the window (a hang) is hedged."""
    result, _ = await _one_request_after_a_light_tail(Hang(), hedge=P95_HEDGE, slowest_s=0.3)
    assert result.provider == "b"
    assert result.attempts[-1].hedged


@on_virtual_time
async def test_a_p95_delay_hedges_when_three_requests_are_overdue_at_once(clock: LoopClock) -> None:
    """Three requests past the p95 together show the deployment slow now: all are hedged."""
    a = FakeBackend(name="a", script=[Hang(), Hang(), Hang()])
    b = FakeBackend(name="b")
    timeouts = {"attempt_s": 2, "deadline_s": 2}  # outliving the 5 s latency comes too late
    async with router_over(
        a, b, hedge=P95_HEDGE, explore={"enabled": False}, timeouts=timeouts, clock=clock
    ) as router:
        _light_tail(router, slowest_s=5.0)
        results = await asyncio.gather(*(router.generate("a fox", model="flux-dev") for _ in range(3)))
    assert [r.provider for r in results] == ["b", "b", "b"]


@on_virtual_time
async def test_a_request_overtaken_by_its_hedge_stays_evidence_for_the_next_ones(clock: LoopClock) -> None:
    """The first of three hung requests is hedged and its job cancelled; the two started
    just after it still see three overdue, so they are hedged too."""
    a = FakeBackend(name="a", script=[Hang(), Hang(), Hang()])
    b = FakeBackend(name="b")
    timeouts = {"attempt_s": 2, "deadline_s": 2}

    async def after(router: AsyncRouter, delay_s: float) -> GenerationResult:
        await asyncio.sleep(delay_s)
        return await router.generate("a fox", model="flux-dev")

    async with router_over(
        a, b, hedge=P95_HEDGE, explore={"enabled": False}, timeouts=timeouts, clock=clock
    ) as router:
        _light_tail(router, slowest_s=5.0)
        results = await asyncio.gather(*(after(router, 0.005 * i) for i in range(3)))
    assert [r.provider for r in results] == ["b", "b", "b"]


async def test_a_fixed_delay_hedges_whatever_the_win_rate() -> None:
    """A delay in seconds is the user's explicit choice: every request still running is hedged."""
    result, _ = await _one_request_after_a_light_tail(Succeed(latency_s=0.5), hedge=HEDGE, slowest_s=5.0)
    assert result.provider == "b"


async def test_a_race_teaches_the_primarys_hedge_win_rate() -> None:
    """A hedge that wins raises the primary deployment's win rate; one that loses lowers it."""
    a = FakeBackend(name="a", script=[Hang(), Succeed(latency_s=0.1)])
    b = FakeBackend(name="b", script=[Succeed(), Hang()])
    async with router_over(a, b, hedge={**HEDGE, "max_extra_fraction": 1.0}) as router:
        health = router.state.health("a/a/flux-dev")
        prior = health.hedge_win_rate
        await router.generate("a fox", model="flux-dev")
        after_a_win = health.hedge_win_rate
        await router.generate("a fox", model="flux-dev")
    assert after_a_win > prior
    assert health.hedge_win_rate < after_a_win
