"""AsyncRouter behaviour: routing, retries, fallback, Retry-After, the one deadline, outputs,
cost, and the jobs API. Backends are FakeBackend scripts; timing uses FakeClock."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from genrouter import (
    AllProvidersFailedError,
    AsyncRouter,
    AttemptOutcome,
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    GenerationRequest,
    InvalidRequestError,
    JobFailedError,
    JobHandle,
    JobState,
    NoRouteError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from genrouter.engine._attempts import CANCEL_MAX_HOLD_S, quiet_cancel
from genrouter.testing import FailJob, FailSubmit, FakeBackend, FakeClock, Hang, Succeed, set_testing
from genrouter.types import ProviderJob
from routing_helpers import router_over

# -- helpers ---------------------------------------------------------------------------------------


def provider(name: str, *, price: str | None = "0.01", **entry: Any) -> dict[str, Any]:
    """A custom provider section serving flux-dev inline."""
    model: dict[str, Any] = {"endpoint": f"{name}/flux-dev", **entry}
    if price is not None:
        model["price"] = {"per_image": price}
    return {"type": "custom", "models": {"flux-dev": model}}


def config(*names: str, sections: dict[str, Any] | None = None, **routing: Any) -> dict[str, Any]:
    providers = {n: provider(n) for n in names}
    providers.update(sections or {})
    return {
        "version": 1,
        "providers": providers,
        "routing": {"default": {"strategy": "priority", **routing}},
    }


def make(
    *backends: FakeBackend,
    clock: FakeClock | None = None,
    sections: dict[str, Any] | None = None,
    **routing: Any,
) -> AsyncRouter:
    """A router over FakeBackends (ranked in the order given), with an optional FakeClock."""
    by_name = {b.name: b for b in backends}
    return AsyncRouter.from_config(
        config(*by_name, sections=sections, **routing), backends=by_name, clock=clock
    )


def outcomes(attempts: Any) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome.value) for a in attempts]


SIM_LATENCY = {"median_s": 0.05, "p99_s": 0.1}


# -- generate: the happy path ----------------------------------------------------------------------


async def test_generate_returns_the_first_ranked_providers_result() -> None:
    """A request object is served by the top-ranked provider, with one succeeded attempt."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = make(a, b)
    result = await router.generate(GenerationRequest(model="flux-dev", prompt="a fox", seed=3))
    assert result.provider == "a"
    assert result.endpoint == "a/flux-dev"
    assert result.provider_request_id == "a-1"
    assert len(result.outputs) == 1
    assert outcomes(result.attempts) == [("a", "succeeded")]
    assert b.submit_count == 0


async def test_generate_accepts_keyword_fields_and_a_prompt_string() -> None:
    """generate(prompt, **fields) and generate(**fields) build the same request."""
    a = FakeBackend(name="a")
    router = make(a)
    await router.generate("a fox", model="flux-dev", seed=1)
    await router.generate(model="flux-dev", prompt="a fox", seed=1)
    assert a.submissions[0] == a.submissions[1]
    assert a.submissions[0].prompt == "a fox"


async def test_keyword_fields_override_a_request_object() -> None:
    """Keyword fields passed beside a request object override its fields."""
    a = FakeBackend(name="a")
    router = make(a)
    await router.generate(GenerationRequest(model="flux-dev", prompt="a fox", seed=1), seed=9)
    assert a.submissions[0].seed == 9
    assert a.submissions[0].prompt == "a fox"


async def test_request_fields_reach_the_backend() -> None:
    """The backend receives the validated request with every field the caller set."""
    a = FakeBackend(name="a")
    router = make(a)
    await router.generate("a fox", model="flux-dev", width=512, height=384, seed=7, steps=20)
    sent = a.submissions[0]
    assert (sent.width, sent.height, sent.seed, sent.steps) == (512, 384, 7, 20)


async def test_result_model_is_the_requested_alias() -> None:
    """A model alias routes to the canonical model, and the result names the alias asked for."""
    router = make(FakeBackend(name="a"))
    result = await router.generate("a fox", model="flux.1-dev")
    assert result.model == "flux.1-dev"
    assert result.provider == "a"


async def test_result_provider_is_the_config_key_not_the_type() -> None:
    """GenerationResult.provider is the provider's config key (sim-fast), not its type."""
    router = AsyncRouter.from_config(
        {"version": 1, "providers": {"sim-fast": {"type": "simulated", "price": "0.02"}}}
    )
    result = await router.generate("a fox", model="flux-dev", width=64, height=64)
    assert result.provider == "sim-fast"
    assert result.cost.amount_usd == Decimal("0.02")


# -- strategies through the router -----------------------------------------------------------------


async def test_priority_follows_the_configured_order() -> None:
    """priority tries providers in `order`."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = make(a, b, order=["b", "a"])
    assert (await router.generate("a fox", model="flux-dev")).provider == "b"


def test_priority_ranks_unlisted_providers_after_listed_ones_in_config_order() -> None:
    """Providers missing from `order` follow the listed ones, in config order."""
    router = make(FakeBackend(name="a"), FakeBackend(name="b"), FakeBackend(name="c"), order=["c"])
    plan = router.explain("a fox", model="flux-dev")
    assert [c.provider for c in plan.candidates] == ["c", "a", "b"]


async def test_cost_strategy_picks_the_cheapest_provider() -> None:
    """cost sends the request to the cheapest deployment."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = make(a, b, strategy="cost", sections={"a": provider("a", price="0.05")})
    assert (await router.generate("a fox", model="flux-dev")).provider == "b"


def test_latency_strategy_uses_backend_latency_hints_before_observations() -> None:
    """latency ranks simulated providers by their configured latency before any request."""
    router = AsyncRouter.from_config(
        {
            "version": 1,
            "providers": {
                "slow": {"type": "simulated", "latency": {"median_s": 2, "p99_s": 6}},
                "fast": {"type": "simulated", "latency": {"median_s": 0.2, "p99_s": 0.5}},
            },
            "routing": {"default": {"strategy": "latency"}},
        }
    )
    plan = router.explain("a fox", model="flux-dev")
    assert [c.provider for c in plan.candidates] == ["fast", "slow"]
    fast, slow = plan.candidates
    assert fast.estimated_p95_s is not None
    assert slow.estimated_p95_s is not None
    assert 0.2 < fast.estimated_p95_s < 0.5 < 2 < slow.estimated_p95_s < 6


async def test_latency_strategy_follows_observed_latency() -> None:
    """latency prefers the deployment whose observed p95 is lower."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = make(a, b, strategy="latency")
    slow_a, fast_b = (d.key for d in router.deployments("flux-dev"))
    for _ in range(10):
        router.state.health(slow_a).record_success(3.0)
        router.state.health(fast_b).record_success(0.5)
    assert (await router.generate("a fox", model="flux-dev")).provider == "b"


def test_balanced_strategy_weighs_cost_and_latency() -> None:
    """balanced picks the best cost/latency compromise: a bit dearer but much faster wins."""
    router = make(
        FakeBackend(name="cheap"),
        FakeBackend(name="fast"),
        strategy="balanced",
        sections={"cheap": provider("cheap", price="0.010"), "fast": provider("fast", price="0.012")},
    )
    cheap, fast = (d.key for d in router.deployments("flux-dev"))
    router.state.health(cheap).record_success(10.0)
    router.state.health(fast).record_success(1.0)
    plan = router.explain("a fox", model="flux-dev")
    assert [c.provider for c in plan.candidates] == ["fast", "cheap"]
    assert plan.candidates[0].score == pytest.approx(0.5 * 1.2 + 0.5 * 1.0)


async def test_weighted_strategy_interleaves_providers_by_weight() -> None:
    """Weights 3:1 lead successive requests in the sequence a a b a a a b a."""
    router = make(FakeBackend(name="a"), FakeBackend(name="b"), strategy="weighted", weights={"a": 3, "b": 1})
    leaders = [(await router.generate("a fox", model="flux-dev")).provider for _ in range(8)]
    assert leaders == ["a", "a", "b", "a", "a", "a", "b", "a"]


async def test_per_model_policy_overrides_the_default_strategy() -> None:
    """routing.models.<model>.strategy beats routing.default for that model."""
    cfg = config("a", "b", sections={"a": provider("a", price="0.05")})
    cfg["routing"]["models"] = {"flux-dev": {"strategy": "cost"}}
    router = AsyncRouter.from_config(cfg, backends={"a": FakeBackend(name="a"), "b": FakeBackend(name="b")})
    assert router.explain("a fox", model="flux-dev").strategy == "cost"
    assert (await router.generate("a fox", model="flux-dev")).provider == "b"


async def test_request_strategy_overrides_the_policy() -> None:
    """A request's strategy beats the configured one for that request only."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = make(a, b, sections={"a": provider("a", price="0.05")})
    assert (await router.generate("a fox", model="flux-dev", strategy="cost")).provider == "b"
    assert (await router.generate("a fox", model="flux-dev")).provider == "a"


async def test_request_allow_list_restricts_the_providers_tried() -> None:
    """A request's providers allow-list keeps other providers out of the plan."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = make(a, b)
    assert (await router.generate("a fox", model="flux-dev", providers=["b"])).provider == "b"
    assert a.submit_count == 0


# -- fallback and retries --------------------------------------------------------------------------


async def test_fallback_to_the_next_provider_records_both_attempts() -> None:
    """When the first provider's job fails, the second serves it; attempts record both, in order."""
    set_testing()
    a = FakeBackend(name="a", script=[FailJob(JobFailedError("model crashed"))])
    b = FakeBackend(name="b")
    result = await make(a, b).generate("a fox", model="flux-dev")
    assert result.provider == "b"
    assert outcomes(result.attempts) == [("a", "failed"), ("b", "succeeded")]
    assert result.attempts[0].error == "JobFailedError: model crashed"
    assert result.attempts[0].provider_request_id == "a-1"
    assert result.attempts[1].error is None


async def test_retryable_errors_are_retried_up_to_max_attempts_then_fallback() -> None:
    """ProviderUnavailableError is retried max_attempts times per candidate, then the next is tried."""
    set_testing()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503 busy")])
    b = FakeBackend(name="b")
    result = await make(a, b, retry={"max_attempts": 3}).generate("a fox", model="flux-dev")
    assert a.submit_count == 3
    assert result.provider == "b"
    assert outcomes(result.attempts) == [("a", "failed")] * 3 + [("b", "succeeded")]
    assert {a.error for a in result.attempts[:3]} == {"ProviderUnavailableError: 503 busy"}


async def test_a_retry_on_the_same_provider_can_succeed() -> None:
    """A transient failure followed by success stays on the same provider."""
    set_testing()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503"), Succeed()])
    b = FakeBackend(name="b")
    result = await make(a, b).generate("a fox", model="flux-dev")
    assert result.provider == "a"
    assert outcomes(result.attempts) == [("a", "failed"), ("a", "succeeded")]
    assert b.submit_count == 0


async def test_max_attempts_one_means_no_retry() -> None:
    """retry.max_attempts counts the first attempt: 1 means no retry."""
    set_testing()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    b = FakeBackend(name="b")
    await make(a, b, retry={"max_attempts": 1}).generate("a fox", model="flux-dev")
    assert a.submit_count == 1


async def test_provider_invalid_request_is_not_retried_but_the_plan_continues() -> None:
    """A provider's 422 is not retried on that provider; the next provider is tried."""
    set_testing()
    a = FakeBackend(name="a", script=[InvalidRequestError("422: width unsupported", status_code=422)])
    b = FakeBackend(name="b")
    result = await make(a, b, retry={"max_attempts": 3}).generate("a fox", model="flux-dev")
    assert a.submit_count == 1
    assert result.provider == "b"
    assert result.attempts[0].error == "InvalidRequestError: 422: width unsupported"


async def test_authentication_error_is_not_retried_and_disables_the_provider() -> None:
    """An AuthenticationError is not retried, and the provider is skipped by later requests."""
    set_testing()
    a = FakeBackend(name="a", script=[AuthenticationError("401 invalid key", status_code=401)])
    b = FakeBackend(name="b")
    router = make(a, b, retry={"max_attempts": 3})
    assert (await router.generate("a fox", model="flux-dev")).provider == "b"
    assert a.submit_count == 1
    assert (await router.generate("a fox", model="flux-dev")).provider == "b"
    assert a.submit_count == 1
    excluded = {c.provider: c.excluded for c in router.explain("a fox", model="flux-dev").candidates}
    assert excluded["a"] == "provider disabled: AuthenticationError: 401 invalid key"


async def test_retryable_job_failure_is_retried_on_the_same_provider() -> None:
    """A JobFailedError marked retryable (runner disconnected) gets another attempt there."""
    set_testing()
    a = FakeBackend(
        name="a", script=[FailJob(JobFailedError("runner_disconnected", retryable=True)), Succeed()]
    )
    result = await make(a).generate("a fox", model="flux-dev")
    assert outcomes(result.attempts) == [("a", "failed"), ("a", "succeeded")]


async def test_non_retryable_job_failure_moves_on_without_retrying() -> None:
    """A JobFailedError that is not retryable (safety filter) is not retried on that provider."""
    set_testing()
    a = FakeBackend(name="a", script=[FailJob(JobFailedError("nsfw content"))])
    b = FakeBackend(name="b")
    result = await make(a, b, retry={"max_attempts": 3}).generate("a fox", model="flux-dev")
    assert a.submit_count == 1
    assert result.provider == "b"


async def test_fallback_disabled_tries_only_the_first_candidate() -> None:
    """With fallback disabled, a failure of the first candidate ends the request."""
    set_testing()
    a = FakeBackend(name="a", script=[JobFailedError("bad")])
    b = FakeBackend(name="b")
    with pytest.raises(AllProvidersFailedError):
        await make(a, b, fallback={"enabled": False}).generate("a fox", model="flux-dev")
    assert b.submit_count == 0


async def test_fallback_max_providers_limits_the_candidates_tried() -> None:
    """fallback.max_providers bounds how many candidates a request tries."""
    set_testing()
    backends = [FakeBackend(name=n, script=[JobFailedError("bad")]) for n in "abc"]
    with pytest.raises(AllProvidersFailedError) as info:
        await make(*backends, fallback={"max_providers": 2}).generate("a fox", model="flux-dev")
    assert [b.submit_count for b in backends] == [1, 1, 0]
    assert [a.provider for a in info.value.attempts] == ["a", "b"]


async def test_an_unexpected_backend_exception_becomes_a_provider_error_and_moves_on() -> None:
    """A backend raising a non-genrouter exception is recorded as a ProviderError, not retried."""
    set_testing()
    a = FakeBackend(name="a", script=[RuntimeError("kaput")])
    b = FakeBackend(name="b")
    result = await make(a, b, retry={"max_attempts": 3}).generate("a fox", model="flux-dev")
    assert a.submit_count == 1
    assert result.provider == "b"
    assert result.attempts[0].error == "ProviderError: backend 'a' raised RuntimeError: kaput"


# -- Retry-After and backoff (FakeClock) -----------------------------------------------------------


async def test_retry_after_is_waited_before_the_next_attempt() -> None:
    """RateLimitedError(retry_after=2.0): the next attempt waits at least 2.0 s of clock time."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[RateLimitedError("429", retry_after=2.0), Succeed()])
    result = await make(a, clock=clock).generate("a fox", model="flux-dev")
    assert result.provider == "a"
    assert a.submit_count == 2
    assert clock.sleeps
    assert clock.sleeps[0] >= 2.0
    assert sum(clock.sleeps) == pytest.approx(2.0)


async def test_max_backoff_does_not_cap_retry_after() -> None:
    """max_backoff_s caps genrouter's own backoff, never the provider's Retry-After."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[RateLimitedError("429", retry_after=30.0), Succeed()])
    router = make(a, clock=clock, retry={"initial_backoff_s": 0.5, "max_backoff_s": 1.0})
    await router.generate("a fox", model="flux-dev")
    assert clock.sleeps == [30.0]


async def test_retry_after_past_the_deadline_moves_on_at_once() -> None:
    """A Retry-After ending after the deadline skips straight to the next candidate, no wait."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[RateLimitedError("429", retry_after=100.0)])
    b = FakeBackend(name="b")
    router = make(a, b, clock=clock, timeouts={"deadline_s": 10, "attempt_s": 10})
    result = await router.generate("a fox", model="flux-dev")
    assert result.provider == "b"
    assert a.submit_count == 1
    assert clock.sleeps == []
    assert outcomes(result.attempts) == [("a", "failed"), ("b", "succeeded")]
    assert result.attempts[0].error == "RateLimitedError: 429"


async def test_retry_after_holds_back_later_requests_to_that_provider() -> None:
    """After a Retry-After, a later request to that provider waits until it has passed."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[RateLimitedError("429", retry_after=5.0), Succeed()])
    b = FakeBackend(name="b")
    router = make(a, b, clock=clock, retry={"max_attempts": 1})
    assert (await router.generate("a fox", model="flux-dev")).provider == "b"
    assert clock.sleeps == []
    result = await router.generate("a fox", model="flux-dev", providers=["a"])
    assert result.provider == "a"
    assert clock.sleeps == [5.0]


async def test_a_candidate_skipped_for_retry_after_is_reported_in_all_providers_failed() -> None:
    """When every candidate is held back by Retry-After, the error says so in .errors."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[RateLimitedError("429", retry_after=100.0)])
    router = make(a, clock=clock, timeouts={"deadline_s": 10, "attempt_s": 10})
    with pytest.raises(AllProvidersFailedError):
        await router.generate("a fox", model="flux-dev")
    with pytest.raises(AllProvidersFailedError) as info:
        await router.generate("a fox", model="flux-dev")
    assert a.submit_count == 1
    assert [type(e) for e in info.value.errors] == [RateLimitedError]


async def test_exponential_backoff_doubles_from_initial_backoff() -> None:
    """Without jitter the waits are initial_backoff_s · 2^(n-1)."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    router = make(
        a,
        clock=clock,
        retry={"max_attempts": 4, "initial_backoff_s": 1.0, "max_backoff_s": 60, "jitter": 0},
    )
    with pytest.raises(AllProvidersFailedError):
        await router.generate("a fox", model="flux-dev")
    assert clock.sleeps == [1.0, 2.0, 4.0]


async def test_backoff_is_capped_by_max_backoff() -> None:
    """genrouter's own backoff never exceeds max_backoff_s."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    router = make(
        a,
        clock=clock,
        retry={"max_attempts": 4, "initial_backoff_s": 4.0, "max_backoff_s": 5.0, "jitter": 0},
    )
    with pytest.raises(AllProvidersFailedError):
        await router.generate("a fox", model="flux-dev")
    assert clock.sleeps == [4.0, 5.0, 5.0]


async def test_backoff_jitter_stays_within_bounds() -> None:
    """Each wait lies within base · (1 ± jitter) of its exponential base."""
    jitter = 0.5
    bases = [1.0, 2.0, 4.0, 8.0, 8.0]
    for _ in range(20):
        clock = FakeClock()
        a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
        router = make(
            a,
            clock=clock,
            retry={"max_attempts": 6, "initial_backoff_s": 1.0, "max_backoff_s": 8.0, "jitter": jitter},
            retry_budget={"enabled": False},  # this test is about backoff, not throttling
        )
        with pytest.raises(AllProvidersFailedError):
            await router.generate("a fox", model="flux-dev")
        assert len(clock.sleeps) == len(bases)
        for waited, base in zip(clock.sleeps, bases, strict=True):
            assert base * (1 - jitter) <= waited <= base * (1 + jitter)


async def test_retries_stop_before_a_backoff_would_cross_the_deadline() -> None:
    """A retry whose wait would end past the deadline is not made; the plan moves on."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    b = FakeBackend(name="b")
    router = make(
        a,
        b,
        clock=clock,
        retry={"max_attempts": 5, "initial_backoff_s": 1.0, "jitter": 0},
        timeouts={"deadline_s": 2.5, "attempt_s": 2.5},
    )
    result = await router.generate("a fox", model="flux-dev")
    assert clock.sleeps == [1.0]
    assert a.submit_count == 2
    assert result.provider == "b"


async def test_set_testing_removes_backoff_but_keeps_the_attempts() -> None:
    """set_testing() makes retries wait nothing while every attempt still happens."""
    set_testing()
    clock = FakeClock()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    router = make(a, clock=clock, retry={"max_attempts": 3, "initial_backoff_s": 5.0})
    with pytest.raises(AllProvidersFailedError) as info:
        await router.generate("a fox", model="flux-dev")
    assert a.submit_count == 3
    assert len(info.value.attempts) == 3
    assert all(s == 0 for s in clock.sleeps)


# -- the one deadline and timeouts -----------------------------------------------------------------


async def test_deadline_raises_and_cancels_the_hung_job() -> None:
    """A hung job past the deadline: DeadlineExceededError (a TimeoutError), the job and attempt cancelled."""
    a = FakeBackend(name="a", script=[Hang()])
    router = make(a, clock=FakeClock(), timeouts={"deadline_s": 0.2, "attempt_s": 0.2})
    with pytest.raises(DeadlineExceededError) as info:
        await router.generate("a fox", model="flux-dev")
    error = info.value
    assert isinstance(error, TimeoutError)
    assert a.cancelled == ["a-1"]
    assert outcomes(error.attempts) == [("a", "cancelled")]
    assert error.deadline_s == 0.2
    assert error.provider == "a"
    assert error.provider_request_id == "a-1"


async def test_a_cancel_told_to_wait_longer_than_its_limit_is_given_up_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Retry-After of centuries (a broken proxy) ends the cancel now, not in centuries."""
    backend = FakeBackend(name="a")
    job = ProviderJob(provider="a", endpoint="fal-ai/flux/dev", provider_request_id="a-1")
    await asyncio.wait_for(quiet_cancel(backend, job, CANCEL_MAX_HOLD_S * 1e6), timeout=5)
    assert backend.cancelled == []
    assert "not cancelling job a-1" in caplog.text


async def test_deadline_stops_the_plan_before_later_candidates() -> None:
    """Once the deadline has passed no further candidate is submitted to."""
    a = FakeBackend(name="a", script=[Hang()])
    b = FakeBackend(name="b")
    router = make(a, b, clock=FakeClock(), timeouts={"deadline_s": 0.2, "attempt_s": 0.2})
    with pytest.raises(DeadlineExceededError):
        await router.generate("a fox", model="flux-dev")
    assert b.submit_count == 0
    assert a.cancelled == ["a-1"]


async def test_request_deadline_overrides_the_policy_deadline() -> None:
    """A request's deadline_s replaces timeouts.deadline_s for that request."""
    a = FakeBackend(name="a", script=[Hang()])
    router = make(a, clock=FakeClock())  # policy deadline 300 s
    with pytest.raises(DeadlineExceededError) as info:
        await router.generate("a fox", model="flux-dev", deadline_s=0.1)
    assert info.value.deadline_s == 0.1
    assert a.cancelled == ["a-1"]


async def test_attempt_timeout_cancels_the_job_and_moves_to_the_next_provider() -> None:
    """A job outliving attempt_s is cancelled at the provider, recorded cancelled, and b serves."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[Hang()])
    b = FakeBackend(name="b")
    router = make(a, b, clock=clock, timeouts={"attempt_s": 5, "deadline_s": 60})
    result = await router.generate("a fox", model="flux-dev")
    assert result.provider == "b"
    assert a.cancelled == ["a-1"]
    assert a.submit_count == 1
    assert outcomes(result.attempts) == [("a", "cancelled"), ("b", "succeeded")]
    assert "attempt_s=5" in (result.attempts[0].error or "")


async def test_cancelling_the_caller_cancels_the_provider_job() -> None:
    """Cancelling the task awaiting generate() cancels the accepted job at the provider."""
    a = FakeBackend(name="a", script=[Hang()])
    router = make(a)
    task = asyncio.create_task(router.generate("a fox", model="flux-dev"))
    for _ in range(200):
        if a.submit_count:
            break
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert a.cancelled == ["a-1"]


@dataclass
class SlowSubmitBackend(FakeBackend):
    """A FakeBackend whose submit takes submit_delay_s of real time to be accepted."""

    submit_delay_s: float = 0.2

    async def submit(
        self, deployment: Any, request: GenerationRequest, *, webhook_url: str | None = None
    ) -> Any:
        await asyncio.sleep(self.submit_delay_s)
        return await super().submit(deployment, request, webhook_url=webhook_url)


async def test_a_submit_in_flight_at_the_deadline_is_awaited_and_its_job_cancelled() -> None:
    """A submit still running when the deadline passes is not abandoned: its job is cancelled."""
    a = SlowSubmitBackend(name="a", script=[Hang()], submit_delay_s=0.15)
    router = make(a, timeouts={"deadline_s": 0.05, "attempt_s": 0.05})
    with pytest.raises(DeadlineExceededError):
        await router.generate("a fox", model="flux-dev")
    assert a.submit_count == 1
    assert a.cancelled == ["a-1"]


@dataclass
class FlakyPollBackend(FakeBackend):
    """A FakeBackend whose first poll_failures polls raise a retryable 502."""

    poll_failures: int = 2

    async def poll(self, job: Any) -> Any:
        if self.poll_failures:
            self.poll_failures -= 1
            raise ProviderUnavailableError("502 on poll")
        return await super().poll(job)


async def test_transient_poll_failures_never_resubmit_an_accepted_job() -> None:
    """Retryable poll errors of an accepted job are absorbed: one submission, one attempt."""
    set_testing()
    a = FlakyPollBackend(name="a")
    b = FakeBackend(name="b")
    result = await make(a, b).generate("a fox", model="flux-dev")
    assert result.provider == "a"
    assert a.submit_count == 1
    assert a.poll_failures == 0
    assert outcomes(result.attempts) == [("a", "succeeded")]
    assert b.submit_count == 0


async def test_a_fake_backend_job_with_latency_finishes_under_a_fake_clock() -> None:
    """A Succeed(latency_s=1) job finishes after 1 s of FakeClock time, not an attempt timeout."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[Succeed(latency_s=1.0)])
    result = await make(a, clock=clock).generate("a fox", model="flux-dev")
    assert outcomes(result.attempts) == [("a", "succeeded")]
    assert a.cancelled == []
    assert 1.0 <= sum(clock.sleeps) < 10.0


# -- when everything fails -------------------------------------------------------------------------


async def test_all_providers_failed_holds_every_error_in_attempt_order() -> None:
    """AllProvidersFailedError.errors and .attempts list every failure, in order."""
    set_testing()
    a = FakeBackend(name="a", script=[ProviderUnavailableError("503 a")])
    b = FakeBackend(name="b", script=[FailJob(InvalidRequestError("422 b"))])
    c = FakeBackend(name="c", script=[AuthenticationError("401 c")])
    router = make(a, b, c, retry={"max_attempts": 2})
    with pytest.raises(AllProvidersFailedError) as info:
        await router.generate("a fox", model="flux-dev")
    error = info.value
    assert [(type(e), str(e)) for e in error.errors] == [
        (ProviderUnavailableError, "503 a"),
        (ProviderUnavailableError, "503 a"),
        (InvalidRequestError, "422 b"),
        (AuthenticationError, "401 c"),
    ]
    assert [a.provider for a in error.attempts] == ["a", "a", "b", "c"]
    assert all(a.outcome is AttemptOutcome.FAILED for a in error.attempts)
    assert error.provider == "c"


async def test_a_single_failing_candidate_raises_all_providers_failed() -> None:
    """Even with one candidate the error is AllProvidersFailedError holding that one error."""
    set_testing()
    a = FakeBackend(name="a", script=[JobFailedError("safety filter")])
    with pytest.raises(AllProvidersFailedError) as info:
        await make(a).generate("a fox", model="flux-dev")
    assert len(info.value.errors) == 1
    assert isinstance(info.value.errors[0], JobFailedError)
    assert "a: JobFailedError: safety filter" in str(info.value)
    assert info.value.retryable is False


async def test_failure_errors_carry_the_provider_and_request_id() -> None:
    """Errors collected from attempts name the provider and its request id."""
    set_testing()
    a = FakeBackend(name="a", script=[FailJob(JobFailedError("boom"))])
    with pytest.raises(AllProvidersFailedError) as info:
        await make(a).generate("a fox", model="flux-dev")
    error = info.value.errors[0]
    assert isinstance(error, ProviderError)
    assert (error.provider, error.provider_request_id) == ("a", "a-1")


# -- no route and invalid requests -----------------------------------------------------------------


async def test_unknown_model_is_no_route_with_a_suggestion() -> None:
    """An unknown model raises NoRouteError suggesting the nearest known model."""
    a = FakeBackend(name="a")
    with pytest.raises(NoRouteError, match="did you mean 'flux-dev'"):
        await make(a).generate("a fox", model="flux-devv")
    assert a.submit_count == 0


async def test_every_candidate_excluded_is_no_route_with_the_plan() -> None:
    """When every deployment is excluded, NoRouteError carries the plan with each reason."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = make(a, b, sections={"b": provider("b", price="0.05")})
    with pytest.raises(NoRouteError) as info:
        await router.generate("a fox", model="flux-dev", max_cost_usd="0.001")
    plan = info.value.plan
    assert plan is not None
    assert [(c.provider, c.excluded) for c in plan.candidates] == [
        ("a", "estimated cost 0.01 > max_cost_usd 0.001"),
        ("b", "estimated cost 0.05 > max_cost_usd 0.001"),
    ]
    assert "a: estimated cost 0.01 > max_cost_usd 0.001" in str(info.value)
    assert a.submit_count == b.submit_count == 0


async def test_policy_max_cost_applies_to_every_request() -> None:
    """routing max_cost_usd filters like a request's cap."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = make(a, b, max_cost_usd="0.02", sections={"a": provider("a", price="0.05")})
    assert (await router.generate("a fox", model="flux-dev")).provider == "b"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"prompt": "   "}, "prompt"),
        ({"num_outputs": 0}, "num_outputs"),
        ({"num_outputs": 17}, "num_outputs"),
        ({"seed": -1}, "seed"),
        ({"strategy": "fastest"}, "strategy"),
    ],
    ids=[
        "unknown-field",
        "empty-prompt",
        "zero-outputs",
        "too-many-outputs",
        "negative-seed",
        "bad-strategy",
    ],
)
async def test_bad_fields_raise_invalid_request_naming_the_field(fields: dict[str, Any], field: str) -> None:
    """A bad keyword raises InvalidRequestError naming the field, the pydantic error as its cause."""
    a = FakeBackend(name="a")
    with pytest.raises(InvalidRequestError) as info:
        await make(a).generate(**{"model": "flux-dev", "prompt": "a fox", **fields})
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value.__cause__, ValidationError)
    assert a.submit_count == 0


async def test_width_without_height_is_an_invalid_request() -> None:
    """width without height raises InvalidRequestError saying height is missing."""
    with pytest.raises(InvalidRequestError, match="height is missing") as info:
        await make(FakeBackend(name="a")).generate("a fox", model="flux-dev", width=512)
    assert isinstance(info.value.__cause__, ValidationError)


async def test_width_without_height_names_the_missing_field() -> None:
    """The InvalidRequestError for width without height has field == 'height'."""
    with pytest.raises(InvalidRequestError) as info:
        await make(FakeBackend(name="a")).generate("a fox", model="flux-dev", width=512)
    assert info.value.field == "height"
    assert "(top level)" not in str(info.value)


async def test_misspelt_field_suggests_the_right_one() -> None:
    """An unknown keyword close to a real field suggests it."""
    with pytest.raises(InvalidRequestError, match="did you mean 'width'"):
        await make(FakeBackend(name="a")).generate("a fox", model="flux-dev", widht=512, height=512)


async def test_allow_list_naming_an_unconfigured_provider_is_invalid() -> None:
    """providers=[...] naming a provider the config lacks raises InvalidRequestError(field='providers')."""
    with pytest.raises(InvalidRequestError, match="'nope' not configured") as info:
        await make(FakeBackend(name="a")).generate("a fox", model="flux-dev", providers=["nope"])
    assert info.value.field == "providers"


async def test_a_request_of_the_wrong_type_is_invalid() -> None:
    """A positional request that is neither a GenerationRequest nor a prompt string is rejected."""
    with pytest.raises(InvalidRequestError, match="GenerationRequest or a prompt string"):
        await make(FakeBackend(name="a")).generate(42, model="flux-dev")  # type: ignore[arg-type]


# -- outputs and cost ------------------------------------------------------------------------------


async def test_more_outputs_than_one_call_gives_are_split_across_calls() -> None:
    """num_outputs over max_outputs_per_call: several submissions, seeds offset, outputs merged."""
    a = FakeBackend(name="a")
    router = make(a, sections={"a": provider("a", limits={"max_outputs_per_call": 2})})
    result = await router.generate("a fox", model="flux-dev", num_outputs=5, seed=10)
    assert [(s.num_outputs, s.seed) for s in a.submissions] == [(2, 10), (2, 12), (1, 14)]
    assert len(result.outputs) == 5
    assert len({o.url for o in result.outputs}) == 5
    assert result.cost.amount_usd == Decimal("0.05")
    assert result.provider_request_id == "a-1"


async def test_split_calls_without_a_seed_leave_seeds_unset() -> None:
    """Without a request seed, split calls do not invent one."""
    a = FakeBackend(name="a")
    router = make(a, sections={"a": provider("a", limits={"max_outputs_per_call": 1})})
    await router.generate("a fox", model="flux-dev", num_outputs=2)
    assert [s.seed for s in a.submissions] == [None, None]


async def test_a_failed_split_attempt_cancels_the_jobs_it_already_started() -> None:
    """If one call of a split request fails, the calls already accepted are cancelled."""
    set_testing()
    a = FakeBackend(name="a", script=[Succeed(), ProviderUnavailableError("503")])
    b = FakeBackend(name="b")
    router = make(
        a, b, retry={"max_attempts": 1}, sections={"a": provider("a", limits={"max_outputs_per_call": 1})}
    )
    result = await router.generate("a fox", model="flux-dev", num_outputs=2)
    assert result.provider == "b"
    assert a.cancelled == ["a-1"]


async def test_cost_is_price_per_image_times_outputs() -> None:
    """per_image pricing costs price × outputs, marked estimated, with its basis."""
    router = make(FakeBackend(name="a"), sections={"a": provider("a", price="0.025")})
    result = await router.generate("a fox", model="flux-dev", num_outputs=3)
    assert result.cost.amount_usd == Decimal("0.075")
    assert result.cost.basis is not None
    assert "3 ×" in result.cost.basis


async def test_unknown_price_gives_no_cost_and_a_warning() -> None:
    """A deployment without a price gives cost None (never 0) and a warning."""
    router = make(FakeBackend(name="a"), sections={"a": provider("a", price=None)})
    result = await router.generate("a fox", model="flux-dev")
    assert result.cost.amount_usd is None
    assert any("no price known" in w for w in result.warnings)


async def test_fewer_outputs_than_requested_warn_and_cost_only_what_came_back() -> None:
    """A provider returning fewer outputs adds a warning; cost counts the outputs returned."""
    a = FakeBackend(name="a", script=[Succeed(outputs=1)])
    router = make(a, sections={"a": provider("a", limits={"max_outputs_per_call": 4})})
    result = await router.generate("a fox", model="flux-dev", num_outputs=3)
    assert a.submit_count == 1
    assert len(result.outputs) == 1
    assert any("returned 1 of 3 requested outputs" in w for w in result.warnings)
    assert result.cost.amount_usd == Decimal("0.01")


async def test_result_timings_include_the_total() -> None:
    """timings.total_s is set from the router's clock."""
    result = await make(FakeBackend(name="a")).generate("a fox", model="flux-dev")
    assert result.timings.total_s is not None
    assert result.timings.total_s >= 0


# -- the jobs API ----------------------------------------------------------------------------------


async def test_submit_status_result() -> None:
    """submit() returns a handle pinned to the provider; status() and result() follow the job."""
    a = FakeBackend(name="a")
    router = make(a, FakeBackend(name="b"))
    handle = await router.submit("a fox", model="flux-dev", seed=4)
    assert (handle.provider, handle.endpoint, handle.provider_request_id) == ("a", "a/flux-dev", "a-1")
    assert (await router.status(handle)).state is JobState.SUCCEEDED
    result = await router.result(handle)
    assert result.provider == "a"
    assert result.provider_request_id == "a-1"
    assert len(result.outputs) == 1
    assert result.attempts[-1].outcome is AttemptOutcome.SUCCEEDED
    assert a.submit_count == 1


async def test_submit_falls_back_and_pins_the_handle_to_the_accepting_provider() -> None:
    """A refused submit falls back; the handle names the provider that accepted."""
    set_testing()
    a = FakeBackend(name="a", script=[FailSubmit(ProviderUnavailableError("503"))])
    b = FakeBackend(name="b")
    handle = await make(a, b, retry={"max_attempts": 1}).submit("a fox", model="flux-dev")
    assert handle.provider == "b"
    assert outcomes(handle.attempts) == [("a", "failed")]


async def test_cancel_then_result_raises_job_failed_cancelled() -> None:
    """cancel() stops the job at its provider; result() then raises JobFailedError(state='cancelled')."""
    a = FakeBackend(name="a", script=[Hang()])
    router = make(a)
    handle = await router.submit("a fox", model="flux-dev")
    assert (await router.status(handle)).state is JobState.RUNNING
    await router.cancel(handle)
    assert a.cancelled == ["a-1"]
    assert (await router.status(handle)).state is JobState.CANCELLED
    with pytest.raises(JobFailedError) as info:
        await router.result(handle)
    assert info.value.state == "cancelled"


async def test_result_timeout_raises_deadline_exceeded_without_cancelling() -> None:
    """result(timeout=...) raises DeadlineExceededError when the wait runs out; the job keeps running."""
    clock = FakeClock()
    a = FakeBackend(name="a", script=[Hang()])
    router = make(a, clock=clock)
    handle = await router.submit("a fox", model="flux-dev")
    with pytest.raises(DeadlineExceededError) as info:
        await router.result(handle, timeout=5)
    assert isinstance(info.value, TimeoutError)
    assert a.cancelled == []
    assert (await router.status(handle)).state is JobState.RUNNING


async def test_a_handle_resumes_in_a_new_router_without_resubmitting() -> None:
    """A JobHandle read back from JSON is finished by a new router from the same config, no new submit."""
    cfg = {"version": 1, "providers": {"sim": {"type": "simulated", "latency": SIM_LATENCY}}}
    first = AsyncRouter.from_config(cfg)
    handle = await first.submit("a fox", model="flux-dev", width=64, height=64, seed=5)
    await first.aclose()

    second = AsyncRouter.from_config(cfg)
    backend: Any = second.backends["sim"]

    async def no_submit(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("resuming a handle must not submit again")

    backend.submit = no_submit
    restored = JobHandle.model_validate_json(handle.model_dump_json())
    result = await second.result(restored, timeout=5)
    assert result.provider_request_id == handle.provider_request_id
    assert result.provider == "sim"
    assert [(o.width, o.height) for o in result.outputs] == [(64, 64)]
    assert result.seed == 5


async def test_a_fetched_result_feeds_latency_into_health() -> None:
    """result() of a submitted job records a latency observation for its deployment."""
    router = make(FakeBackend(name="a"))
    handle = await router.submit("a fox", model="flux-dev")
    await router.result(handle)
    assert router.explain("a fox", model="flux-dev").candidates[0].estimated_p95_s is not None


async def test_collecting_a_result_late_does_not_count_the_delay_as_provider_latency() -> None:
    """A job fetched an hour after submission does not record an hour-long latency."""
    router = make(FakeBackend(name="a"))
    handle = await router.submit("a fox", model="flux-dev")
    an_hour_ago = handle.submitted_at - timedelta(hours=1)
    await router.result(handle.model_copy(update={"submitted_at": an_hour_ago}))
    p95 = router.explain("a fox", model="flux-dev").candidates[0].estimated_p95_s
    assert p95 is not None
    assert p95 < 60


async def test_a_split_job_handle_carries_every_call() -> None:
    """A submitted split request's handle holds all its jobs; result() merges their outputs."""
    a = FakeBackend(name="a")
    router = make(a, sections={"a": provider("a", limits={"max_outputs_per_call": 2})})
    handle = await router.submit("a fox", model="flux-dev", num_outputs=3, seed=1)
    assert [j.provider_request_id for j in handle.jobs] == ["a-1", "a-2"]
    assert (await router.status(handle)).state is JobState.SUCCEEDED
    result = await router.result(handle)
    assert len(result.outputs) == 3
    assert result.cost.amount_usd == Decimal("0.03")


async def test_a_handle_for_an_unconfigured_provider_is_a_config_error() -> None:
    """A router that lacks the handle's provider raises ConfigError naming it."""
    handle = await make(FakeBackend(name="a")).submit("a fox", model="flux-dev")
    other = make(FakeBackend(name="b"))
    with pytest.raises(ConfigError, match="'a'"):
        await other.result(handle)


# -- construction and lifecycle --------------------------------------------------------------------


@dataclass
class ClosingBackend(FakeBackend):
    closes: int = 0

    async def aclose(self) -> None:
        self.closes += 1


async def test_async_with_closes_every_backend_once() -> None:
    """Leaving `async with` closes each backend; aclose() again does nothing."""
    a = ClosingBackend(name="a")
    async with make(a) as router:
        await router.generate("a fox", model="flux-dev")
    await router.aclose()
    assert a.closes == 1


def test_backends_for_unconfigured_providers_are_rejected() -> None:
    """Passing a backend for a provider the config lacks is a ConfigError."""
    with pytest.raises(ConfigError, match="zzz"):
        AsyncRouter.from_config(config("a"), backends={"a": FakeBackend(name="a"), "zzz": FakeBackend()})


def test_custom_provider_without_a_backend_is_a_config_error() -> None:
    """A type: custom provider needs a backend instance, and the error says how to pass one."""
    with pytest.raises(ConfigError, match="backends="):
        AsyncRouter.from_config(config("a"))


async def test_a_timed_out_job_that_finished_before_its_cancel_is_used() -> None:
    """Its status answers were lost until the attempt timed out; the cancel came too late
    (the job had finished, and is billed): its result is used, nothing is sent elsewhere."""
    from genrouter import ProviderUnavailableError
    from genrouter.types import JobStatus

    @dataclass
    class LosesStatusAnswers(FakeBackend):
        async def poll(self, job: ProviderJob) -> JobStatus:
            if not self.cancelled:
                raise ProviderUnavailableError("status answer lost", provider=self.name)
            return await super().poll(job)

    a = LosesStatusAnswers(name="a", script=[Succeed(latency_s=0.05)])
    b = FakeBackend(name="b")
    async with router_over(a, b, timeouts={"attempt_s": 0.3, "deadline_s": 5}) as router:
        result = await router.generate("a fox", model="flux-dev")
    assert result.provider == "a"
    assert a.cancelled == ["a-1"]
    assert b.submit_count == 0


def test_routers_on_event_loops_in_several_threads_run_at_once() -> None:
    """Each thread's loop runs its own requests; nothing the lane loop shares trips over another thread."""
    failures: list[BaseException] = []

    def many_requests() -> None:
        async def run() -> None:
            a = FakeBackend(name="a", script=[Succeed(latency_s=0.001)] * 200)
            async with router_over(a) as router:
                await asyncio.gather(*(router.generate("a fox", model="flux-dev") for _ in range(200)))

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=many_requests) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
