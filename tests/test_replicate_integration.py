"""Replicate through AsyncRouter, against the loopback fake Replicate API: cost, fallback,
Retry-After, pinned jobs, the deadline, resumable handles and ambiguous submits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from tests.fakes.replicate import TINY_PNG, TOKEN, FakeReplicate, Plan, problem, rate_limited
from tests.fakes.server import LoopbackServer, serve

from genrouter import (
    AsyncRouter,
    DeadlineExceededError,
    GenerationResult,
    JobFailedError,
    JobHandle,
    JobState,
)
from genrouter.backends.replicate._reconcile import RECONCILE_PAUSE_S
from genrouter.engine._clock import MonotonicClock
from genrouter.testing import FakeBackend, FakeClock

BACKUP_MODELS = {m: {"endpoint": f"backup/{m}", "price": {"per_image": "0.01"}} for m in ("flux-dev", "sdxl")}

Build = Callable[..., AsyncRouter]


def config(url: str, replicate: dict[str, Any] | None = None, **routing: Any) -> dict[str, Any]:
    """Replicate (on the fake) first, then a custom backup provider serving the same models."""
    return {
        "version": 1,
        "providers": {
            "replicate": {"api_token": TOKEN, "base_url": url, **(replicate or {})},
            "backup": {"type": "custom", "models": BACKUP_MODELS},
        },
        "routing": {
            "default": {
                "strategy": "priority",
                "order": ["replicate", "backup"],
                "retry": {"max_attempts": 2, "initial_backoff_s": 0.1},
                **routing,
            }
        },
    }


def outcomes(result: GenerationResult | Any) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome.value) for a in result.attempts]


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with serve(FakeReplicate()) as running:
        yield running


@pytest.fixture(scope="module")
def server_eu() -> Iterator[LoopbackServer]:
    with serve(FakeReplicate()) as running:
        yield running


@pytest.fixture
def fake(server: LoopbackServer) -> Iterator[FakeReplicate]:
    handler = FakeReplicate()
    server.handler = handler
    yield handler
    assert handler.leaked_auth == [], "credentials were sent to the file host"


@pytest.fixture
def backup() -> FakeBackend:
    return FakeBackend(name="backup")


@pytest.fixture
async def make(server: LoopbackServer, backup: FakeBackend) -> AsyncIterator[Build]:
    """Build routers over the fake (FakeClock unless ``clock`` is given); closed after the test."""
    made: list[AsyncRouter] = []

    def build(
        *, replicate: dict[str, Any] | None = None, clock: Any = None, source: Any = None, **routing: Any
    ) -> AsyncRouter:
        router = AsyncRouter.from_config(
            source or config(server.url, replicate, **routing),
            backends={"backup": backup},
            clock=clock or FakeClock(),
        )
        made.append(router)
        return router

    yield build
    for router in made:
        await router.aclose()


# -- the happy path and cost ---------------------------------------------------------------------------


async def test_flux_result_is_priced_per_output(fake: FakeReplicate, make: Build) -> None:
    """A flux-dev result from Replicate costs per_image × outputs, with the fake's timings."""
    result = await make().generate("a fox", model="flux-dev", num_outputs=2, seed=7)
    assert result.provider == "replicate"
    assert outcomes(result) == [("replicate", "succeeded")]
    assert result.cost.amount_usd == Decimal("0.05")
    assert [(a.width, a.height, a.content_type) for a in result.outputs] == [(1024, 1024, "image/webp")] * 2
    assert (result.timings.queued_s, result.timings.running_s) == (0.5, 1.25)
    assert result.seed == 7
    assert fake.creations["a fox"] == 1


async def test_sdxl_is_priced_by_predict_time(fake: FakeReplicate, make: Build) -> None:
    """sdxl is billed per GPU second: the cost is the catalog rate × metrics.predict_time."""
    fake.plans["a castle"] = Plan(predict_time=4.0)
    result = await make().generate("a castle", model="sdxl", width=768, height=768)
    assert result.timings.running_s == 4.0
    assert result.cost.amount_usd == Decimal("0.0039")
    assert (result.outputs[0].width, result.outputs[0].height) == (768, 768)


async def test_outputs_download_without_credentials(fake: FakeReplicate, make: Build) -> None:
    """Output files are read from the file host with no Authorization header."""
    result = await make().generate("a fox", model="flux-dev", num_outputs=2)
    assert [await a.aread() for a in result.outputs] == [TINY_PNG, TINY_PNG]
    assert len(fake.files_served) == 2
    assert fake.leaked_auth == []


async def test_prefer_wait_returns_the_result_without_polling(fake: FakeReplicate, make: Build) -> None:
    """With prefer_wait_s, a create that finishes in time needs no GET at all."""
    result = await make(replicate={"prefer_wait_s": 5}).generate("a fox", model="flux-dev")
    assert result.outputs
    assert fake.creates[0].header("prefer") == "wait=5"
    assert sum(fake.gets.values()) == 0


async def test_an_expired_prefer_wait_goes_on_by_polling(fake: FakeReplicate, make: Build) -> None:
    """A create whose wait expires answers starting; the router then polls the same prediction."""
    fake.plans["a fox"] = Plan(wait="expire", hold_s=0.05)
    result = await make(replicate={"prefer_wait_s": 5}).generate("a fox", model="flux-dev")
    assert result.provider == "replicate"
    assert fake.creations["a fox"] == 1
    assert sum(fake.gets.values()) == 3


async def test_data_uri_outputs_are_read_in_memory(fake: FakeReplicate, make: Build) -> None:
    """data: URI outputs (sync mode's small files) come back as PNG artifacts readable without a download."""
    fake.plans["a fox"] = Plan(shape="data")
    result = await make().generate("a fox", model="flux-dev", num_outputs=2)
    assert [a.content_type for a in result.outputs] == ["image/png", "image/png"]
    assert await result.outputs[0].aread() == TINY_PNG
    assert fake.files_served == []


async def test_a_single_url_output_is_one_artifact(fake: FakeReplicate, make: Build) -> None:
    """flux-1.1-pro's single URL output becomes the one artifact of the result."""
    fake.plans["a fox"] = Plan(shape="single")
    result = await make().generate("a fox", model="flux-pro")
    assert [a.url.rsplit("/", 1)[1] for a in result.outputs] == ["out-0.webp"]
    assert result.cost.amount_usd == Decimal("0.04")


async def test_webhook_submissions_ask_for_the_completed_event(fake: FakeReplicate, make: Build) -> None:
    """router.submit(webhook_url=...) sends the webhook with webhook_events_filter ["completed"]."""
    await make().submit("a fox", model="flux-dev", webhook_url="https://app.example/webhooks/replicate")
    body = fake.creates[0].json()
    assert body["webhook"] == "https://app.example/webhooks/replicate"
    assert body["webhook_events_filter"] == ["completed"]


# -- failures, retries and fallback ---------------------------------------------------------------------


async def test_server_errors_on_create_fall_back_after_retries(
    fake: FakeReplicate, make: Build, backup: FakeBackend
) -> None:
    """503s on create are retried on Replicate (max_attempts), then the backup serves the request."""
    fake.create_faults = [problem(503, "Service Unavailable"), problem(503, "Service Unavailable")]
    result = await make().generate("a fox", model="flux-dev")
    assert result.provider == "backup"
    assert outcomes(result) == [("replicate", "failed"), ("replicate", "failed"), ("backup", "succeeded")]
    assert "ProviderUnavailableError" in str(result.attempts[0].error)
    assert sum(fake.creations.values()) == 0


@pytest.mark.parametrize("retry_after", ["2", None], ids=["header", "detail-text"])
async def test_retry_after_is_honoured_before_retrying(
    fake: FakeReplicate, make: Build, retry_after: str | None
) -> None:
    """A 429 waits Retry-After (or the detail's "~2s") before the retry on Replicate."""
    clock = FakeClock()
    fake.create_faults = [rate_limited(retry_after)]
    result = await make(clock=clock).generate("a fox", model="flux-dev")
    assert outcomes(result) == [("replicate", "failed"), ("replicate", "succeeded")]
    assert 2.0 in clock.sleeps
    assert "RateLimitedError" in str(result.attempts[0].error)


async def test_invalid_input_is_not_retried_on_replicate(
    fake: FakeReplicate, make: Build, backup: FakeBackend
) -> None:
    """A 422 is not retried on Replicate; the plan moves on, and the error names the field."""
    options = {"replicate": {"aspect_ratio": "7:3"}}
    result = await make().generate("a fox", model="flux-dev", provider_options=options)
    assert outcomes(result) == [("replicate", "failed"), ("backup", "succeeded")]
    assert fake.create_count == 1
    assert "InvalidRequestError" in str(result.attempts[0].error)
    assert "aspect_ratio" in str(result.attempts[0].error)


async def test_transient_poll_failures_never_resubmit(
    fake: FakeReplicate, make: Build, backup: FakeBackend
) -> None:
    """GETs that 503 a few times are absorbed: the one prediction completes, nothing is resubmitted."""
    fake.plans["a fox"] = Plan(get_faults=(503, 503, 503))
    result = await make().generate("a fox", model="flux-dev")
    assert result.provider == "replicate"
    assert outcomes(result) == [("replicate", "succeeded")]
    assert fake.creations["a fox"] == 1
    assert backup.submit_count == 0
    assert list(fake.gets.values()) == [6]


async def test_failed_prediction_falls_back(fake: FakeReplicate, make: Build, backup: FakeBackend) -> None:
    """A model error is not retried on Replicate; the backup serves the request."""
    fake.plans["a fox"] = Plan(statuses=("starting", "failed"), error="CUDA out of memory")
    result = await make().generate("a fox", model="flux-dev")
    assert outcomes(result) == [("replicate", "failed"), ("backup", "succeeded")]
    assert "CUDA out of memory" in str(result.attempts[0].error)
    assert fake.creations["a fox"] == 1


async def test_interrupted_prediction_is_retried_on_replicate(fake: FakeReplicate, make: Build) -> None:
    """A failure Replicate calls transient ("please retry") is retried on Replicate."""
    fake.next_plans = [Plan(statuses=("failed",), error="Prediction interrupted; please retry (code: PA)")]
    result = await make().generate("a fox", model="flux-dev")
    assert outcomes(result) == [("replicate", "failed"), ("replicate", "succeeded")]
    assert fake.creations["a fox"] == 2


async def test_a_create_that_lost_its_answer_is_found_by_listing(fake: FakeReplicate, make: Build) -> None:
    """A create whose answer was lost is found in the prediction list and kept: not re-POSTed."""
    fake.create_faults = ["drop_after_create"]
    result = await make(retry={"max_attempts": 3}).generate("a fox", model="flux-dev")
    assert outcomes(result) == [("replicate", "succeeded")]
    assert fake.create_count == 1
    assert len(fake.predictions) == 1
    assert result.provider_request_id == next(iter(fake.predictions))
    assert any("found its prediction by listing" in w for w in result.warnings)


async def test_an_unmatched_create_is_never_sent_again(
    fake: FakeReplicate, make: Build, backup: FakeBackend
) -> None:
    """A lost create found in no listing (two complete looks) stays outcome-unknown: it fails over."""
    fake.create_faults = ["drop"]
    result = await make(retry={"max_attempts": 3}).generate("a fox", model="flux-dev")
    assert outcomes(result) == [("replicate", "failed"), ("backup", "succeeded")]
    assert str(result.attempts[0].error).startswith("SubmitOutcomeUnknownError")
    assert fake.create_count == 1
    assert fake.lists == 2


async def test_reconciling_a_lost_create_waits_between_looks_on_the_routers_clock(
    fake: FakeReplicate, make: Build, backup: FakeBackend
) -> None:
    """The pause before the confirming second look is a sleep on the router's FakeClock."""
    fake.create_faults = ["drop"]
    clock = FakeClock()
    result = await make(retry={"max_attempts": 3}, clock=clock).generate("a fox", model="flux-dev")
    assert outcomes(result) == [("replicate", "failed"), ("backup", "succeeded")]
    assert fake.lists == 2
    assert RECONCILE_PAUSE_S in clock.sleeps


async def test_when_listing_fails_too_the_create_is_not_sent_again(
    fake: FakeReplicate, make: Build, backup: FakeBackend
) -> None:
    """Lost answer and failing listings: the outcome stays unknown, so it fails over instead."""
    fake.create_faults = ["drop_after_create"]
    fake.list_faults = [503] * 4
    result = await make(retry={"max_attempts": 3}).generate("a fox", model="flux-dev")
    assert outcomes(result) == [("replicate", "failed"), ("backup", "succeeded")]
    assert str(result.attempts[0].error).startswith("SubmitOutcomeUnknownError")
    assert fake.create_count == 1
    assert len(fake.predictions) == 1  # the orphan exists: why it was not sent again


async def test_nsfw_dropped_outputs_come_back_fewer_with_a_warning(fake: FakeReplicate, make: Build) -> None:
    """When the safety filter drops images, the result has fewer outputs, a warning, and their cost."""
    fake.plans["a fox"] = Plan(outputs=1)
    result = await make().generate("a fox", model="flux-dev", num_outputs=3)
    assert len(result.outputs) == 1
    assert any("returned 1 of 3 requested outputs" in w for w in result.warnings)
    assert result.cost.amount_usd == Decimal("0.025")


async def test_a_second_replicate_provider_takes_over(
    fake: FakeReplicate, server: LoopbackServer, server_eu: LoopbackServer, make: Build
) -> None:
    """Two replicate-typed providers: the second serves when the first fails, with its own options."""
    eu = FakeReplicate()
    server_eu.handler = eu
    fake.create_faults = [problem(500, "Internal server error")] * 2
    source = config(server.url, order=["replicate", "replicate-eu", "backup"])
    source["providers"]["replicate-eu"] = {"type": "replicate", "api_token": TOKEN, "base_url": server_eu.url}
    options = {"replicate-eu": {"go_fast": False}}
    result = await make(source=source).generate("a fox", model="flux-dev", provider_options=options)
    assert result.provider == "replicate-eu"
    assert outcomes(result) == [
        ("replicate", "failed"),
        ("replicate", "failed"),
        ("replicate-eu", "succeeded"),
    ]
    assert "go_fast" not in fake.creates[0].json()["input"]
    assert eu.creates[0].json()["input"]["go_fast"] is False


# -- cancellation, the deadline and resumable jobs ---------------------------------------------------------


async def test_deadline_cancels_the_prediction_at_replicate(fake: FakeReplicate, make: Build) -> None:
    """When the request deadline passes, the outstanding prediction is cancelled at Replicate."""
    fake.default_plan = Plan(statuses=("starting", "processing"))
    router = make(clock=MonotonicClock())
    with pytest.raises(DeadlineExceededError):
        await router.generate("a fox", model="flux-dev", deadline_s=0.3)
    await router.aclose()  # closing lets a cancel still in flight land
    [prediction_id] = fake.predictions
    assert fake.cancels == [prediction_id]
    assert fake.status_of(prediction_id) == "canceled"
    assert fake.creates[0].header("cancel-after") == "5s"


async def test_aborted_prediction_is_cancelled(fake: FakeReplicate, make: Build) -> None:
    """A prediction Replicate aborted reads as cancelled, and its result raises state cancelled."""
    fake.plans["a fox"] = Plan(statuses=("aborted",))
    router = make()
    handle = await router.submit("a fox", model="flux-dev")
    assert (await router.status(handle)).state is JobState.CANCELLED
    with pytest.raises(JobFailedError) as caught:
        await router.result(handle)
    assert caught.value.state == "cancelled"


async def test_job_handle_resumes_in_a_new_router(fake: FakeReplicate, make: Build) -> None:
    """A JobHandle read back from JSON is finished by a new router, without a second create."""
    handle = await make().submit("a fox", model="flux-dev", num_outputs=2)
    restored = JobHandle.model_validate_json(handle.model_dump_json())
    result = await make().result(restored)
    assert len(result.outputs) == 2
    assert result.provider_request_id == handle.provider_request_id
    assert fake.creations["a fox"] == 1
