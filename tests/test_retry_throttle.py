"""Router-wide retry throttling (gRPC A6): an outage cannot turn into a retry storm."""

from __future__ import annotations

import pytest

from genrouter import AllProvidersFailedError, ProviderUnavailableError
from genrouter.routing.throttle import RetryThrottle
from genrouter.testing import FakeBackend, set_testing
from routing_helpers import router_over


def test_a_fresh_bucket_allows_retries() -> None:
    """A provider never seen has a full bucket."""
    assert RetryThrottle(10, 0.1).allows_retry("a")


def test_failures_down_to_half_the_tokens_stop_retries() -> None:
    """Five failures take 10 tokens to 5: at or below half, retries stop."""
    throttle = RetryThrottle(10, 0.1)
    for _ in range(4):
        throttle.on_failure("a")
    assert throttle.allows_retry("a")
    throttle.on_failure("a")
    assert not throttle.allows_retry("a")


def test_successes_earn_retries_back() -> None:
    """Each success returns token_ratio; enough of them re-enable retries."""
    throttle = RetryThrottle(10, 0.1)
    for _ in range(5):
        throttle.on_failure("a")
    for _ in range(11):
        throttle.on_success("a")
    assert throttle.allows_retry("a")


def test_buckets_are_per_provider() -> None:
    """One provider's failures do not throttle another's retries."""
    throttle = RetryThrottle(10, 0.1)
    for _ in range(10):
        throttle.on_failure("a")
    assert not throttle.allows_retry("a")
    assert throttle.allows_retry("b")


def test_tokens_stay_within_zero_and_max() -> None:
    """The count never goes negative nor above max_tokens."""
    throttle = RetryThrottle(4, 0.5)
    for _ in range(20):
        throttle.on_failure("a")
    assert throttle.tokens("a") == 0
    for _ in range(100):
        throttle.on_success("a")
    assert throttle.tokens("a") == 4


async def test_an_outage_stops_retrying_across_requests() -> None:
    """Against a provider that always fails, total submissions stay far below requests × attempts."""
    set_testing()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    router = router_over(
        a, retry={"max_attempts": 5}, circuit_breaker={"failure_threshold": 1000, "minimum_requests": 1000}
    )
    for _ in range(20):
        with pytest.raises(AllProvidersFailedError):
            await router.generate("a fox", model="flux-dev")
    # Without throttling this would be 20 × 5 = 100 submissions.
    assert a.submit_count < 30


async def test_throttling_can_be_disabled() -> None:
    """retry_budget.enabled false retries up to max_attempts every time."""
    set_testing()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    router = router_over(
        a,
        retry={"max_attempts": 5},
        retry_budget={"enabled": False},
        circuit_breaker={"failure_threshold": 1000, "minimum_requests": 1000},
    )
    for _ in range(4):
        with pytest.raises(AllProvidersFailedError):
            await router.generate("a fox", model="flux-dev")
    assert a.submit_count == 20


async def test_throttled_retries_still_fall_back() -> None:
    """A throttled provider's request still moves on to the next provider."""
    set_testing()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    b = FakeBackend(name="b")
    router = router_over(
        a, b, retry={"max_attempts": 3}, circuit_breaker={"failure_threshold": 1000, "minimum_requests": 1000}
    )
    for _ in range(10):
        result = await router.generate("a fox", model="flux-dev")
        assert result.provider == "b"
