"""The fal backend against a scripted fal queue API (respx), plus the Backend contract on a loopback fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from fakes.fal import Behaviour, FakeFal, start_server
from fakes.server import LoopbackServer
from genrouter import (
    AsyncRouter,
    AuthenticationError,
    GenerationRequest,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    JobState,
    ProviderError,
    ProviderJob,
    ProviderUnavailableError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)
from genrouter.backends._http import MAX_CONCURRENT_REQUESTS, request_slots
from genrouter.backends.base import Backend
from genrouter.backends.fal import FalBackend
from genrouter.catalog import Catalog, Deployment, build_deployment
from genrouter.testing import BackendContract
from genrouter.util._png import placeholder_png

BASE = "https://queue.fal.run"
KEY = "fal-SENTINEL-secret-123456"
FLUX = f"{BASE}/fal-ai/flux/requests/req-1"


def deployment(model: str = "flux-dev", provider: str = "fal", **params: str | None) -> Deployment:
    catalog = Catalog.load()
    built = build_deployment(
        provider=provider,
        provider_type="fal",
        model=model,
        entry=catalog.entries_for("fal")[model],
        spec=catalog.models[model],
    )
    return replace(built, params={**built.params, **params}) if params else built


def request(model: str = "flux-dev", **fields: Any) -> GenerationRequest:
    return GenerationRequest.model_validate({"model": model, "prompt": "a red fox", **fields})


def accepted(app: str = "fal-ai/flux", rid: str = "req-1", *, urls: bool = True) -> httpx.Response:
    body: dict[str, Any] = {"status": "IN_QUEUE", "request_id": rid, "queue_position": 0}
    if urls:
        base = f"{BASE}/{app}/requests/{rid}"
        body |= {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}
    return httpx.Response(200, json=body)


def completed(**extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"status": "COMPLETED", "logs": None, "metrics": {}, **extra})


FLUX_OUTPUT = {
    "images": [
        {
            "url": "https://v3.fal.media/files/fox.jpg",
            "width": 1024,
            "height": 768,
            "content_type": "image/jpeg",
        }
    ],
    "seed": 7,
    "has_nsfw_concepts": [False],
    "timings": {"inference": 2.5},
}


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def backend() -> AsyncIterator[FalBackend]:
    fal = FalBackend(name="fal", settings={"api_key": KEY})
    yield fal
    await fal.aclose()


async def submit(
    backend: FalBackend,
    api: respx.MockRouter,
    dep: Deployment | None = None,
    req: GenerationRequest | None = None,
    **kwargs: Any,
) -> tuple[dict[str, Any], ProviderJob]:
    """Submit through a mocked POST; return the JSON fal received and the job."""
    dep = dep or deployment()
    route = api.post(f"/{dep.endpoint}").mock(return_value=accepted("/".join(dep.endpoint.split("/")[:2])))
    job = await backend.submit(dep, req or request(dep.model), **kwargs)
    return json.loads(route.calls.last.request.content), job


async def finished_job(backend: FalBackend, api: respx.MockRouter, **status: Any) -> ProviderJob:
    """A flux job whose status poll answers COMPLETED with ``status``."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(return_value=completed(**status))
    return job


# -- the queue state machine ------------------------------------------------------------


async def test_job_moves_through_queue_progress_and_completed(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """Polls map IN_QUEUE → queued (with position), IN_PROGRESS → running (logs), COMPLETED → succeeded."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(
        side_effect=[
            httpx.Response(202, json={"status": "IN_QUEUE", "queue_position": 2}),
            httpx.Response(202, json={"status": "IN_PROGRESS", "logs": [{"message": "step 1/28"}]}),
            completed(metrics={"inference_time": 1.5}),
        ]
    )
    first, second, third = [await backend.poll(job) for _ in range(3)]
    assert (first.state, first.queue_position) == (JobState.QUEUED, 2)
    assert (second.state, second.logs) == (JobState.RUNNING, ["step 1/28"])
    assert third.state is JobState.SUCCEEDED


async def test_status_is_polled_with_logs(backend: FalBackend, api: respx.MockRouter) -> None:
    """The status GET asks for logs (``?logs=1``)."""
    _, job = await submit(backend, api)
    route = api.get(f"{FLUX}/status").mock(return_value=completed())
    await backend.poll(job)
    assert route.calls.last.request.url.params["logs"] == "1"


async def test_result_becomes_artifacts_with_dimensions_seed_and_timing(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """fetch_result turns fal's images into artifacts with size, type, nsfw flag, seed and inference time."""
    job = await finished_job(backend, api, metrics={"inference_time": 1.5})
    await backend.poll(job)
    api.get(FLUX).mock(return_value=httpx.Response(200, json=FLUX_OUTPUT))
    result = await backend.fetch_result(job)
    (image,) = result.outputs
    assert (image.url, image.width, image.height) == ("https://v3.fal.media/files/fox.jpg", 1024, 768)
    assert (image.content_type, image.nsfw) == ("image/jpeg", False)
    assert (result.seed, result.timings.running_s, result.timings.queued_s) == (7, 1.5, None)
    assert (result.provider, result.provider_request_id, result.raw) == ("fal", "req-1", FLUX_OUTPUT)


async def test_inference_time_falls_back_to_output_timings(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """Without status metrics, running_s comes from the output's ``timings.inference``."""
    job = await finished_job(backend, api)
    api.get(FLUX).mock(return_value=httpx.Response(200, json=FLUX_OUTPUT))
    assert (await backend.fetch_result(job)).timings.running_s == 2.5


async def test_terminal_status_is_remembered(backend: FalBackend, api: respx.MockRouter) -> None:
    """Once a job completed, polling again asks fal nothing more."""
    job = await finished_job(backend, api)
    route = api.routes[-1]
    await backend.poll(job)
    await backend.poll(job)
    assert route.call_count == 1


async def test_fetch_without_a_prior_poll_checks_the_status(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """A resumed job (no poll seen by this instance) is checked before its result is fetched."""
    job = await finished_job(backend, api, error="boom", error_type="runner_disconnected")
    with pytest.raises(JobFailedError):
        await backend.fetch_result(job)


async def test_fetch_of_an_unfinished_job_is_a_retryable_job_error(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """fetch_result before completion raises, and never GETs the result."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(
        return_value=httpx.Response(202, json={"status": "IN_PROGRESS", "logs": None})
    )
    result_route = api.get(FLUX)
    with pytest.raises(JobFailedError) as info:
        await backend.fetch_result(job)
    assert info.value.retryable
    assert not result_route.called


async def test_recraft_output_leaves_dimensions_unknown(backend: FalBackend, api: respx.MockRouter) -> None:
    """Recraft reports no width/height: the artifact's stay None."""
    dep = deployment("recraft-v3")
    api.post("/fal-ai/recraft-v3").mock(return_value=accepted("fal-ai/recraft-v3"))
    job = await backend.submit(dep, request("recraft-v3"))
    api.get(f"{BASE}/fal-ai/recraft-v3/requests/req-1/status").mock(return_value=completed())
    output = {"images": [{"url": "https://v3.fal.media/files/r.webp", "content_type": "image/webp"}]}
    api.get(f"{BASE}/fal-ai/recraft-v3/requests/req-1").mock(return_value=httpx.Response(200, json=output))
    (image,) = (await backend.fetch_result(job)).outputs
    assert (image.width, image.height, image.content_type) == (None, None, "image/webp")


async def test_content_type_comes_from_the_url_when_fal_omits_it(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """An image without content_type gets the type its URL names."""
    job = await finished_job(backend, api)
    output = {"images": [{"url": "https://v3.fal.media/files/a.png", "width": 8, "height": 8}]}
    api.get(FLUX).mock(return_value=httpx.Response(200, json=output))
    assert (await backend.fetch_result(job)).outputs[0].content_type == "image/png"


async def test_video_output_carries_the_duration_sent(backend: FalBackend, api: respx.MockRouter) -> None:
    """A kling video artifact has the (snapped) duration genrouter asked for."""
    dep = deployment("kling-video")
    _, job = await submit(backend, api, dep, request("kling-video", duration_s=9))
    app = f"{BASE}/fal-ai/kling-video/requests/req-1"
    api.get(f"{app}/status").mock(return_value=completed())
    output = {"video": {"url": "https://v3.fal.media/files/v.mp4", "content_type": "video/mp4"}}
    api.get(app).mock(return_value=httpx.Response(200, json=output))
    (video,) = (await backend.fetch_result(job)).outputs
    assert (video.kind.value, video.duration_s, video.content_type) == ("video", 10.0, "video/mp4")


async def test_an_output_without_media_is_a_job_failure(backend: FalBackend, api: respx.MockRouter) -> None:
    """A completed job whose output holds no images raises JobFailedError, not an empty result."""
    job = await finished_job(backend, api)
    api.get(FLUX).mock(return_value=httpx.Response(200, json={"images": [], "seed": 1}))
    with pytest.raises(JobFailedError, match="without any media"):
        await backend.fetch_result(job)


# -- submit errors ------------------------------------------------------------------------


async def test_429_with_retry_after_is_rate_limited(backend: FalBackend, api: respx.MockRouter) -> None:
    """A 429 raises RateLimitedError with the Retry-After seconds."""
    api.post("/fal-ai/flux/dev").mock(
        return_value=httpx.Response(429, json={"detail": "Too many requests"}, headers={"Retry-After": "7"})
    )
    with pytest.raises(RateLimitedError) as info:
        await backend.submit(deployment(), request())
    assert (info.value.retry_after, info.value.retryable, info.value.status_code) == (7.0, True, 429)


async def test_429_without_retry_after_has_no_wait(backend: FalBackend, api: respx.MockRouter) -> None:
    """fal usually sends no Retry-After: retry_after stays None and the router backs off itself."""
    api.post("/fal-ai/flux/dev").mock(return_value=httpx.Response(429, json={"detail": "Too many requests"}))
    with pytest.raises(RateLimitedError) as info:
        await backend.submit(deployment(), request())
    assert info.value.retry_after is None


async def test_503_is_retryable_unavailable(backend: FalBackend, api: respx.MockRouter) -> None:
    """A 503 raises a retryable ProviderUnavailableError naming fal's error type."""
    api.post("/fal-ai/flux/dev").mock(
        return_value=httpx.Response(
            503, json={"detail": "No runner", "error_type": "runner_scheduling_failure"}
        )
    )
    with pytest.raises(ProviderUnavailableError) as info:
        await backend.submit(deployment(), request())
    assert info.value.retryable
    assert "runner_scheduling_failure" in str(info.value)


async def test_x_fal_retryable_header_decides(backend: FalBackend, api: respx.MockRouter) -> None:
    """``X-Fal-Retryable: false`` makes a 503 not retryable."""
    api.post("/fal-ai/flux/dev").mock(
        return_value=httpx.Response(503, json={"detail": "nope"}, headers={"X-Fal-Retryable": "false"})
    )
    with pytest.raises(ProviderUnavailableError) as info:
        await backend.submit(deployment(), request())
    assert not info.value.retryable


async def test_error_type_header_is_read(backend: FalBackend, api: respx.MockRouter) -> None:
    """``X-Fal-Error-Type`` names the error when the body does not; runner_server_error is not retryable."""
    api.post("/fal-ai/flux/dev").mock(
        return_value=httpx.Response(
            500, json={"detail": "crash"}, headers={"X-Fal-Error-Type": "runner_server_error"}
        )
    )
    with pytest.raises(ProviderUnavailableError) as info:
        await backend.submit(deployment(), request())
    assert not info.value.retryable
    assert "runner_server_error" in str(info.value)


async def test_504_user_start_timeout_is_not_retryable(backend: FalBackend, api: respx.MockRouter) -> None:
    """A 504 with ``X-Fal-Request-Timeout-Type: user`` is fal's start deadline: not retried."""
    api.post("/fal-ai/flux/dev").mock(
        return_value=httpx.Response(
            504,
            json={"detail": "Request timed out", "error_type": "request_timeout"},
            headers={"X-Fal-Request-Timeout-Type": "user"},
        )
    )
    with pytest.raises(ProviderUnavailableError) as info:
        await backend.submit(deployment(), request())
    assert not info.value.retryable
    assert not isinstance(info.value, SubmitOutcomeUnknownError)


async def test_gateway_504_on_submit_is_outcome_unknown(backend: FalBackend, api: respx.MockRouter) -> None:
    """An ingress 504 (no fal error type) may have enqueued the job: SubmitOutcomeUnknownError."""
    api.post("/fal-ai/flux/dev").mock(return_value=httpx.Response(504, text="<html>nginx</html>"))
    with pytest.raises(SubmitOutcomeUnknownError):
        await backend.submit(deployment(), request())


async def test_422_is_invalid_request_naming_request_fields(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """A 422's ``detail[].loc`` becomes ``fields`` in genrouter's names (num_inference_steps → steps)."""
    detail = [
        {"loc": ["body", "prompt"], "msg": "field required", "type": "missing"},
        {"loc": ["body", "num_inference_steps"], "msg": "ensure this value is at most 50", "type": "le"},
    ]
    api.post("/fal-ai/flux/dev").mock(return_value=httpx.Response(422, json={"detail": detail}))
    with pytest.raises(InvalidRequestError) as info:
        await backend.submit(deployment(), request(steps=80))
    assert info.value.fields == [("prompt", "field required"), ("steps", "ensure this value is at most 50")]
    assert (info.value.field, info.value.status_code, info.value.provider) == ("prompt", 422, "fal")


async def test_401_is_authentication_error(backend: FalBackend, api: respx.MockRouter) -> None:
    """A 401 raises AuthenticationError (the router disables the provider)."""
    api.post("/fal-ai/flux/dev").mock(return_value=httpx.Response(401, json={"detail": "Invalid key"}))
    with pytest.raises(AuthenticationError):
        await backend.submit(deployment(), request())


async def test_unknown_endpoint_is_a_non_retryable_provider_error(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """A 404 on submit names the endpoint and is not retried."""
    api.post("/fal-ai/flux/dev").mock(return_value=httpx.Response(404, json={"detail": "Not found"}))
    with pytest.raises(ProviderError, match="fal-ai/flux/dev") as info:
        await backend.submit(deployment(), request())
    assert not info.value.retryable


async def test_a_submit_builds_its_body_only_once_a_request_slot_is_free(
    backend: FalBackend, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Submits queued behind busy slots hold no payload yet: it is built when one frees."""
    api.post("/fal-ai/flux/dev").mock(return_value=accepted())
    built: list[str] = []
    translate = backend._translate

    async def recording(d: Deployment, r: GenerationRequest, *media: Any) -> Any:
        built.append(r.prompt)
        return await translate(d, r, *media)

    monkeypatch.setattr(backend, "_translate", recording)
    slots = request_slots(backend._client)
    for _ in range(MAX_CONCURRENT_REQUESTS):
        await slots.acquire()
    pending = asyncio.ensure_future(backend.submit(deployment(), request()))
    for _ in range(5):
        await asyncio.sleep(0)
    assert built == []
    slots.release()
    job = await pending
    assert built == ["a red fox"]
    assert job.provider_request_id == "req-1"


async def test_submit_read_timeout_is_outcome_unknown(backend: FalBackend, api: respx.MockRouter) -> None:
    """A read timeout after the POST was sent raises SubmitOutcomeUnknownError (never re-sent)."""
    route = api.post("/fal-ai/flux/dev").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(SubmitOutcomeUnknownError) as info:
        await backend.submit(deployment(), request())
    assert not info.value.retryable
    assert route.call_count == 1


async def test_submit_connect_error_is_retryable_unavailable(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """A connect error sent nothing: retryable ProviderUnavailableError, not outcome-unknown."""
    api.post("/fal-ai/flux/dev").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ProviderUnavailableError) as info:
        await backend.submit(deployment(), request())
    assert info.value.retryable
    assert not isinstance(info.value, SubmitOutcomeUnknownError)


async def test_accepted_submit_with_malformed_body_is_outcome_unknown(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """A 200 submit whose body is not JSON may hide an accepted job: SubmitOutcomeUnknownError."""
    api.post("/fal-ai/flux/dev").mock(return_value=httpx.Response(200, text="<html>oops"))
    with pytest.raises(SubmitOutcomeUnknownError):
        await backend.submit(deployment(), request())


# -- status and result errors -------------------------------------------------------------


async def test_runner_failure_polls_failed_and_is_retryable(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """COMPLETED with a runner_disconnected error: polls failed; fetch raises a retryable JobFailedError."""
    job = await finished_job(backend, api, error="Runner disconnected", error_type="runner_disconnected")
    status = await backend.poll(job)
    assert (status.state, status.error) == (JobState.FAILED, "Runner disconnected (runner_disconnected)")
    with pytest.raises(JobFailedError) as info:
        await backend.fetch_result(job)
    assert info.value.retryable
    assert info.value.state == "failed"


async def test_content_failure_is_not_retryable(backend: FalBackend, api: respx.MockRouter) -> None:
    """COMPLETED with a model error (no runner error type) raises a non-retryable JobFailedError."""
    job = await finished_job(backend, api, error="NSFW content detected in the prompt")
    assert (await backend.poll(job)).state is JobState.FAILED
    with pytest.raises(JobFailedError, match="NSFW") as info:
        await backend.fetch_result(job)
    assert not info.value.retryable


async def test_completed_error_with_retryable_header_is_retryable(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """``X-Fal-Retryable: true`` on the failed status makes the job worth retrying."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(
        return_value=httpx.Response(
            200,
            json={"status": "COMPLETED", "logs": None, "error": "oom", "error_type": "app_error"},
            headers={"X-Fal-Retryable": "true"},
        )
    )
    await backend.poll(job)
    with pytest.raises(JobFailedError) as info:
        await backend.fetch_result(job)
    assert info.value.retryable


async def test_result_422_after_completion_is_invalid_request(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """A job that completes and then answers 422 on its result is an InvalidRequestError."""
    job = await finished_job(backend, api)
    assert (await backend.poll(job)).state is JobState.SUCCEEDED
    detail = [{"loc": ["body", "image_size"], "msg": "too large", "type": "value_error"}]
    api.get(FLUX).mock(return_value=httpx.Response(422, json={"detail": detail}))
    with pytest.raises(InvalidRequestError) as info:
        await backend.fetch_result(job)
    assert info.value.fields == [("image_size", "too large")]
    assert info.value.provider_request_id == "req-1"


async def test_result_4xx_names_the_request_field(backend: FalBackend, api: respx.MockRouter) -> None:
    """A result 422 names the request field that fal's input came from (kept in the job data)."""
    _, job = await submit(backend, api, req=request(width=4096, height=4096))
    api.get(f"{FLUX}/status").mock(return_value=completed())
    detail = [{"loc": ["body", "image_size", "width"], "msg": "too wide"}]
    api.get(FLUX).mock(return_value=httpx.Response(422, json={"detail": detail}))
    with pytest.raises(InvalidRequestError) as info:
        await backend.fetch_result(job)
    assert info.value.fields == [("width", "too wide")]


async def test_unknown_status_is_a_typed_error(backend: FalBackend, api: respx.MockRouter) -> None:
    """A status fal_client would choke on (ValueError) is a non-retryable ProviderUnavailableError."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(return_value=httpx.Response(200, json={"status": "EXPLODED"}))
    with pytest.raises(ProviderUnavailableError, match="EXPLODED") as info:
        await backend.poll(job)
    assert not info.value.retryable


async def test_malformed_status_json_is_a_typed_error(backend: FalBackend, api: respx.MockRouter) -> None:
    """A status answer that is not JSON is a retryable ProviderUnavailableError (polling continues)."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(return_value=httpx.Response(200, text="<html>502</html>"))
    with pytest.raises(ProviderUnavailableError) as info:
        await backend.poll(job)
    assert info.value.retryable


async def test_status_without_status_field_is_a_typed_error(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """JSON without ``status`` (fal_client: KeyError) is a ProviderUnavailableError."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(return_value=httpx.Response(200, json={"logs": []}))
    with pytest.raises(ProviderUnavailableError, match="malformed"):
        await backend.poll(job)


async def test_completed_without_logs_key_succeeds(backend: FalBackend, api: respx.MockRouter) -> None:
    """A COMPLETED body missing ``logs`` (fal_client: KeyError) still polls succeeded."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(return_value=httpx.Response(200, json={"status": "COMPLETED"}))
    assert (await backend.poll(job)).state is JobState.SUCCEEDED


async def test_status_5xx_is_retryable(backend: FalBackend, api: respx.MockRouter) -> None:
    """A 503 on a status poll is retryable (the router keeps the job pinned and polls again)."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(return_value=httpx.Response(503, json={"detail": "busy"}))
    with pytest.raises(ProviderUnavailableError) as info:
        await backend.poll(job)
    assert info.value.retryable


async def test_status_of_an_unknown_job_is_a_job_failure(backend: FalBackend, api: respx.MockRouter) -> None:
    """A 404 on the status of a job never cancelled is a non-retryable JobFailedError."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(return_value=httpx.Response(404, json={"detail": "not found"}))
    with pytest.raises(JobFailedError):
        await backend.poll(job)


# -- URLs -------------------------------------------------------------------------------


async def test_subpath_endpoint_polls_the_returned_owner_alias_urls(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """kling's subpath id is submitted in full and polled, fetched and cancelled at fal-ai/kling-video."""
    dep = deployment("kling-video")
    submit_route = api.post(f"/{dep.endpoint}").mock(return_value=accepted("fal-ai/kling-video"))
    job = await backend.submit(dep, request("kling-video"))
    app = f"{BASE}/fal-ai/kling-video/requests/req-1"
    status = api.get(f"{app}/status").mock(
        return_value=httpx.Response(202, json={"status": "IN_PROGRESS", "logs": None})
    )
    cancel = api.put(f"{app}/cancel").mock(
        return_value=httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"})
    )
    await backend.poll(job)
    await backend.cancel(job)
    assert (submit_route.call_count, status.call_count, cancel.call_count) == (1, 1, 1)
    assert job.data["status_url"] == f"{app}/status"


async def test_urls_are_built_at_owner_alias_when_fal_returns_none(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """Without returned URLs, status is polled at owner/alias/requests/{id}/status."""
    dep = deployment("kling-video")
    api.post(f"/{dep.endpoint}").mock(return_value=accepted(urls=False))
    job = await backend.submit(dep, request("kling-video"))
    route = api.get(f"{BASE}/fal-ai/kling-video/requests/req-1/status").mock(return_value=completed())
    await backend.poll(job)
    assert route.called


async def test_urls_on_another_host_are_rebased_onto_the_base_url(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """A returned URL on a foreign host is re-based, so the key goes only where the config points."""
    body = {
        "request_id": "req-1",
        "status_url": "https://evil.example/fal-ai/flux/requests/req-1/status",
        "response_url": "https://evil.example/fal-ai/flux/requests/req-1",
        "cancel_url": "https://evil.example/fal-ai/flux/requests/req-1/cancel",
    }
    api.post("/fal-ai/flux/dev").mock(return_value=httpx.Response(200, json=body))
    job = await backend.submit(deployment(), request())
    assert job.data["status_url"] == f"{FLUX}/status"


async def test_webhook_url_is_urlencoded_into_fal_webhook(backend: FalBackend, api: respx.MockRouter) -> None:
    """``webhook_url`` travels as the ``fal_webhook`` query parameter, URL-encoded."""
    hook = "https://app.example/hooks/fal?tenant=a&x=1 2"
    route = api.post("/fal-ai/flux/dev").mock(return_value=accepted())
    await backend.submit(deployment(), request(), webhook_url=hook)
    url = route.calls.last.request.url
    assert "tenant%3Da%26x%3D1" in str(url)
    assert parse_qs(urlsplit(str(url)).query)["fal_webhook"] == [hook]


async def test_job_data_is_json_and_resumable_by_a_new_instance(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """A job read back from JSON is polled at its stored URL by a second backend instance."""
    _, job = await submit(backend, api)
    restored = ProviderJob.model_validate_json(job.model_dump_json())
    api.get(f"{FLUX}/status").mock(return_value=completed())
    other = FalBackend(name="fal", settings={"api_key": KEY})
    try:
        assert (await other.poll(restored)).state is JobState.SUCCEEDED
    finally:
        await other.aclose()


# -- cancel -------------------------------------------------------------------------------


async def test_cancel_then_poll_reports_cancelled(backend: FalBackend, api: respx.MockRouter) -> None:
    """After a 202 cancel, fal's COMPLETED-with-error reads as cancelled, and fetch raises state cancelled."""
    _, job = await submit(backend, api)
    api.put(f"{FLUX}/cancel").mock(
        return_value=httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"})
    )
    await backend.cancel(job)
    api.get(f"{FLUX}/status").mock(return_value=completed(error="Request cancelled"))
    assert (await backend.poll(job)).state is JobState.CANCELLED
    with pytest.raises(JobFailedError) as info:
        await backend.fetch_result(job)
    assert info.value.state == "cancelled"


async def test_client_cancelled_error_type_reads_as_cancelled(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """``error_type: client_cancelled`` is cancelled even for an instance that did not send the cancel."""
    job = await finished_job(backend, api, error="cancelled", error_type="client_cancelled")
    assert (await backend.poll(job)).state is JobState.CANCELLED


async def test_cancelled_queued_job_that_fal_forgot_polls_cancelled(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """A 404 status after our cancel means fal dropped the queued job: cancelled."""
    _, job = await submit(backend, api)
    api.put(f"{FLUX}/cancel").mock(
        return_value=httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"})
    )
    await backend.cancel(job)
    api.get(f"{FLUX}/status").mock(return_value=httpx.Response(404, json={"detail": "not found"}))
    assert (await backend.poll(job)).state is JobState.CANCELLED


async def test_cancel_of_a_completed_job_is_harmless(backend: FalBackend, api: respx.MockRouter) -> None:
    """400 ALREADY_COMPLETED on cancel raises nothing."""
    _, job = await submit(backend, api)
    route = api.put(f"{FLUX}/cancel").mock(
        return_value=httpx.Response(400, json={"status": "ALREADY_COMPLETED"})
    )
    await backend.cancel(job)
    assert route.called


async def test_cancel_other_400_raises(backend: FalBackend, api: respx.MockRouter) -> None:
    """A 400 that is not ALREADY_COMPLETED is an error (the router suppresses cancel errors itself)."""
    _, job = await submit(backend, api)
    api.put(f"{FLUX}/cancel").mock(return_value=httpx.Response(400, json={"detail": "bad"}))
    with pytest.raises(InvalidRequestError):
        await backend.cancel(job)


# -- parameter translation -----------------------------------------------------------------

TRANSLATIONS: list[tuple[str, str, dict[str, Any], dict[str, Any], str | None]] = [
    (
        "square 1024 is square_hd",
        "flux-dev",
        {"width": 1024, "height": 1024},
        {"image_size": "square_hd"},
        None,
    ),
    ("512 square is square", "flux-dev", {"width": 512, "height": 512}, {"image_size": "square"}, None),
    (
        "768x1024 is portrait_4_3",
        "flux-dev",
        {"width": 768, "height": 1024},
        {"image_size": "portrait_4_3"},
        None,
    ),
    (
        "576x1024 is portrait_16_9",
        "flux-dev",
        {"width": 576, "height": 1024},
        {"image_size": "portrait_16_9"},
        None,
    ),
    (
        "1024x576 is landscape_16_9",
        "flux-dev",
        {"width": 1024, "height": 576},
        {"image_size": "landscape_16_9"},
        None,
    ),
    (
        "custom size is width/height",
        "flux-dev",
        {"width": 1000, "height": 600},
        {"image_size": {"width": 1000, "height": 600}},
        None,
    ),
    (
        "16:9 is exact landscape_16_9",
        "flux-dev",
        {"aspect_ratio": "16:9"},
        {"image_size": "landscape_16_9"},
        None,
    ),
    ("3:4 is exact portrait_4_3", "flux-dev", {"aspect_ratio": "3:4"}, {"image_size": "portrait_4_3"}, None),
    ("1:1 is square_hd", "flux-dev", {"aspect_ratio": "1:1"}, {"image_size": "square_hd"}, None),
    (
        "21:9 is the nearest preset",
        "flux-dev",
        {"aspect_ratio": "21:9"},
        {"image_size": "landscape_16_9"},
        "nearest aspect ratio",
    ),
    (
        "kling aspect ratio is a string",
        "kling-video",
        {"aspect_ratio": "9:16"},
        {"aspect_ratio": "9:16"},
        None,
    ),
    (
        "kling sends width/height as the nearest allowed aspect ratio",
        "kling-video",
        {"width": 1280, "height": 720},
        {"aspect_ratio": "16:9"},
        "takes aspect ratios, not sizes",
    ),
    (
        "kling snaps an aspect ratio it lacks to the nearest allowed",
        "kling-video",
        {"aspect_ratio": "21:9"},
        {"aspect_ratio": "16:9"},
        "became 16:9",
    ),
    ("png passes", "flux-dev", {"output_format": "png"}, {"output_format": "png"}, None),
    ("jpeg passes", "flux-dev", {"output_format": "jpeg"}, {"output_format": "jpeg"}, None),
    (
        "webp becomes png",
        "flux-dev",
        {"output_format": "webp"},
        {"output_format": "png"},
        "cannot output webp",
    ),
    ("fast-sdxl says format", "sdxl", {"output_format": "png"}, {"format": "png"}, None),
    ("recraft drops output_format", "recraft-v3", {"output_format": "png"}, {}, "no input for output_format"),
    ("safety checker", "flux-dev", {"safety_checker": False}, {"enable_safety_checker": False}, None),
    (
        "steps and guidance",
        "flux-dev",
        {"steps": 20, "guidance": 4.0},
        {"num_inference_steps": 20, "guidance_scale": 4.0},
        None,
    ),
    (
        "num_outputs is num_images",
        "flux-dev",
        {"num_outputs": 3, "seed": 9},
        {"num_images": 3, "seed": 9},
        None,
    ),
    ("flux-pro drops steps", "flux-pro", {"steps": 20}, {}, "no input for steps"),
    ("sdxl negative prompt", "sdxl", {"negative_prompt": "blur"}, {"negative_prompt": "blur"}, None),
    (
        "sdxl loras",
        "sdxl",
        {"loras": [{"source": "https://x/l.safetensors", "scale": 0.7}]},
        {"loras": [{"path": "https://x/l.safetensors", "scale": 0.7}]},
        None,
    ),
    ("kling 5 s is '5'", "kling-video", {"duration_s": 5}, {"duration": "5"}, None),
    ("kling 10 s is '10'", "kling-video", {"duration_s": 10}, {"duration": "10"}, None),
    ("kling 7 s snaps to '5'", "kling-video", {"duration_s": 7}, {"duration": "5"}, "became 5"),
    ("kling 8 s snaps to '10'", "kling-video", {"duration_s": 8}, {"duration": "10"}, "became 10"),
    ("kling guidance is cfg_scale", "kling-video", {"guidance": 0.6}, {"cfg_scale": 0.6}, None),
    ("recraft drops seed", "recraft-v3", {"seed": 3}, {}, "no input for seed"),
    ("flux-dev drops fps", "flux-dev", {"fps": 24}, {}, "no input for fps"),
]


@pytest.mark.parametrize(
    ("model", "fields", "expected", "warning"),
    [pytest.param(*row[1:], id=row[0]) for row in TRANSLATIONS],
)
async def test_param_translation(
    backend: FalBackend,
    api: respx.MockRouter,
    model: str,
    fields: dict[str, Any],
    expected: dict[str, Any],
    warning: str | None,
) -> None:
    """Each request field reaches fal under the catalog's name and shape, with a warning when changed."""
    sent, job = await submit(backend, api, deployment(model), request(model, **fields))
    assert sent["prompt"] == "a red fox"
    assert {k: sent[k] for k in expected if k in sent} == expected
    for name in ("width", "height", "aspect_ratio", "duration_s", "steps", "fps", "output_format", "seed"):
        if name not in expected:
            assert name not in sent
    if warning is None:
        assert job.warnings == []
    else:
        assert any(warning in w for w in job.warnings), job.warnings


async def test_provider_options_are_merged_last(backend: FalBackend, api: respx.MockRouter) -> None:
    """``provider_options["fal"]`` and then the provider key's options override translated inputs."""
    req = request(
        steps=20,
        provider_options={
            "fal": {"num_inference_steps": 30, "acceleration": "high"},
            "fal-eu": {"sync_mode": True},
        },
    )
    eu = FalBackend(name="fal-eu", settings={"api_key": KEY})
    try:
        sent, _ = await submit(eu, api, deployment(provider="fal-eu"), req)
    finally:
        await eu.aclose()
    assert (sent["num_inference_steps"], sent["acceleration"], sent["sync_mode"]) == (30, "high", True)


async def test_bytes_image_is_sent_as_a_data_uri(backend: FalBackend, api: respx.MockRouter) -> None:
    """An image given as bytes goes inline as a ``data:`` URI under the mapped name (image_url)."""
    png = placeholder_png(4, 4, 1)
    dep = replace(
        deployment(image="image_url", strength="strength"), endpoint="fal-ai/flux/dev/image-to-image"
    )
    sent, _ = await submit(backend, api, dep, request(image=png, strength=0.4))
    assert sent["image_url"].startswith("data:image/png;base64,")
    assert sent["strength"] == 0.4


async def test_path_image_is_sent_as_a_data_uri(
    backend: FalBackend, api: respx.MockRouter, tmp_path: Path
) -> None:
    """An image given as a path is read and sent inline."""
    path = tmp_path / "in.png"
    path.write_bytes(placeholder_png(4, 4, 2))
    dep = replace(deployment(image="image_url"), endpoint="fal-ai/flux/dev/image-to-image")
    sent, _ = await submit(backend, api, dep, request(image=path))
    assert sent["image_url"].startswith("data:image/png;base64,")


async def test_url_image_passes_through(backend: FalBackend, api: respx.MockRouter) -> None:
    """An image URL is sent as is."""
    dep = replace(deployment(image="image_url"), endpoint="fal-ai/flux/dev/image-to-image")
    sent, _ = await submit(backend, api, dep, request(image="https://example.com/in.png"))
    assert sent["image_url"] == "https://example.com/in.png"


async def test_unreadable_image_path_is_invalid_request(
    backend: FalBackend, api: respx.MockRouter, tmp_path: Path
) -> None:
    """A missing image file raises InvalidRequestError naming ``image``, before anything is sent."""
    dep = replace(deployment(image="image_url"), endpoint="fal-ai/flux/dev/image-to-image")
    route = api.post(f"/{dep.endpoint}")
    with pytest.raises(InvalidRequestError) as info:
        await backend.submit(dep, request(image=tmp_path / "missing.png"))
    assert info.value.field == "image"
    assert not route.called


async def test_image_on_an_endpoint_without_image_input_warns(
    backend: FalBackend, api: respx.MockRouter
) -> None:
    """flux/dev has no image input: the image is dropped with a warning."""
    sent, job = await submit(backend, api, req=request(image="https://example.com/in.png"))
    assert "image_url" not in sent
    assert any("no input for image" in w for w in job.warnings)


# -- credentials and secrets -----------------------------------------------------------------


async def test_authorization_from_settings_key(backend: FalBackend, api: respx.MockRouter) -> None:
    """The configured api_key is sent as ``Authorization: Key <key>``."""
    route = api.post("/fal-ai/flux/dev").mock(return_value=accepted())
    await backend.submit(deployment(), request())
    assert route.calls.last.request.headers["authorization"] == f"Key {KEY}"


async def test_no_start_timeout_header_is_sent(backend: FalBackend, api: respx.MockRouter) -> None:
    """X-Fal-Request-Timeout is not sent: the router's deadline bounds the wait and cancels instead."""
    route = api.post("/fal-ai/flux/dev").mock(return_value=accepted())
    await backend.submit(deployment(), request())
    headers = route.calls.last.request.headers
    assert "x-fal-request-timeout" not in headers
    assert headers["user-agent"].startswith("genrouter/")


async def test_authorization_from_fal_key(api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an api_key setting, ``FAL_KEY`` is used."""
    monkeypatch.setenv("FAL_KEY", "fal-env-key-abcdef")
    fal = FalBackend(name="fal", settings={})
    route = api.post("/fal-ai/flux/dev").mock(return_value=accepted())
    try:
        await fal.submit(deployment(), request())
    finally:
        await fal.aclose()
    assert route.calls.last.request.headers["authorization"] == "Key fal-env-key-abcdef"


async def test_authorization_from_key_id_and_secret(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without FAL_KEY, ``FAL_KEY_ID:FAL_KEY_SECRET`` is used."""
    monkeypatch.setenv("FAL_KEY_ID", "key-id-1")
    monkeypatch.setenv("FAL_KEY_SECRET", "key-secret-2")
    fal = FalBackend(name="fal", settings={})
    route = api.post("/fal-ai/flux/dev").mock(return_value=accepted())
    try:
        await fal.submit(deployment(), request())
    finally:
        await fal.aclose()
    assert route.calls.last.request.headers["authorization"] == "Key key-id-1:key-secret-2"


async def test_settings_key_wins_over_environment(
    monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter
) -> None:
    """``api_key`` in the config beats ``FAL_KEY``."""
    monkeypatch.setenv("FAL_KEY", "fal-env-key-abcdef")
    fal = FalBackend(name="fal", settings={"api_key": KEY})
    route = api.post("/fal-ai/flux/dev").mock(return_value=accepted())
    try:
        await fal.submit(deployment(), request())
    finally:
        await fal.aclose()
    assert route.calls.last.request.headers["authorization"] == f"Key {KEY}"


async def test_no_credentials_sets_unavailable_reason() -> None:
    """Without any credential the backend still constructs and says why it cannot serve."""
    fal = FalBackend(name="fal-eu", settings={})
    try:
        assert fal.unavailable_reason == "no fal credentials: set FAL_KEY or providers.fal-eu.api_key"
    finally:
        await fal.aclose()


async def test_no_credentials_excludes_the_provider_in_explain() -> None:
    """The planner excludes a fal provider without credentials, with that reason."""
    router = AsyncRouter.from_config({"version": 1, "providers": {"fal": {}}})
    try:
        plan = router.explain("a fox", model="flux-dev")
    finally:
        await router.aclose()
    assert plan.candidates  # flux-dev and its image-to-image variant
    for candidate in plan.candidates:
        assert candidate.excluded is not None
        assert "no fal credentials" in candidate.excluded


async def test_no_credentials_submit_raises_without_sending(api: respx.MockRouter) -> None:
    """Submitting without credentials raises AuthenticationError and sends nothing."""
    fal = FalBackend(name="fal", settings={})
    route = api.post("/fal-ai/flux/dev")
    try:
        with pytest.raises(AuthenticationError, match="no fal credentials"):
            await fal.submit(deployment(), request())
    finally:
        await fal.aclose()
    assert not route.called


async def test_key_never_appears_in_repr_job_or_errors(backend: FalBackend, api: respx.MockRouter) -> None:
    """The key is absent from repr(backend), the job's JSON and errors that echo it."""
    _, job = await submit(backend, api)
    api.get(f"{FLUX}/status").mock(
        return_value=httpx.Response(401, json={"detail": f"invalid key {KEY} (Authorization: Key {KEY})"})
    )
    with pytest.raises(GenRouterError) as info:
        await backend.poll(job)
    exposed = repr(backend) + str(backend) + job.model_dump_json() + str(info.value) + repr(info.value)
    assert KEY not in exposed


async def test_settings_may_be_a_mapping_with_any_type() -> None:
    """An import-path style settings dict (type other than fal) is accepted."""
    fal = FalBackend(
        name="x", settings={"type": "genrouter.backends.fal:FalBackend", "api_key": KEY, "timeout_s": 5}
    )
    try:
        assert fal.settings.timeout_s == 5
    finally:
        await fal.aclose()


async def test_aclose_is_idempotent_and_later_calls_fail_typed(backend: FalBackend) -> None:
    """aclose twice is fine; a submit afterwards raises a genrouter error, not httpx's RuntimeError."""
    await backend.aclose()
    await backend.aclose()
    with pytest.raises(ProviderUnavailableError, match="closed"):
        await backend.submit(deployment(), request())


async def test_latency_hint_is_none(backend: FalBackend) -> None:
    """fal publishes no latency: the hint is None."""
    assert backend.latency_hint(deployment()) is None


# -- the Backend contract, against the loopback fake -------------------------------------------


@pytest.fixture(scope="module")
def fal_server() -> Iterator[LoopbackServer]:
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def fake(fal_server: LoopbackServer) -> FakeFal:
    fake = FakeFal(api_key=KEY)
    fal_server.handler = fake
    return fake


class TestFalBackendContract(BackendContract):
    """FalBackend holds to the Backend contract against the loopback fake fal."""

    @pytest.fixture
    async def backend(self, fake: FakeFal, fal_server: LoopbackServer) -> AsyncIterator[Backend]:
        fal = FalBackend(name="fal", settings={"api_key": KEY, "base_url": fal_server.url})
        yield fal
        await fal.aclose()

    @pytest.fixture
    async def reopen(self, fake: FakeFal, fal_server: LoopbackServer) -> AsyncIterator[Backend]:
        fal = FalBackend(name="fal", settings={"api_key": KEY, "base_url": fal_server.url})
        yield fal
        await fal.aclose()

    @pytest.fixture
    async def slow_backend(self, fake: FakeFal, fal_server: LoopbackServer) -> AsyncIterator[Backend]:
        fake.behaviour = Behaviour(hang=True)
        fal = FalBackend(name="fal", settings={"api_key": KEY, "base_url": fal_server.url})
        yield fal
        await fal.aclose()

    @pytest.fixture
    def deployment(self) -> Deployment:
        return deployment()

    @pytest.fixture
    def secrets(self) -> list[str]:
        return [KEY]
