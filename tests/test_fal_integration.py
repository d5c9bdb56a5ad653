"""The fal backend through AsyncRouter, against loopback fakes of fal's queue API (real HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from fakes.fal import Behaviour, FakeFal, start_server
from fakes.server import LoopbackServer
from genrouter import (
    AllProvidersFailedError,
    AsyncRouter,
    AttemptOutcome,
    DeadlineExceededError,
    GenerationResult,
    InvalidRequestError,
    JobHandle,
)
from genrouter.testing import FakeClock, set_testing

KEY_A = "fal-key-a-0123456789"
KEY_B = "fal-key-b-0123456789"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LoopbackServer, LoopbackServer]]:
    a, b = start_server(), start_server()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def fal_a(servers: tuple[LoopbackServer, LoopbackServer]) -> FakeFal:
    fake = FakeFal(api_key=KEY_A, behaviour=Behaviour(queue_polls=1, progress_polls=1))
    servers[0].handler = fake
    return fake


@pytest.fixture
def fal_b(servers: tuple[LoopbackServer, LoopbackServer]) -> FakeFal:
    fake = FakeFal(api_key=KEY_B, behaviour=Behaviour(queue_polls=0, progress_polls=1))
    servers[1].handler = fake
    return fake


def config(
    servers: tuple[LoopbackServer, LoopbackServer], *, second: bool = True, **policy: Any
) -> dict[str, Any]:
    providers: dict[str, Any] = {"fal": {"api_key": KEY_A, "base_url": servers[0].url}}
    order = ["fal"]
    if second:
        providers["fal-b"] = {"type": "fal", "api_key": KEY_B, "base_url": servers[1].url}
        order.append("fal-b")
    return {
        "version": 1,
        "providers": providers,
        "routing": {"default": {"strategy": "priority", "order": order, **policy}},
    }


@pytest.fixture
def fast() -> None:
    """No backoff, no Retry-After sleeps, no poll pauses."""
    set_testing()


def outcomes(result: GenerationResult) -> list[tuple[str, AttemptOutcome]]:
    return [(a.provider, a.outcome) for a in result.attempts]


async def test_happy_path_costs_from_actual_dimensions(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fast: None
) -> None:
    """flux-dev at 1024×1024 is 2 MP (rounded up) × $0.025 = $0.05, and the PNG downloads."""
    async with AsyncRouter.from_config(config(servers, second=False)) as router:
        result = await router.generate("a red fox", model="flux-dev", width=1024, height=1024, seed=7)
    (image,) = result.outputs
    assert (image.width, image.height, result.seed) == (1024, 1024, 7)
    assert result.cost.amount_usd == Decimal("0.025")
    assert (result.provider, result.endpoint) == ("fal", "fal-ai/flux/dev")
    assert fal_a.job_for("a red fox").input["image_size"] == "square_hd"
    assert (await image.aread()).startswith(b"\x89PNG")


async def test_503s_fall_back_to_the_second_provider(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fal_b: FakeFal, fast: None
) -> None:
    """A fal answering 503 is retried up to max_attempts, then the second provider serves."""
    fal_a.behaviour = Behaviour(submit_status=503)
    async with AsyncRouter.from_config(config(servers, retry={"max_attempts": 2})) as router:
        result = await router.generate("a red fox", model="flux-dev")
    assert result.provider == "fal-b"
    assert outcomes(result) == [
        ("fal", AttemptOutcome.FAILED),
        ("fal", AttemptOutcome.FAILED),
        ("fal-b", AttemptOutcome.SUCCEEDED),
    ]
    assert result.attempts[0].error is not None
    assert result.attempts[0].error.startswith("ProviderUnavailableError")
    assert (fal_a.submit_count(), fal_b.submit_count()) == (2, 1)


async def test_retry_after_is_honoured(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal
) -> None:
    """A 429 with Retry-After: 3 makes the router wait 3 s (on its clock) before submitting again."""
    fal_a.behaviour = Behaviour(submit_errors=[429], retry_after="3", queue_polls=0, progress_polls=0)
    clock = FakeClock()
    async with AsyncRouter.from_config(config(servers, second=False), clock=clock) as router:
        result = await router.generate("a red fox", model="flux-dev")
    assert 3.0 in clock.sleeps
    assert outcomes(result) == [("fal", AttemptOutcome.FAILED), ("fal", AttemptOutcome.SUCCEEDED)]
    assert fal_a.submit_count() == 2


async def test_422_is_not_retried_on_the_same_provider(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fal_b: FakeFal, fast: None
) -> None:
    """fal's 422 is an InvalidRequestError: no second submit to fal; the plan moves on."""
    fal_a.behaviour = Behaviour(submit_status=422)
    async with AsyncRouter.from_config(config(servers)) as router:
        result = await router.generate("a red fox", model="flux-dev")
    assert result.provider == "fal-b"
    assert fal_a.submit_count() == 1
    assert result.attempts[0].error is not None
    assert result.attempts[0].error.startswith("InvalidRequestError")


async def test_transient_status_failures_never_resubmit(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fal_b: FakeFal, fast: None
) -> None:
    """An accepted job whose status polls answer 503 a few times completes with one submit in total."""
    fal_a.behaviour = Behaviour(status_failures=3)
    async with AsyncRouter.from_config(config(servers)) as router:
        result = await router.generate("a red fox", model="flux-dev")
    assert result.provider == "fal"
    assert outcomes(result) == [("fal", AttemptOutcome.SUCCEEDED)]
    assert (fal_a.submit_count(), fal_b.submit_count()) == (1, 0)


async def test_failed_job_falls_back(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fal_b: FakeFal, fast: None
) -> None:
    """A job that COMPLETED with a runner error is a retryable failure: retried, then the next provider."""
    fal_a.behaviour = Behaviour(error="Runner disconnected", error_type="runner_disconnected")
    async with AsyncRouter.from_config(config(servers, retry={"max_attempts": 2})) as router:
        result = await router.generate("a red fox", model="flux-dev")
    assert result.provider == "fal-b"
    assert [a.outcome for a in result.attempts] == [
        AttemptOutcome.FAILED,
        AttemptOutcome.FAILED,
        AttemptOutcome.SUCCEEDED,
    ]
    assert all((a.error or "").startswith("JobFailedError") for a in result.attempts[:2])


async def test_content_failure_is_not_retried_on_fal(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fal_b: FakeFal, fast: None
) -> None:
    """A job that failed on its content is not retried on fal; the next provider serves."""
    fal_a.behaviour = Behaviour(error="prompt flagged by the content checker")
    async with AsyncRouter.from_config(config(servers)) as router:
        result = await router.generate("a red fox", model="flux-dev")
    assert (result.provider, fal_a.submit_count()) == ("fal-b", 1)


async def test_deadline_cancels_the_outstanding_job(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal
) -> None:
    """When the deadline passes, the router PUTs cancel for the hanging fal job, then raises."""
    fal_a.behaviour = Behaviour(hang=True)
    async with AsyncRouter.from_config(config(servers, second=False)) as router:
        with pytest.raises(DeadlineExceededError):
            await router.generate("a red fox", model="flux-dev", deadline_s=0.3)
        # The router may still be finishing the cancel it started when the attempt's own
        # wait ran out at the same instant: give it its grace before closing the client.
        for _ in range(200):
            if fal_a.cancels:
                break
            await asyncio.sleep(0.005)
    assert fal_a.cancels == [fal_a.job_for("a red fox").request_id]


async def test_job_handle_resumes_in_a_new_router_without_resubmitting(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fast: None
) -> None:
    """A JobHandle read back from JSON is finished by a second router; fal saw one submit."""
    cfg = config(servers, second=False)
    async with AsyncRouter.from_config(cfg) as first:
        handle = await first.submit("a red fox", model="flux-dev", width=1024, height=768)
    stored = handle.model_dump_json()
    async with AsyncRouter.from_config(cfg) as second:
        result = await second.result(JobHandle.model_validate_json(stored), timeout=10)
    assert (result.outputs[0].width, result.outputs[0].height) == (1024, 768)
    assert result.provider_request_id == handle.provider_request_id
    assert fal_a.submit_count() == 1


async def test_dropped_submit_fails_over_without_reposting(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fal_b: FakeFal, fast: None
) -> None:
    """A submit dropped after fal accepted it is SubmitOutcomeUnknown: never re-POSTed to that fal."""
    fal_a.behaviour = Behaviour(drop_submit=True)
    async with AsyncRouter.from_config(config(servers)) as router:
        result = await router.generate("a red fox", model="flux-dev")
    assert result.provider == "fal-b"
    assert result.attempts[0].error is not None
    assert result.attempts[0].error.startswith("SubmitOutcomeUnknownError")
    assert (fal_a.submit_count(), len(fal_a.jobs)) == (1, 1)


async def test_result_422_after_completion_fails_as_invalid_request(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fast: None
) -> None:
    """A job that completes and then answers 422 on its result ends as an InvalidRequestError, once."""
    fal_a.behaviour = Behaviour(result_status=422)
    async with AsyncRouter.from_config(config(servers, second=False)) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.generate("a red fox", model="flux-dev")
    (error,) = info.value.errors
    assert isinstance(error, InvalidRequestError)
    assert fal_a.submit_count() == 1


async def test_kling_duration_snaps_and_costs_what_was_made(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fast: None
) -> None:
    """kling asked for 7 s gets "5" (with a warning on the result) and costs 5 s × $0.045."""
    async with AsyncRouter.from_config(config(servers, second=False)) as router:
        result = await router.generate("a red fox", model="kling-video", duration_s=7, aspect_ratio="9:16")
    sent = fal_a.job_for("a red fox").input
    assert (sent["duration"], sent["aspect_ratio"]) == ("5", "9:16")
    assert result.outputs[0].duration_s == 5.0
    assert result.cost.amount_usd == Decimal("0.225")
    assert any("became 5" in w for w in result.warnings)


async def test_webhook_url_reaches_fal(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fast: None
) -> None:
    """router.submit(webhook_url=...) registers the webhook with fal's fal_webhook parameter."""
    hook = "https://app.example/webhooks/fal?tenant=7"
    async with AsyncRouter.from_config(config(servers, second=False)) as router:
        await router.submit("a red fox", model="flux-dev", webhook_url=hook)
    assert fal_a.job_for("a red fox").webhook == hook


async def test_wrong_key_disables_the_provider(
    servers: tuple[LoopbackServer, LoopbackServer], fal_a: FakeFal, fal_b: FakeFal, fast: None
) -> None:
    """A 401 from fal is not retried there: the second provider serves."""
    fal_a.api_key = "fal-some-other-key-000"
    async with AsyncRouter.from_config(config(servers)) as router:
        result = await router.generate("a red fox", model="flux-dev")
    assert result.provider == "fal-b"
    assert (fal_a.unauthorised, fal_a.submit_count()) == (1, 0)
