"""Deployment health: latency quantiles, the circuit breaker, the state store, and how the
router feeds them."""

from __future__ import annotations

from typing import Any

import pytest

from genrouter import AsyncRouter, DeadlineExceededError
from genrouter.errors import (
    AllProvidersFailedError,
    InvalidRequestError,
    JobFailedError,
    ProviderUnavailableError,
    RateLimitedError,
)
from genrouter.routing.health import LATENCY_WINDOW, CircuitState, DeploymentHealth
from genrouter.routing.store import MemoryStateStore
from genrouter.testing import FailJob, FakeBackend, FakeClock, Hang, Succeed, set_testing

# -- the breaker -----------------------------------------------------------------------


def test_a_new_deployment_is_closed_and_admits_requests() -> None:
    """A deployment with no history has a closed circuit and admits requests."""
    health = DeploymentHealth()
    assert health.state(0.0) is CircuitState.CLOSED
    assert health.admits(0.0)


def test_circuit_opens_after_threshold_consecutive_failures() -> None:
    """failure_threshold consecutive failures open the circuit; fewer do not."""
    health = DeploymentHealth()
    health.record_failure(10.0, failure_threshold=3, cooldown_s=30)
    health.record_failure(11.0, failure_threshold=3, cooldown_s=30)
    assert health.state(11.0) is CircuitState.CLOSED
    health.record_failure(12.0, failure_threshold=3, cooldown_s=30)
    assert health.state(12.0) is CircuitState.OPEN
    assert not health.admits(12.0)


def test_a_success_resets_the_consecutive_failure_count() -> None:
    """Failures separated by a success do not add up to the threshold."""
    health = DeploymentHealth()
    health.record_failure(1.0, failure_threshold=2, cooldown_s=30)
    health.record_success(0.5)
    health.record_failure(2.0, failure_threshold=2, cooldown_s=30)
    assert health.state(2.0) is CircuitState.CLOSED
    assert health.consecutive_failures == 1


def test_open_circuit_turns_half_open_after_the_cooldown() -> None:
    """An open circuit stays open for cooldown_s, then turns half-open."""
    health = DeploymentHealth()
    health.record_failure(100.0, failure_threshold=1, cooldown_s=30)
    assert health.state(129.9) is CircuitState.OPEN
    assert health.state(130.0) is CircuitState.HALF_OPEN


def test_half_open_admits_one_probe_at_a_time() -> None:
    """Half-open admits a request; once it is sent as the probe, no other is admitted."""
    health = DeploymentHealth()
    health.record_failure(0.0, failure_threshold=1, cooldown_s=10)
    assert health.admits(20.0)
    health.begin_request(20.0)
    assert health.probe_in_flight
    assert not health.admits(20.0)


def test_a_successful_probe_closes_the_circuit() -> None:
    """The probe's success closes the circuit."""
    health = DeploymentHealth()
    health.record_failure(0.0, failure_threshold=1, cooldown_s=10)
    health.begin_request(20.0)
    health.record_success(1.0)
    assert health.state(20.0) is CircuitState.CLOSED
    assert health.admits(20.0)


def test_a_failed_probe_reopens_the_circuit_for_another_cooldown() -> None:
    """The probe's failure re-opens the circuit for cooldown_s, even below the threshold."""
    health = DeploymentHealth()
    health.record_failure(0.0, failure_threshold=1, cooldown_s=10)
    health.begin_request(20.0)
    health.record_failure(21.0, failure_threshold=100, cooldown_s=10)
    assert health.state(21.0) is CircuitState.OPEN
    assert health.open_until == 31.0


def test_release_probe_lets_the_next_probe_in() -> None:
    """A probe that ended neither way (e.g. a 429) frees the slot for another probe."""
    health = DeploymentHealth()
    health.record_failure(0.0, failure_threshold=1, cooldown_s=10)
    health.begin_request(20.0)
    health.release_probe()
    assert health.admits(20.0)


def test_begin_request_on_a_closed_circuit_is_not_a_probe() -> None:
    """Requests to a closed circuit are not probes and do not block one another."""
    health = DeploymentHealth()
    health.begin_request(0.0)
    assert not health.probe_in_flight
    assert health.admits(0.0)


# -- latency ------------------------------------------------------------------------------


def test_quantiles_are_none_without_observations() -> None:
    """With no latencies observed, quantiles and p95 are None."""
    assert DeploymentHealth().p95 is None
    assert DeploymentHealth().quantile(0.5) is None


def test_p95_of_observed_latencies() -> None:
    """p95 is the 95th percentile of recent successful latencies."""
    health = DeploymentHealth()
    for latency in range(1, 101):
        health.record_success(float(latency))
    assert health.p95 == pytest.approx(95.0, abs=1.0)
    assert health.quantile(0.5) == pytest.approx(50.0, abs=1.0)
    assert health.quantile(0.0) == 1.0
    assert health.quantile(1.0) == 100.0


def test_latency_window_keeps_only_recent_observations() -> None:
    """Only the most recent LATENCY_WINDOW latencies count."""
    health = DeploymentHealth()
    for _ in range(LATENCY_WINDOW):
        health.record_success(100.0)
    for _ in range(LATENCY_WINDOW):
        health.record_success(1.0)
    assert health.p95 == 1.0


def test_quantile_reflects_new_observations() -> None:
    """A quantile read, then a new observation, gives an updated quantile."""
    health = DeploymentHealth()
    health.record_success(1.0)
    assert health.p95 == 1.0
    health.record_success(9.0)
    assert health.p95 == 9.0


def test_overdue_takes_three_requests_in_flight_past_the_age() -> None:
    """One or two requests past the age are stragglers; three at once make it overdue."""
    health = DeploymentHealth()
    health.begin_request(0.0)
    health.begin_request(0.1)
    assert not health.overdue(1.0, age=0.5)
    health.begin_request(0.4)
    assert health.overdue(1.0, age=0.5)
    assert not health.overdue(1.0, age=0.7)


def test_an_ended_request_no_longer_counts_as_overdue() -> None:
    """Only requests still in flight count."""
    health = DeploymentHealth()
    first = health.begin_request(0.0)
    health.begin_request(0.1)
    health.begin_request(0.2)
    health.end_request(first)
    assert not health.overdue(5.0, age=1.0)


def _two_running_and_one_overtaken(health: DeploymentHealth, *running_since: float) -> DeploymentHealth:
    """``health`` with requests running since ``running_since``, and one started at 0 s
    that its hedge overtook at 1 s."""
    for started in running_since:
        health.begin_request(started)
    health.record_overtaken(0.0, now=1.0)
    return health


def test_a_request_overtaken_by_its_hedge_counts_as_overdue_for_a_while() -> None:
    """A request cancelled for its hedge still counts while it would be past the age."""
    health = _two_running_and_one_overtaken(DeploymentHealth(), 0.1, 0.2)
    assert health.overdue(1.2, age=1.0)


def test_an_overtaken_request_stops_counting_once_it_is_older_news_than_the_age() -> None:
    """Overtaken longer than ``age`` ago, it says nothing about requests running now."""
    health = _two_running_and_one_overtaken(DeploymentHealth(), 3.0, 3.1)
    assert not health.overdue(4.2, age=1.0)


def test_overtaken_requests_do_not_count_while_the_deployment_queues() -> None:
    """A queue explains the slowness (and its waiting requests show it): no extra evidence."""
    queueing = DeploymentHealth()
    queueing.record_success(0.5, queued_s=0.4)
    health = _two_running_and_one_overtaken(queueing, 0.1, 0.2)
    assert not health.overdue(1.2, age=1.0)


def test_a_request_older_than_every_latency_has_outlived_the_window() -> None:
    """outlived() is true past the slowest latency seen, and with no latency seen at all."""
    health = DeploymentHealth()
    assert health.outlived(0.1)
    for latency in (0.2, 0.9, 0.4):
        health.record_success(latency)
    assert not health.outlived(0.9)
    assert health.outlived(0.91)


def test_hedge_races_move_the_win_rate_toward_their_outcome() -> None:
    """A won race raises the hedge win rate, a lost one lowers it; it stays within 0-1."""
    health = DeploymentHealth()
    prior = health.hedge_win_rate
    health.record_race(hedge_won=True)
    assert health.hedge_win_rate > prior
    for _ in range(100):
        health.record_race(hedge_won=False)
    assert 0.0 <= health.hedge_win_rate < 0.01


def test_describe_summarises_state_counts_and_p95() -> None:
    """describe() reads like 'closed, 2 ok / 1 failed, p95 …'; open circuits say for how long."""
    health = DeploymentHealth()
    assert health.describe(0.0) == "closed, 0 ok / 0 failed, no latency data"
    health.record_success(1.0)
    health.record_success(2.0)
    health.record_failure(5.0, failure_threshold=1, cooldown_s=30)
    assert health.describe(5.0) == "open for 30.0s, 2 ok / 1 failed, p95 2.00s"


# -- the memory store ------------------------------------------------------------------------


def test_store_returns_the_same_health_record_for_a_key() -> None:
    """health(key) creates a record once and returns it afterwards."""
    store = MemoryStateStore()
    assert store.health("a/x") is store.health("a/x")
    assert store.health("a/x") is not store.health("b/x")


def test_store_blocks_a_provider_until_a_time() -> None:
    """block() records a Retry-After; blocked_until is 0 for an unblocked provider."""
    store = MemoryStateStore()
    assert store.blocked_until("a") == 0.0
    store.block("a", 50.0)
    assert store.blocked_until("a") == 50.0


def test_a_later_block_never_shortens_an_earlier_one() -> None:
    """A shorter Retry-After does not cut an existing longer block."""
    store = MemoryStateStore()
    store.block("a", 50.0)
    store.block("a", 20.0)
    assert store.blocked_until("a") == 50.0
    store.block("a", 80.0)
    assert store.blocked_until("a") == 80.0


def test_store_disables_a_provider_with_a_reason() -> None:
    """disable() records why a provider is unusable; others stay enabled."""
    store = MemoryStateStore()
    store.disable("a", "AuthenticationError: bad key")
    assert store.disabled_reason("a") == "AuthenticationError: bad key"
    assert store.disabled_reason("b") is None


# -- the router feeds health ----------------------------------------------------------------


def config(*names: str, **routing: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "providers": {
            n: {
                "type": "custom",
                "models": {"flux-dev": {"endpoint": f"{n}/flux-dev", "price": {"per_image": "0.01"}}},
            }
            for n in names
        },
        "routing": {"default": {"strategy": "priority", **routing}},
    }


def excluded(router: AsyncRouter) -> dict[str, str | None]:
    return {c.provider: c.excluded for c in router.explain("a fox", model="flux-dev").candidates}


async def test_server_errors_open_the_circuit_after_the_threshold() -> None:
    """Consecutive 5xx failures open a deployment's circuit, and explain() shows it excluded."""
    set_testing()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    b = FakeBackend(name="b")
    router = AsyncRouter.from_config(
        config("a", "b", retry={"max_attempts": 1}, circuit_breaker={"failure_threshold": 2}),
        backends={"a": a, "b": b},
        clock=FakeClock(),
    )
    await router.generate("a fox", model="flux-dev")
    assert excluded(router)["a"] is None
    await router.generate("a fox", model="flux-dev")
    assert excluded(router)["a"] == "circuit open for another 30.0s"
    await router.generate("a fox", model="flux-dev")
    assert a.submit_count == 2


@pytest.mark.parametrize(
    "error",
    [
        RateLimitedError("429", retry_after=0.0),
        InvalidRequestError("422 bad size", status_code=422),
        JobFailedError("nsfw", retryable=False),
    ],
    ids=["rate-limited", "invalid-request", "non-retryable-job-failure"],
)
async def test_non_breaker_failures_leave_the_circuit_closed(error: Exception) -> None:
    """429s, invalid requests and non-retryable job failures never open a circuit."""
    set_testing()
    a = FakeBackend(name="a", script=[FailJob(error)])
    router = AsyncRouter.from_config(
        config("a", retry={"max_attempts": 1}, circuit_breaker={"failure_threshold": 1}),
        backends={"a": a},
        clock=FakeClock(),
    )
    for _ in range(3):
        with pytest.raises(AllProvidersFailedError):
            await router.generate("a fox", model="flux-dev")
    assert excluded(router) == {"a": None}
    assert router.state.health(router.deployments("flux-dev")[0].key).state(router.clock.now()) == (
        CircuitState.CLOSED
    )


async def test_retryable_job_failure_counts_against_the_circuit() -> None:
    """A retryable job failure (e.g. a disconnected runner) counts as a breaker failure."""
    set_testing()
    a = FakeBackend(name="a", script=[FailJob(JobFailedError("runner_disconnected", retryable=True))])
    b = FakeBackend(name="b")
    router = AsyncRouter.from_config(
        config("a", "b", retry={"max_attempts": 1}, circuit_breaker={"failure_threshold": 1}),
        backends={"a": a, "b": b},
        clock=FakeClock(),
    )
    await router.generate("a fox", model="flux-dev")
    assert (excluded(router)["a"] or "").startswith("circuit open")


async def test_a_successful_probe_closes_the_circuit_through_the_router() -> None:
    """After the cooldown the router sends one probe; its success closes the circuit."""
    set_testing()
    clock = FakeClock()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503"), Succeed()])
    b = FakeBackend(name="b")
    router = AsyncRouter.from_config(
        config(
            "a",
            "b",
            retry={"max_attempts": 1},
            circuit_breaker={"failure_threshold": 1, "cooldown_s": 10},
        ),
        backends={"a": a, "b": b},
        clock=clock,
    )
    await router.generate("a fox", model="flux-dev")
    assert (excluded(router)["a"] or "").startswith("circuit open")
    clock.advance(10)
    result = await router.generate("a fox", model="flux-dev")
    assert result.provider == "a"
    assert excluded(router)["a"] is None
    assert router.explain("a fox", model="flux-dev").candidates[0].health.startswith("closed")


async def test_successes_feed_latency_into_the_plan() -> None:
    """A successful attempt's latency becomes the deployment's estimated p95 in explain()."""
    clock = FakeClock()
    router = AsyncRouter.from_config(config("a"), backends={"a": FakeBackend(name="a")}, clock=clock)
    assert router.explain("a fox", model="flux-dev").candidates[0].estimated_p95_s is None
    await router.generate("a fox", model="flux-dev")
    assert router.explain("a fox", model="flux-dev").candidates[0].estimated_p95_s == 0.0


async def test_a_probe_cancelled_by_the_deadline_does_not_block_the_deployment_forever() -> None:
    """When the deadline cancels a half-open probe, the deployment can be probed again later."""
    a = FakeBackend(name="a", script=[Hang(), Succeed()])
    b = FakeBackend(name="b")
    router = AsyncRouter.from_config(
        config("a", "b", timeouts={"deadline_s": 0.1, "attempt_s": 0.1}),
        backends={"a": a, "b": b},
    )
    key = router.deployments("flux-dev")[0].key
    router.state.health(key).record_failure(router.clock.now() - 100, 1, 1.0)  # now half-open
    with pytest.raises(DeadlineExceededError):
        await router.generate("a fox", model="flux-dev")
    assert "probe is already in flight" not in (excluded(router)["a"] or "")


async def test_a_submitted_job_that_succeeds_closes_a_half_open_circuit() -> None:
    """A half-open probe sent through submit()/result() closes the circuit when it succeeds."""
    clock = FakeClock()
    a = FakeBackend(name="a")
    b = FakeBackend(name="b")
    router = AsyncRouter.from_config(config("a", "b"), backends={"a": a, "b": b}, clock=clock)
    key = router.deployments("flux-dev")[0].key
    router.state.health(key).record_failure(clock.now() - 100, 1, 1.0)  # now half-open
    handle = await router.submit("a fox", model="flux-dev")
    assert handle.provider == "a"
    await router.result(handle)
    assert excluded(router)["a"] is None


async def test_a_failed_job_result_counts_against_the_circuit() -> None:
    """result() of a job that failed with a server error feeds the breaker."""
    set_testing()
    clock = FakeClock()
    a = FakeBackend(name="a", script=[FailJob(ProviderUnavailableError("503"))])
    b = FakeBackend(name="b")
    router = AsyncRouter.from_config(
        config("a", "b", circuit_breaker={"failure_threshold": 1}),
        backends={"a": a, "b": b},
        clock=clock,
    )
    handle = await router.submit("a fox", model="flux-dev")
    with pytest.raises(ProviderUnavailableError):
        await router.result(handle)
    assert (excluded(router)["a"] or "").startswith("circuit open")


def test_a_run_of_slow_latencies_replaces_the_window_estimate() -> None:
    """When the newest sixteen are mostly slower than the window's p95, they set the estimate."""
    health = DeploymentHealth()
    for _ in range(240):
        health.record_success(0.2)
    for _ in range(9):
        health.record_latency(2.0)
    assert health.p95 == pytest.approx(0.2)  # nine in 249 is under 5 %
    assert health.estimated_p95 == pytest.approx(2.0)


def test_a_few_slow_latencies_leave_the_window_estimate() -> None:
    """A handful of slow samples among the newest is the tail, not a change."""
    health = DeploymentHealth()
    for _ in range(200):
        health.record_success(0.2)
    for _ in range(4):
        health.record_latency(2.0)
    for _ in range(12):
        health.record_success(0.2)
    assert health.estimated_p95 == pytest.approx(0.2)
