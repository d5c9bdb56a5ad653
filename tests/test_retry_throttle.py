"""Router-wide retry budget: retries are paid for by successes, so an outage cannot
turn into a retry storm while a provider failing a third of its calls is still retried."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genrouter import AllProvidersFailedError, ProviderUnavailableError
from genrouter.routing.throttle import RetryBudget
from genrouter.testing import FakeBackend, FakeClock, Succeed, set_testing
from routing_helpers import router_over


def test_a_fresh_bucket_allows_retries() -> None:
    """A provider never seen has a full bucket."""
    assert RetryBudget(5, 1.0).allows_retry("a")


def test_each_retry_spends_a_token_until_none_is_left() -> None:
    """A full bucket of five grants five retries, then refuses (and takes nothing)."""
    budget = RetryBudget(5, 1.0)
    assert [budget.try_spend("a") for _ in range(6)] == [True] * 5 + [False]
    assert budget.tokens("a") == 0
    assert not budget.allows_retry("a")


def test_successes_earn_retries_back() -> None:
    """Each success returns token_ratio; two at 0.5 pay for one more retry."""
    budget = RetryBudget(5, 0.5)
    for _ in range(5):
        budget.try_spend("a")
    budget.on_success("a")
    assert not budget.allows_retry("a")
    budget.on_success("a")
    assert budget.try_spend("a")


def test_buckets_are_per_provider() -> None:
    """One provider's retries do not throttle another's."""
    budget = RetryBudget(5, 1.0)
    for _ in range(10):
        budget.try_spend("a")
    assert not budget.allows_retry("a")
    assert budget.allows_retry("b")


def test_tokens_stay_within_zero_and_max() -> None:
    """The count never goes negative nor above max_tokens."""
    budget = RetryBudget(4, 0.5)
    for _ in range(20):
        budget.try_spend("a")
    assert budget.tokens("a") == 0
    for _ in range(100):
        budget.on_success("a")
    assert budget.tokens("a") == 4


def test_the_defaults_are_five_tokens_and_a_retry_per_success() -> None:
    """retry_budget defaults to max_tokens 5 and token_ratio 1, on for every router."""
    router = router_over(FakeBackend(name="a"))
    assert router.throttle is not None
    assert (router.throttle.max_tokens, router.throttle.token_ratio) == (5, 1.0)


@given(
    max_tokens=st.floats(1, 50),
    ratio=st.floats(0.01, 10),
    events=st.lists(st.sampled_from(["retry", "success"]), max_size=300),
)
def test_retries_never_exceed_max_tokens_plus_ratio_times_successes(
    max_tokens: float, ratio: float, events: list[str]
) -> None:
    """For any order of retry requests and successes: granted ≤ max_tokens + ratio × successes."""
    budget = RetryBudget(max_tokens, ratio)
    granted = successes = 0
    for event in events:
        if event == "retry":
            granted += budget.try_spend("a")
        else:
            successes += 1
            budget.on_success("a")
        assert granted <= max_tokens + ratio * successes + 1e-9
        assert 0 <= budget.tokens("a") <= max_tokens


@given(failure_rate=st.floats(0.0, 0.3), seed=st.integers(0, 2**16))
def test_a_provider_failing_under_a_third_keeps_nearly_every_retry(failure_rate: float, seed: int) -> None:
    """Attempts failing at rate p ≤ 0.3, retried until they succeed: at most 3 % are refused."""
    rng = random.Random(seed)
    budget = RetryBudget(5, 1.0)
    wanted = 0
    for _request in range(400):
        while rng.random() < failure_rate:
            wanted += 1
            if not budget.try_spend("a"):
                break
        else:
            budget.on_success("a")
    assert budget.refused <= max(5, 0.03 * wanted)


@given(requests=st.integers(1, 500))
def test_a_provider_failing_everything_gets_max_tokens_retries_in_all(requests: int) -> None:
    """With no success, every request's retries together stop at max_tokens."""
    budget = RetryBudget(5, 1.0)
    granted = sum(budget.try_spend("a") for _ in range(requests * 2))
    assert granted == min(5, requests * 2)


async def test_every_other_attempt_failing_is_always_retried_on_defaults() -> None:
    """Half of all attempts failing: each success pays for the next retry, so every request
    is retried on its own provider and succeeds there (the fallback is never needed)."""
    set_testing()
    clock = FakeClock()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503"), Succeed()] * 100)
    b = FakeBackend(name="b")
    router = router_over(a, b, clock=clock, circuit_breaker={"failure_threshold": 1000})
    for _ in range(100):
        result = await router.generate("a fox", model="flux-dev")
        assert result.provider == "a"
    assert b.submit_count == 0


async def test_a_total_outage_costs_one_submission_per_provider_per_request() -> None:
    """Two providers failing everything: after the first five retries each, one submit each per request."""
    set_testing()
    clock = FakeClock()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    b = FakeBackend(name="b", script=[ProviderUnavailableError("503")])
    router = router_over(a, b, clock=clock, retry={"max_attempts": 3})
    for _ in range(50):
        with pytest.raises(AllProvidersFailedError):
            await router.generate("a fox", model="flux-dev")
    assert a.submit_count == b.submit_count == 50 + 5


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
