"""Circuit breaker on failure rate and half-open probes; latency horizon; exploration."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from genrouter import ProviderUnavailableError
from genrouter.routing.health import (
    LATENCY_HORIZON_S,
    LATENCY_KEEP,
    CircuitState,
    DeploymentHealth,
    streak_needed,
)
from genrouter.testing import FailSubmit, FakeBackend, FakeClock, Succeed
from routing_helpers import router_over


def test_failure_rate_over_minimum_requests_opens_the_circuit() -> None:
    """Alternating failures never reach 3 in a row, but a 50 % rate over 10 outcomes opens it."""
    health = DeploymentHealth()
    for i in range(10):
        if i % 2:
            health.record_failure(
                float(i), 3, 30, failure_rate_threshold=0.5, minimum_requests=10, window_s=60
            )
        else:
            health.record_success(0.1, float(i))
    assert health.state(10.0) is CircuitState.OPEN


def test_failure_rate_below_minimum_requests_does_not_open() -> None:
    """Too few outcomes: the rate rule waits for evidence."""
    health = DeploymentHealth()
    health.record_success(0.1, 0.0)
    health.record_failure(1.0, 3, 30, failure_rate_threshold=0.5, minimum_requests=10, window_s=60)
    assert health.state(2.0) is CircuitState.CLOSED


def test_old_outcomes_leave_the_rate_window() -> None:
    """Failures older than window_s no longer count toward the rate."""
    health = DeploymentHealth()
    for i in range(5):
        health.record_failure(float(i), 100, 30, failure_rate_threshold=0.5, minimum_requests=6, window_s=10)
    for i in range(5):
        health.record_success(0.1, 100.0 + i)
    assert health.failure_rate(105.0) == 0.0


def test_half_open_admits_the_configured_number_of_probes() -> None:
    """half_open_probes=2 lets two requests through after the cooldown, not three."""
    health = DeploymentHealth()
    health.record_failure(0.0, 1, 10)
    assert health.admits(11.0, half_open_probes=2)
    health.begin_request(11.0)
    assert health.admits(11.0, half_open_probes=2)
    health.begin_request(11.0)
    assert not health.admits(11.0, half_open_probes=2)


def test_latencies_older_than_the_horizon_stop_counting() -> None:
    """An incident's slow samples age out, keeping only the newest few."""
    health = DeploymentHealth()
    for i in range(50):
        health.record_success(10.0, float(i))
    for i in range(LATENCY_KEEP):
        health.record_success(1.0, 50.0 + LATENCY_HORIZON_S + i)
    assert health.p95 == 1.0
    assert health.samples == LATENCY_KEEP


def test_queue_and_run_times_are_tracked_apart() -> None:
    """Queue time (cold starts) shows up in the health summary."""
    health = DeploymentHealth()
    health.record_success(5.0, 0.0, queued_s=4.0, running_s=1.0)
    assert "queue p50 4.00s" in health.describe(1.0)


async def test_an_unmeasured_deployment_is_explored_once_the_leader_is_measured() -> None:
    """latency routing sends one request to a deployment without data, then follows the numbers."""
    a = FakeBackend(name="a", script=[Succeed()])
    b = FakeBackend(name="b", script=[Succeed(latency_s=0.05)])
    router = router_over(a, b, strategy="latency", explore={"min_samples": 3, "interval_s": 3600})
    providers = [(await router.generate("a fox", model="flux-dev")).provider for _ in range(6)]
    assert providers.count("b") == 1
    assert providers[:3] == ["a", "a", "a"]


async def test_exploration_shows_in_explain() -> None:
    """explain() notes the exploration it would do."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = router_over(a, b, strategy="latency", explore={"min_samples": 2, "interval_s": 3600})
    for _ in range(2):
        await router.generate("a fox", model="flux-dev")
    plan = router.explain("a fox", model="flux-dev")
    assert plan.candidates[0].provider == "b"
    assert any("exploring b" in note for note in plan.notes)


async def test_exploration_can_be_disabled() -> None:
    """explore.enabled false keeps to the ranking."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = router_over(a, b, strategy="latency", explore={"enabled": False})
    providers = {(await router.generate("a fox", model="flux-dev")).provider for _ in range(6)}
    assert providers == {"a"}


def _usual_failure_rate(health: DeploymentHealth, failures: int, outcomes: int) -> float:
    """Feed ``outcomes`` outcomes with ``failures`` spread out (never two in a row); the end time."""
    for i in range(outcomes):
        t = i * 0.01
        if (i * failures) // outcomes != ((i + 1) * failures) // outcomes:
            health.record_failure(t, 5, 30, failure_rate_threshold=0.5, minimum_requests=20, window_s=60)
        else:
            health.record_success(0.1, t)
    health.record_success(0.1, outcomes * 0.01)  # the test's streak starts from zero
    return outcomes * 0.01 + 1.0


def test_a_flaky_deployment_needs_a_longer_streak_to_open() -> None:
    """At a usual ~28 % failure rate, five failures in a row are routine; eight open it."""
    health = DeploymentHealth()
    start = _usual_failure_rate(health, failures=28, outcomes=100)
    rate = health.failure_rate(start)
    assert rate is not None
    assert 0.2 < rate < 0.35
    needed = streak_needed(5, rate)
    assert needed == 8
    for i in range(needed - 1):
        health.record_failure(start + i, 5, 30, failure_rate_threshold=0.9, minimum_requests=20, window_s=60)
    assert health.state(start + needed) is CircuitState.CLOSED
    health.record_failure(start + needed, 5, 30, failure_rate_threshold=0.9, minimum_requests=20, window_s=60)
    assert health.state(start + needed) is CircuitState.OPEN


def test_a_reliable_deployment_opens_at_the_configured_streak() -> None:
    """With no failures before the streak, failure_threshold consecutive failures open it."""
    health = DeploymentHealth()
    start = _usual_failure_rate(health, failures=0, outcomes=40)
    for i in range(5):
        health.record_failure(start + i, 5, 30, failure_rate_threshold=0.9, minimum_requests=20, window_s=60)
    assert health.state(start + 5) is CircuitState.OPEN


@given(st.integers(min_value=1, max_value=50), st.floats(min_value=0.0, max_value=1.0))
def test_the_streak_needed_stays_between_the_threshold_and_four_times_it(threshold: int, rate: float) -> None:
    assert threshold <= streak_needed(threshold, rate) <= 4 * threshold


@given(st.integers(min_value=1, max_value=20), st.floats(min_value=0.01, max_value=0.98))
def test_a_higher_usual_failure_rate_never_needs_a_shorter_streak(threshold: int, rate: float) -> None:
    assert streak_needed(threshold, rate) <= streak_needed(threshold, min(1.0, rate + 0.01))


async def test_an_open_circuit_is_the_last_resort_when_everything_else_fails() -> None:
    """A deployment benched by its breaker still gets the request once every other one failed."""
    a = FakeBackend(name="a")
    b = FakeBackend(name="b", script=[FailSubmit(ProviderUnavailableError("b is down", provider="b"))])
    async with router_over(a, b, clock=FakeClock(), retry={"max_attempts": 1}) as router:
        router.state.health(router.deployments("flux-dev")[0].key).record_failure(router.clock.now(), 1, 30)
        plan = router.explain("a fox", model="flux-dev")
        assert [c.provider for c in plan.candidates if c.excluded is None] == ["b"]
        result = await router.generate("a fox", model="flux-dev")
    assert [(x.provider, x.outcome.value) for x in result.attempts] == [("b", "failed"), ("a", "succeeded")]


async def test_a_deployment_nothing_has_gone_to_for_the_interval_is_explored_again() -> None:
    """A measured deployment benched by its numbers gets one request per interval: it may have recovered."""
    clock = FakeClock()
    a = FakeBackend(name="a", clock=clock)
    b = FakeBackend(name="b", clock=clock)
    router = router_over(a, b, clock=clock, strategy="latency", explore={"min_samples": 1, "interval_s": 30})
    b_health = router.state.health("b/b/flux-dev")
    b_health.begin_request(clock.now())
    b_health.record_success(9.0)  # b was slow when last tried
    for _ in range(3):
        await router.generate("a fox", model="flux-dev")
    assert b.submit_count == 0
    clock.advance(31)
    plan = router.explain("a fox", model="flux-dev")
    assert plan.candidates[0].provider == "b"
    assert any("no request for 31s" in note for note in plan.notes)
