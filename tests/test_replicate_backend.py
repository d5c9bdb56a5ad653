"""ReplicateBackend against respx mocks: wire calls, statuses, errors, translation, outputs,
credentials; and the Backend contract against the loopback fake Replicate API."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from tests.fakes.replicate import TOKEN as FAKE_TOKEN
from tests.fakes.replicate import FakeReplicate, Plan
from tests.fakes.server import LoopbackServer, serve

from genrouter import (
    AsyncRouter,
    AuthenticationError,
    ConfigError,
    GenerationRequest,
    InvalidRequestError,
    JobFailedError,
    JobState,
    LoRA,
    ProviderError,
    ProviderJob,
    ProviderUnavailableError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)
from genrouter.backends.base import Backend
from genrouter.backends.replicate import ReplicateBackend
from genrouter.catalog import Catalog, CatalogEntry, Deployment, Limits, build_deployment
from genrouter.testing import BackendContract

TOKEN = "r8_SENTINELsecrettoken1234567890"
API = "https://api.replicate.com"
PID = "kr2d2jhqbsrj60cjb2vtmekgh4"
FLUX_DEV = "/v1/models/black-forest-labs/flux-dev/predictions"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8

# -- helpers ---------------------------------------------------------------------------------------


@functools.cache
def shipped_catalog() -> Catalog:
    return Catalog.load()


def deployment(model: str = "flux-dev", *, provider: str = "replicate", **entry: Any) -> Deployment:
    """A shipped Replicate deployment, or (with ``entry``) an inline one."""
    catalog = shipped_catalog()
    base = catalog.entries_for("replicate").get(model)
    spec = catalog.models.get(model)
    chosen = CatalogEntry(**entry) if entry else base
    assert chosen is not None
    return build_deployment(
        provider=provider, provider_type="replicate", model=model, entry=chosen, spec=spec
    )


def request(model: str = "flux-dev", **fields: Any) -> GenerationRequest:
    return GenerationRequest.model_validate({"model": model, "prompt": "a fox", **fields})


def make_backend(
    api: respx.MockRouter | None = None, name: str = "replicate", **settings: Any
) -> ReplicateBackend:
    """A backend with the sentinel token; with ``api``, its calls go straight to the mock
    (a MockTransport builds no TLS context, which keeps these tests fast)."""
    transport = httpx.MockTransport(api.async_handler) if api is not None else None
    return ReplicateBackend(name=name, settings={"api_token": TOKEN, **settings}, transport=transport)


def prediction(status: str = "starting", *, id: str = PID, **fields: Any) -> dict[str, Any]:
    """A prediction body as Replicate sends it."""
    return {
        "id": id,
        "model": "black-forest-labs/flux-dev",
        "version": "hidden",
        "status": status,
        "input": {"prompt": "a fox"},
        "output": None,
        "error": None,
        "logs": "",
        "created_at": "2024-10-09T17:53:41.582Z",
        "started_at": None,
        "completed_at": None,
        "metrics": {},
        "urls": {"get": f"{API}/v1/predictions/{id}", "cancel": f"{API}/v1/predictions/{id}/cancel"},
        **fields,
    }


def succeeded(output: Any, **fields: Any) -> dict[str, Any]:
    timing = {
        "started_at": "2024-10-09T17:53:43.08235812Z",
        "completed_at": "2024-10-09T17:53:45.582358Z",
        "metrics": {"predict_time": 2.25},
    }
    return prediction("succeeded", output=output, **{**timing, **fields})


def job(*, endpoint: str = "black-forest-labs/flux-dev", **data: Any) -> ProviderJob:
    """A job as submit would have made it (data: size, kind, seed, urls...)."""
    return ProviderJob(
        provider="replicate", endpoint=endpoint, provider_request_id=PID, data={"kind": "image", **data}
    )


def problem(
    status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    return httpx.Response(
        status,
        json={"detail": detail, "status": status, **extra},
        headers={"content-type": "application/problem+json", **(headers or {})},
    )


def sent_body(route: respx.Route) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """Replicate's API, mocked; any unmocked call fails the test."""
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def backend(api: respx.MockRouter) -> AsyncIterator[ReplicateBackend]:
    instance = make_backend(api)
    yield instance
    await instance.aclose()


async def submit_input(
    api: respx.MockRouter, backend: ReplicateBackend, req: GenerationRequest, dep: Deployment | None = None
) -> tuple[dict[str, Any], ProviderJob]:
    """Submit ``req`` and return (the input sent, the job)."""
    dep = dep or deployment(req.model)
    route = api.post(url__regex=r"/v1/.*predictions$").mock(
        return_value=httpx.Response(201, json=prediction())
    )
    submitted = await backend.submit(dep, req)
    return sent_body(route)["input"], submitted


# -- statuses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("starting", JobState.QUEUED),
        ("processing", JobState.RUNNING),
        ("succeeded", JobState.SUCCEEDED),
        ("failed", JobState.FAILED),
        ("canceled", JobState.CANCELLED),
        ("aborted", JobState.CANCELLED),
    ],
)
async def test_each_replicate_status_maps_to_a_job_state(
    api: respx.MockRouter, backend: ReplicateBackend, status: str, state: JobState
) -> None:
    """starting→queued, processing→running, succeeded, failed, canceled/aborted→cancelled."""
    api.get(f"/v1/predictions/{PID}").mock(return_value=httpx.Response(200, json=prediction(status)))
    assert (await backend.poll(job())).state is state


async def test_unknown_status_is_a_retryable_provider_error(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A status Replicate may add later is a typed, retryable error, not a crash."""
    api.get(f"/v1/predictions/{PID}").mock(return_value=httpx.Response(200, json=prediction("booting")))
    with pytest.raises(ProviderUnavailableError, match="unknown status 'booting'") as caught:
        await backend.poll(job())
    assert caught.value.retryable


async def test_aborted_prediction_result_is_a_free_cancellation(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """fetch_result of an aborted prediction raises JobFailedError(state=cancelled), saying it is free."""
    api.get(f"/v1/predictions/{PID}").mock(return_value=httpx.Response(200, json=prediction("aborted")))
    with pytest.raises(JobFailedError, match="not billed") as caught:
        await backend.fetch_result(job())
    assert caught.value.state == "cancelled"


async def test_poll_reports_a_failed_predictions_error(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A failed prediction's status carries Replicate's error text."""
    failed = prediction("failed", error="CUDA out of memory")
    api.get(f"/v1/predictions/{PID}").mock(return_value=httpx.Response(200, json=failed))
    assert (await backend.poll(job())).error == "CUDA out of memory"


async def test_poll_follows_urls_get_on_the_api_host(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """urls.get from the prediction is used when it points at the API host."""
    url = f"{API}/v1/predictions/{PID}?from=urls"
    route = api.get(url).mock(return_value=httpx.Response(200, json=prediction("processing")))
    await backend.poll(job(urls={"get": url}))
    assert route.called


async def test_poll_never_follows_urls_to_another_host(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A stored job whose urls.get names another host is read from the API host (the token stays home)."""
    route = api.get(f"/v1/predictions/{PID}").mock(
        return_value=httpx.Response(200, json=prediction("processing"))
    )
    await backend.poll(job(urls={"get": f"https://evil.example/v1/predictions/{PID}"}))
    assert route.called


async def test_poll_then_fetch_costs_one_get(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """A prediction seen finished by poll is fetched without asking again."""
    route = api.get(f"/v1/predictions/{PID}").mock(
        return_value=httpx.Response(200, json=succeeded(["https://replicate.delivery/a.webp"]))
    )
    await backend.poll(job())
    await backend.fetch_result(job())
    assert route.call_count == 1


# -- errors -------------------------------------------------------------------------------------------


async def test_422_invalid_fields_name_request_fields(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """RFC 7807 invalid_fields become InvalidRequestError.fields under request field names."""
    api.post(FLUX_DEV).mock(
        return_value=problem(
            422,
            "- input.num_inference_steps: Must be less than or equal to 50\n- input.go_fast: Invalid type",
            title="Input validation failed",
            invalid_fields=[
                {"type": "maximum", "field": "input.num_inference_steps", "description": "Must be <= 50"},
                {"type": "invalid_type", "field": "input.go_fast", "description": "Invalid type"},
            ],
        )
    )
    with pytest.raises(InvalidRequestError) as caught:
        await backend.submit(deployment(), request(steps=80))
    error = caught.value
    assert error.fields == [("steps", "Must be <= 50"), ("input.go_fast", "Invalid type")]
    assert error.field == "steps"
    assert "steps: Must be <= 50 (input.num_inference_steps)" in str(error)


async def test_429_retry_after_comes_from_the_header(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A 429 with Retry-After is a RateLimitedError waiting that long."""
    api.post(FLUX_DEV).mock(return_value=problem(429, "Request was throttled.", headers={"retry-after": "7"}))
    with pytest.raises(RateLimitedError) as caught:
        await backend.submit(deployment(), request())
    assert caught.value.retry_after == 7.0


async def test_429_retry_after_comes_from_the_detail_text(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """Without Retry-After, the "resets in ~30s" of the detail gives the wait."""
    detail = "Request was throttled. Your rate limit resets in ~30s."
    api.post(FLUX_DEV).mock(return_value=problem(429, detail))
    with pytest.raises(RateLimitedError) as caught:
        await backend.submit(deployment(), request())
    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize("status", [401, 402, 403])
async def test_credential_and_payment_refusals_are_authentication_errors(
    api: respx.MockRouter, backend: ReplicateBackend, status: int
) -> None:
    """401, 402 and 403 are AuthenticationError, never retried."""
    api.post(FLUX_DEV).mock(return_value=problem(status, "You did not pass a valid authentication token"))
    with pytest.raises(AuthenticationError) as caught:
        await backend.submit(deployment(), request())
    assert not caught.value.retryable


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_on_create_are_retryable(
    api: respx.MockRouter, backend: ReplicateBackend, status: int
) -> None:
    """A 500 or 503 on create is a retryable ProviderUnavailableError."""
    api.post(FLUX_DEV).mock(return_value=problem(status, "Internal server error"))
    with pytest.raises(ProviderUnavailableError) as caught:
        await backend.submit(deployment(), request())
    assert caught.value.retryable
    assert not isinstance(caught.value, SubmitOutcomeUnknownError)


@pytest.fixture
def unlistable(api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> respx.Route:
    """Listing predictions fails (503), so a lost create cannot be reconciled."""
    monkeypatch.setattr("genrouter.backends.replicate._backend.RECONCILE_PAUSE_S", 0.0)
    return api.get("/v1/predictions").mock(return_value=problem(503, "unavailable"))


@pytest.mark.parametrize("status", [502, 504])
@pytest.mark.usefixtures("unlistable")
async def test_gateway_errors_on_create_leave_the_outcome_unknown(
    api: respx.MockRouter, backend: ReplicateBackend, status: int
) -> None:
    """A 502/504 on create may hide a created prediction: SubmitOutcomeUnknownError, not retried there."""
    api.post(FLUX_DEV).mock(return_value=httpx.Response(status, text="<html>Bad gateway</html>"))
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await backend.submit(deployment(), request())
    assert not caught.value.retryable


@pytest.mark.usefixtures("unlistable")
async def test_create_read_timeout_leaves_the_outcome_unknown(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A create whose answer timed out raises SubmitOutcomeUnknownError (it may have been created)."""
    api.post(FLUX_DEV).mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(SubmitOutcomeUnknownError):
        await backend.submit(deployment(), request())


async def test_a_lost_create_is_looked_up_in_the_listing_since_just_before_it(
    api: respx.MockRouter, backend: ReplicateBackend, unlistable: respx.Route
) -> None:
    """Reconciliation asks for predictions created after the send time (minus clock slack)."""
    api.post(FLUX_DEV).mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(SubmitOutcomeUnknownError):
        await backend.submit(deployment(), request())
    assert unlistable.call_count == 4
    assert "created_after" in unlistable.calls[0].request.url.params


async def test_a_lost_create_found_in_the_listing_becomes_the_job(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """The listed prediction with exactly the sent input is the job; nothing is re-POSTed."""
    create = api.post(FLUX_DEV).mock(side_effect=httpx.ReadTimeout("timed out"))

    def listing(req: httpx.Request) -> httpx.Response:
        body = json.loads(create.calls[0].request.content)
        other = {"id": "other", "input": {**body["input"], "seed": 1}, "status": "processing"}
        ours = {"id": PID, "input": body["input"], "status": "starting", "source": "api"}
        return httpx.Response(200, json={"next": None, "previous": None, "results": [other, ours]})

    api.get("/v1/predictions").mock(side_effect=listing)
    job = await backend.submit(deployment(), request())
    assert job.provider_request_id == PID
    assert create.call_count == 1
    assert any("found its prediction by listing" in w for w in job.warnings)


async def test_a_lost_create_missing_from_two_listings_stays_outcome_unknown(
    api: respx.MockRouter, backend: ReplicateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two complete listings without it: still SubmitOutcomeUnknownError, never sent there again."""
    monkeypatch.setattr("genrouter.backends.replicate._backend.RECONCILE_PAUSE_S", 0.0)
    api.post(FLUX_DEV).mock(side_effect=httpx.ReadTimeout("timed out"))
    empty = api.get("/v1/predictions").mock(return_value=httpx.Response(200, json={"results": []}))
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await backend.submit(deployment(), request())
    assert not caught.value.retryable
    assert empty.call_count == 2


async def test_a_listing_told_to_wait_too_long_leaves_the_outcome_unknown(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A 429 on the listing asking for more than RECONCILE_MAX_WAIT_S ends the lookup at once."""
    api.post(FLUX_DEV).mock(side_effect=httpx.ReadTimeout("timed out"))
    throttled = api.get("/v1/predictions").mock(
        return_value=problem(429, "Request was throttled.", headers={"Retry-After": "99999999999"})
    )
    with pytest.raises(SubmitOutcomeUnknownError):
        await asyncio.wait_for(backend.submit(deployment(), request()), timeout=5)
    assert throttled.call_count == 1


async def test_create_connect_error_is_retryable(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """A create that never connected is a retryable ProviderUnavailableError."""
    api.post(FLUX_DEV).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ProviderUnavailableError) as caught:
        await backend.submit(deployment(), request())
    assert caught.value.retryable
    assert not isinstance(caught.value, SubmitOutcomeUnknownError)


@pytest.mark.usefixtures("unlistable")
async def test_unreadable_create_answer_leaves_the_outcome_unknown(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A 201 whose body is not a prediction raises SubmitOutcomeUnknownError."""
    api.post(FLUX_DEV).mock(return_value=httpx.Response(201, text="{not json"))
    with pytest.raises(SubmitOutcomeUnknownError):
        await backend.submit(deployment(), request())


async def test_404_on_get_is_a_job_failure(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """A prediction Replicate no longer knows is a JobFailedError."""
    api.get(f"/v1/predictions/{PID}").mock(return_value=problem(404, "Not found."))
    with pytest.raises(JobFailedError):
        await backend.poll(job())


@pytest.mark.parametrize(
    "answer", [problem(503, "unavailable"), httpx.ReadTimeout("slow"), httpx.Response(200, text="<html>")]
)
async def test_get_failures_are_retryable(
    api: respx.MockRouter, backend: ReplicateBackend, answer: httpx.Response | Exception
) -> None:
    """5xx, timeouts and garbled bodies on GET are retryable (the router keeps polling)."""
    api.get(f"/v1/predictions/{PID}").mock(side_effect=[answer])
    with pytest.raises(ProviderUnavailableError) as caught:
        await backend.poll(job())
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ("All generated images contained NSFW content. Try running it again with a different prompt.", False),
        ("CUDA out of memory. Tried to allocate 2.00 GiB", False),
        ("Prediction interrupted; please retry (code: PA)", True),
    ],
)
async def test_failed_prediction_retryable_only_when_transient(
    api: respx.MockRouter, backend: ReplicateBackend, error: str, retryable: bool
) -> None:
    """A failed prediction raises its error text; NSFW and model errors are final, interruptions not."""
    api.get(f"/v1/predictions/{PID}").mock(
        return_value=httpx.Response(200, json=prediction("failed", error=error))
    )
    with pytest.raises(JobFailedError, match=error[:20]) as caught:
        await backend.fetch_result(job())
    assert caught.value.retryable is retryable
    assert caught.value.provider_request_id == PID


# -- endpoints and create headers -----------------------------------------------------------------------


async def test_official_model_creates_on_the_models_path(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """owner/name → POST /v1/models/owner/name/predictions with only the input."""
    route = api.post(FLUX_DEV).mock(return_value=httpx.Response(201, json=prediction()))
    submitted = await backend.submit(deployment(), request())
    assert set(sent_body(route)) == {"input"}
    assert submitted.provider_request_id == PID


async def test_pinned_version_creates_with_the_version(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """owner/name:version → POST /v1/predictions with the bare version id."""
    route = api.post("/v1/predictions").mock(return_value=httpx.Response(201, json=prediction()))
    await backend.submit(deployment("sdxl"), request("sdxl"))
    assert sent_body(route)["version"] == SDXL_VERSION


async def test_deployment_creates_on_the_deployments_path(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """deployments/owner/name → POST /v1/deployments/owner/name/predictions."""
    route = api.post("/v1/deployments/acme/flux-dev/predictions").mock(
        return_value=httpx.Response(201, json=prediction())
    )
    await backend.submit(deployment(endpoint="deployments/acme/flux-dev"), request())
    assert set(sent_body(route)) == {"input"}


async def test_malformed_endpoint_is_a_config_error(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """An endpoint in none of the three notations is refused before any call."""
    with pytest.raises(ConfigError, match="not 'owner/name'"):
        await backend.submit(deployment(endpoint="flux dev"), request())


async def test_prefer_wait_is_sent_below_the_http_timeout(api: respx.MockRouter) -> None:
    """Prefer: wait=N uses prefer_wait_s, capped at timeout_s - 1 so the call answers in time."""
    route = api.post(FLUX_DEV).mock(return_value=httpx.Response(201, json=prediction()))
    backend = make_backend(api, prefer_wait_s=30, timeout_s=10)
    await backend.submit(deployment(), request())
    await backend.aclose()
    assert route.calls.last.request.headers["prefer"] == "wait=9"


async def test_no_prefer_or_cancel_after_by_default(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """Without prefer_wait_s and deadline_s, the create carries neither header."""
    route = api.post(FLUX_DEV).mock(return_value=httpx.Response(201, json=prediction()))
    await backend.submit(deployment(), request())
    headers = route.calls.last.request.headers
    assert "prefer" not in headers
    assert "cancel-after" not in headers


async def test_cancel_after_comes_from_the_request_deadline(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A request deadline_s becomes Cancel-After (whole seconds, rounded up)."""
    route = api.post(FLUX_DEV).mock(return_value=httpx.Response(201, json=prediction()))
    await backend.submit(deployment(), request(deadline_s=42.5))
    assert route.calls.last.request.headers["cancel-after"] == "43s"


async def test_terminal_create_needs_no_further_request(api: respx.MockRouter) -> None:
    """A create answered finished (Prefer: wait) is polled and fetched from the job, without a GET."""
    done = succeeded(["https://replicate.delivery/x/out-0.webp"])
    api.post(FLUX_DEV).mock(
        return_value=httpx.Response(201, json=done, headers={"preference-applied": "wait=5"})
    )
    backend = make_backend(api, prefer_wait_s=5)
    submitted = await backend.submit(deployment(), request())
    fresh = make_backend(api, prefer_wait_s=5)  # a new instance has no memory: the job itself carries it
    assert (await fresh.poll(submitted)).state is JobState.SUCCEEDED
    result = await fresh.fetch_result(submitted)
    await fresh.cancel(submitted)
    assert [a.url for a in result.outputs] == done["output"]
    await backend.aclose()
    await fresh.aclose()


async def test_unfinished_job_resumes_by_get(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """A job read back from JSON is polled with GET by a new instance."""
    api.post(FLUX_DEV).mock(return_value=httpx.Response(201, json=prediction()))
    submitted = await backend.submit(deployment(), request())
    route = api.get(f"/v1/predictions/{PID}").mock(
        return_value=httpx.Response(200, json=prediction("processing"))
    )
    fresh = make_backend(api)
    status = await fresh.poll(ProviderJob.model_validate_json(submitted.model_dump_json()))
    await fresh.aclose()
    assert status.state is JobState.RUNNING
    assert route.called


async def test_webhook_asks_only_for_the_completed_event(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A webhook URL is sent with webhook_events_filter ["completed"]."""
    route = api.post(FLUX_DEV).mock(return_value=httpx.Response(201, json=prediction()))
    await backend.submit(deployment(), request(), webhook_url="https://app.example/hooks/replicate")
    body = sent_body(route)
    assert body["webhook"] == "https://app.example/hooks/replicate"
    assert body["webhook_events_filter"] == ["completed"]


async def test_cancel_posts_to_the_cancel_url(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """cancel() POSTs urls.cancel."""
    route = api.post(f"/v1/predictions/{PID}/cancel").mock(
        return_value=httpx.Response(200, json=prediction("canceled"))
    )
    await backend.cancel(job(urls={"cancel": f"{API}/v1/predictions/{PID}/cancel"}))
    assert route.called


async def test_aclose_lets_a_cancel_in_flight_land(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """Closing the backend while a cancel is on the wire waits for it instead of dropping it."""
    answered = asyncio.Event()

    async def slow_cancel(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        answered.set()
        return httpx.Response(200, json=prediction("canceled"))

    api.post(f"/v1/predictions/{PID}/cancel").mock(side_effect=slow_cancel)
    cancelling = asyncio.create_task(backend.cancel(job()))
    await asyncio.sleep(0.01)
    await backend.aclose()
    assert answered.is_set()
    await cancelling


async def test_cancel_of_a_vanished_prediction_is_harmless(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A 404 to a cancel (expired or unknown) raises nothing."""
    api.post(f"/v1/predictions/{PID}/cancel").mock(return_value=problem(404, "Not found."))
    await backend.cancel(job())


# -- translation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "ratio", "warned"),
    [((1000, 700), "3:2", True), ((1920, 1080), "16:9", True), ((1024, 1024), "1:1", False)],
)
async def test_flux_sizes_go_to_the_nearest_aspect_ratio(
    api: respx.MockRouter, backend: ReplicateBackend, size: tuple[int, int], ratio: str, warned: bool
) -> None:
    """FLUX takes aspect ratios: a size is sent as the nearest, with a warning unless it is exact."""
    sent, submitted = await submit_input(api, backend, request(width=size[0], height=size[1]))
    assert sent["aspect_ratio"] == ratio
    assert "width" not in sent
    assert bool(submitted.warnings) is warned
    if warned:
        assert f"{size[0]}x{size[1]} was sent as aspect_ratio {ratio}" in submitted.warnings[0]


async def test_small_flux_sizes_ask_for_a_quarter_megapixel(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """512x512 on flux-dev is 1:1 at megapixels "0.25": exactly the size asked, no warning."""
    sent, submitted = await submit_input(api, backend, request(width=512, height=512))
    assert (sent["aspect_ratio"], sent["megapixels"]) == ("1:1", "0.25")
    assert submitted.data["size"] == [512, 512]
    assert submitted.warnings == []


async def test_supported_aspect_ratio_passes_through(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """An aspect ratio the model takes is sent as is, without a warning."""
    sent, submitted = await submit_input(api, backend, request(aspect_ratio="21:9"))
    assert sent["aspect_ratio"] == "21:9"
    assert submitted.warnings == []


async def test_unsupported_aspect_ratio_goes_to_the_nearest(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """flux-1.1-pro has no 21:9: the nearest (16:9) is sent, with a warning."""
    sent, submitted = await submit_input(api, backend, request("flux-pro", aspect_ratio="21:9"))
    assert sent["aspect_ratio"] == "16:9"
    assert "does not take aspect_ratio 21:9" in submitted.warnings[0]


async def test_sdxl_gets_the_exact_size(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """sdxl takes width/height; outputs are known to have that size."""
    sent, submitted = await submit_input(api, backend, request("sdxl", width=768, height=1344))
    assert (sent["width"], sent["height"]) == (768, 1344)
    assert "aspect_ratio" not in sent
    assert submitted.data["size"] == [768, 1344]


async def test_aspect_ratio_on_sdxl_becomes_a_size(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """An aspect ratio on a width/height model is sent as a ~1 MP size in multiples of 8."""
    sent, _ = await submit_input(api, backend, request("sdxl", aspect_ratio="16:9"))
    assert (sent["width"], sent["height"]) == (1368, 768)


async def test_mapped_sizes_on_flux_pro_use_the_custom_aspect_ratio(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """Mapped width/height beside aspect_ratio go as aspect_ratio "custom", in multiples of 16."""
    dep = deployment(
        "flux-pro",
        endpoint="black-forest-labs/flux-1.1-pro",
        params={"width": "width", "height": "height"},
        limits=Limits(max_outputs_per_call=1, exact_sizes=True),
    )
    sent, submitted = await submit_input(api, backend, request("flux-pro", width=1000, height=600), dep)
    assert (sent["aspect_ratio"], sent["width"], sent["height"]) == ("custom", 1008, 608)
    assert submitted.data["size"] == [1008, 608]
    assert "cannot make 1000x600; sent 1008x608" in submitted.warnings[0]


async def test_provider_options_can_set_the_size(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """A size set in provider_options replaces the translated one, without size warnings."""
    options = {"replicate": {"aspect_ratio": "custom", "width": 1440, "height": 256}}
    sent, submitted = await submit_input(
        api, backend, request("flux-pro", width=1000, height=700, provider_options=options)
    )
    assert (sent["aspect_ratio"], sent["width"], sent["height"]) == ("custom", 1440, 256)
    assert submitted.warnings == []
    assert submitted.data["size"] == [1440, 256]


async def test_jpeg_is_sent_as_jpg(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """output_format jpeg uses Replicate's spelling, jpg."""
    sent, _ = await submit_input(api, backend, request(output_format="jpeg"))
    assert sent["output_format"] == "jpg"


async def test_a_format_the_model_cannot_make_is_dropped(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """gif for an image model is not sent, with a warning."""
    sent, submitted = await submit_input(api, backend, request(output_format="gif"))
    assert "output_format" not in sent
    assert "not gif" in submitted.warnings[0]


@pytest.mark.parametrize("checker", [True, False])
async def test_safety_checker_is_sent_inverted(
    api: respx.MockRouter, backend: ReplicateBackend, checker: bool
) -> None:
    """safety_checker=X is sent as disable_safety_checker=not X."""
    sent, _ = await submit_input(api, backend, request(safety_checker=checker))
    assert sent["disable_safety_checker"] is (not checker)


async def test_image_bytes_are_sent_as_a_data_uri(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """Image bytes become a data: URI with the sniffed type; strength goes to prompt_strength."""
    sent, _ = await submit_input(api, backend, request(image=PNG, strength=0.6))
    assert sent["image"].startswith("data:image/png;base64,iVBORw0KGgo")
    assert sent["prompt_strength"] == 0.6


async def test_image_path_is_read_and_inlined(
    api: respx.MockRouter, backend: ReplicateBackend, tmp_path: Path
) -> None:
    """A pathlib.Path image is read and sent as a data: URI."""
    path = tmp_path / "in.png"
    path.write_bytes(PNG)
    sent, _ = await submit_input(api, backend, request(image=path))
    assert sent["image"].startswith("data:image/png;base64,")


async def test_image_url_passes_through(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """An https image URL is sent as is."""
    sent, _ = await submit_input(api, backend, request(image="https://example.com/cat.png"))
    assert sent["image"] == "https://example.com/cat.png"


async def test_image_string_that_is_not_a_url_is_refused(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A string image must be a URL: a path-like string is never read from disk."""
    with pytest.raises(InvalidRequestError, match=r"pathlib\.Path") as caught:
        await backend.submit(deployment(), request(image="/etc/passwd"))
    assert caught.value.field == "image"


async def test_oversized_image_is_refused(api: respx.MockRouter) -> None:
    """Bytes over max_upload_bytes raise InvalidRequestError naming the field and the limit."""
    capped = make_backend(api, max_upload_bytes=8)
    with pytest.raises(InvalidRequestError, match="limit of 8 bytes") as caught:
        await capped.submit(deployment(), request(image=PNG))
    await capped.aclose()
    assert caught.value.field == "image"


async def test_unmapped_fields_are_dropped_with_warnings(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """Fields the model has no input for are not sent, and each leaves a warning."""
    sent, submitted = await submit_input(
        api, backend, request("flux-schnell", negative_prompt="blur", guidance=3.5, image=PNG)
    )
    assert {"negative_prompt", "guidance", "image"}.isdisjoint(sent)
    joined = " | ".join(submitted.warnings)
    for name in ("negative_prompt", "guidance", "image"):
        assert f"no input for {name}" in joined or f"no {name} input" in joined


async def test_provider_options_merge_last_and_the_key_beats_the_type(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """provider_options["replicate"] then [<provider key>] are merged over the translated input."""
    options = {"replicate": {"go_fast": False, "seed": 1}, "replicate-eu": {"seed": 2}, "fal": {"x": 1}}
    eu = make_backend(api, "replicate-eu")
    sent, _ = await submit_input(api, eu, request(seed=9, provider_options=options))
    await eu.aclose()
    assert (sent["go_fast"], sent["seed"]) == (False, 2)
    assert "x" not in sent


async def test_unserialisable_provider_options_are_invalid(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """provider_options that cannot be JSON are an InvalidRequestError, before any call."""
    with pytest.raises(InvalidRequestError, match="JSON"):
        await backend.submit(deployment(), request(provider_options={"replicate": {"when": object()}}))


async def test_mapped_loras_send_the_first_with_its_scale(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A catalog mapping loras: lora_weights sends the first LoRA and its lora_scale; more are dropped."""
    dep = deployment(endpoint="black-forest-labs/flux-dev-lora", params={"loras": "lora_weights"})
    loras = [LoRA(source="acme/style", scale=0.8), LoRA(source="acme/other")]
    sent, submitted = await submit_input(api, backend, request(loras=loras), dep)
    assert (sent["lora_weights"], sent["lora_scale"]) == ("acme/style", 0.8)
    assert "only 'acme/style' was sent" in submitted.warnings[0]


async def test_inline_entry_without_params_gets_the_standard_mapping(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """An inline entry with no params uses the shipped Replicate mapping (steps → num_inference_steps)."""
    dep = deployment(endpoint="acme/my-flux")
    sent, _ = await submit_input(api, backend, request(steps=12, seed=4), dep)
    assert sent == {"prompt": "a fox", "num_outputs": 1, "num_inference_steps": 12, "seed": 4}


# -- outputs ------------------------------------------------------------------------------------------


async def result_for(
    api: respx.MockRouter, backend: ReplicateBackend, body: dict[str, Any], **data: Any
) -> Any:
    api.get(f"/v1/predictions/{PID}").mock(return_value=httpx.Response(200, json=body))
    return await backend.fetch_result(job(**data))


async def test_single_url_output_is_one_artifact(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """A single URL string (flux-1.1-pro) becomes one image artifact, typed from its extension."""
    result = await result_for(api, backend, succeeded("https://replicate.delivery/x/output.webp"))
    assert [(a.kind.value, a.content_type) for a in result.outputs] == [("image", "image/webp")]


async def test_list_output_keeps_order_and_the_mapped_size(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A list of URLs becomes artifacts in order, sized as the aspect ratio mapped at submit."""
    urls = [f"https://replicate.delivery/x/out-{i}.png" for i in range(3)]
    result = await result_for(api, backend, succeeded(urls), size=[1216, 832])
    assert [a.url for a in result.outputs] == urls
    assert {(a.width, a.height) for a in result.outputs} == {(1216, 832)}


async def test_fewer_outputs_come_back_as_they_came(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """Fewer outputs than asked (a safety filter) are returned without padding; the router warns."""
    result = await result_for(api, backend, succeeded(["https://replicate.delivery/x/out-0.png"]))
    assert len(result.outputs) == 1


async def test_data_uri_outputs_are_accepted(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """data: URI outputs (sync mode) are artifacts typed from their header."""
    result = await result_for(api, backend, succeeded(["data:image/png;base64,iVBORw0KGgo="]))
    assert result.outputs[0].content_type == "image/png"
    assert await result.outputs[0].aread() == b"\x89PNG\r\n\x1a\n"


async def test_video_deployments_make_video_artifacts(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """A video model's MP4 is a video artifact with the catalog's fixed duration."""
    api.post("/v1/models/minimax/video-01/predictions").mock(
        return_value=httpx.Response(201, json=prediction())
    )
    submitted = await backend.submit(deployment("minimax-video"), request("minimax-video"))
    api.get(f"/v1/predictions/{PID}").mock(
        return_value=httpx.Response(200, json=succeeded("https://replicate.delivery/x/output.mp4"))
    )
    [video] = (await backend.fetch_result(submitted)).outputs
    assert (video.kind.value, video.content_type, video.duration_s) == ("video", "video/mp4", 6)


async def test_timings_come_from_timestamps_and_predict_time(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """queued_s = started_at - created_at (3 to 8 fractional digits, Z); running_s = predict_time."""
    result = await result_for(api, backend, succeeded(["https://replicate.delivery/a.png"]))
    assert result.timings.queued_s == pytest.approx(1.500358, abs=1e-6)
    assert result.timings.running_s == 2.25


async def test_running_time_falls_back_to_timestamps(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """Without metrics.predict_time, running_s is completed_at - started_at."""
    body = succeeded(["https://replicate.delivery/a.png"], metrics={})
    result = await result_for(api, backend, body)
    assert result.timings.running_s == pytest.approx(2.5, abs=1e-6)


async def test_seed_is_the_input_seed_only(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """The result's seed is the request's; Replicate's logs are not parsed for one."""
    body = succeeded(["https://replicate.delivery/a.png"], logs="Using seed: 1234")
    assert (await result_for(api, backend, body)).seed is None
    assert (await result_for(api, backend, body, seed=7)).seed == 7


async def test_removed_outputs_are_a_job_failure(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """A succeeded prediction whose data was removed (after an hour) raises JobFailedError."""
    body = succeeded(None, data_removed=True)
    with pytest.raises(JobFailedError, match="after an hour"):
        await result_for(api, backend, body)


async def test_raw_is_the_prediction_with_long_inline_inputs_elided(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """raw keeps the prediction, but a long data: input is shortened."""
    image = "data:image/png;base64," + "A" * 5000
    body = succeeded(["https://replicate.delivery/a.png"], input={"prompt": "a fox", "image": image})
    raw = (await result_for(api, backend, body)).raw
    assert raw["id"] == PID
    assert raw["input"]["prompt"] == "a fox"
    assert len(raw["input"]["image"]) < 100


# -- credentials -------------------------------------------------------------------------------------


async def test_token_is_sent_as_a_bearer_header(api: respx.MockRouter, backend: ReplicateBackend) -> None:
    """Every API call carries Authorization: Bearer <token>."""
    route = api.post(FLUX_DEV).mock(return_value=httpx.Response(201, json=prediction()))
    await backend.submit(deployment(), request())
    assert route.calls.last.request.headers["authorization"] == f"Bearer {TOKEN}"


async def test_token_is_read_from_the_environment(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without api_token, REPLICATE_API_TOKEN is used."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_fromtheenvironment0000000")
    route = api.post(FLUX_DEV).mock(return_value=httpx.Response(201, json=prediction()))
    backend = ReplicateBackend(name="replicate", settings={})
    await backend.submit(deployment(), request())
    await backend.aclose()
    assert route.calls.last.request.headers["authorization"] == "Bearer r8_fromtheenvironment0000000"


async def test_missing_token_makes_the_backend_unavailable(api: respx.MockRouter) -> None:
    """Without a token the backend is built, says why it is unavailable, and refuses to submit."""
    backend = ReplicateBackend(name="rep", settings={})
    assert (
        backend.unavailable_reason == "no Replicate token: set REPLICATE_API_TOKEN or providers.rep.api_token"
    )
    with pytest.raises(AuthenticationError, match="no Replicate token"):
        await backend.submit(deployment(), request())
    await backend.aclose()


def test_missing_token_excludes_replicate_in_explain() -> None:
    """The planner excludes a token-less Replicate provider with the reason, and routes elsewhere."""
    router = AsyncRouter.from_config(
        {"version": 1, "providers": {"replicate": {}, "sim": {"type": "simulated", "latency": 0}}}
    )
    candidates = {c.provider: c for c in router.explain("a fox", model="flux-dev").candidates}
    assert candidates["replicate"].excluded == (
        "no Replicate token: set REPLICATE_API_TOKEN or providers.replicate.api_token"
    )
    assert candidates["sim"].excluded is None


async def test_token_never_leaks_into_repr_jobs_or_errors(
    api: respx.MockRouter, backend: ReplicateBackend
) -> None:
    """The token is absent from repr, job JSON and error text, even when a provider echoes it."""
    api.post(FLUX_DEV).mock(return_value=httpx.Response(201, json=prediction()))
    submitted = await backend.submit(deployment(), request())

    def echo(req: httpx.Request) -> httpx.Response:
        return problem(500, f"upstream said: {req.headers['authorization']} and {TOKEN}")

    api.get(f"/v1/predictions/{PID}").mock(side_effect=echo)
    with pytest.raises(ProviderUnavailableError) as caught:
        await backend.poll(submitted)
    exposed = [
        repr(backend),
        str(backend),
        submitted.model_dump_json(),
        str(caught.value),
        repr(caught.value),
    ]
    assert "upstream said" in exposed[3]
    assert all(TOKEN not in text for text in exposed)


def test_repr_hides_credentials_in_the_base_url() -> None:
    """A proxy URL's user:password never shows in repr."""
    backend = make_backend(base_url="https://user:hunter2secret@proxy.example")
    assert repr(backend) == "ReplicateBackend(name='replicate', base_url='https://proxy.example')"


def test_latency_hint_is_none() -> None:
    """The backend gives no latency prior; the router learns from observations."""
    assert make_backend().latency_hint(deployment()) is None


async def test_a_closed_backend_refuses_calls(backend: ReplicateBackend) -> None:
    """After aclose(), calls fail with a typed, non-retryable error."""
    await backend.aclose()
    with pytest.raises(ProviderError, match="closed") as caught:
        await backend.poll(job())
    assert not caught.value.retryable


def test_bad_settings_are_a_config_error() -> None:
    """Settings that do not validate raise ConfigError naming the provider."""
    with pytest.raises(ConfigError, match=r"providers\.rep"):
        ReplicateBackend(name="rep", settings={"prefer_wait_s": 90})


# -- the Backend contract, against the loopback fake -----------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with serve(FakeReplicate()) as running:
        yield running


@pytest.fixture
def fake(server: LoopbackServer) -> FakeReplicate:
    handler = FakeReplicate()
    server.handler = handler
    return handler


class TestReplicateBackendContract(BackendContract):
    """ReplicateBackend passes the conformance suite every backend passes."""

    @pytest.fixture
    async def backend(self, fake: FakeReplicate, server: LoopbackServer) -> AsyncIterator[Backend]:
        instance = ReplicateBackend(
            name="replicate", settings={"api_token": FAKE_TOKEN, "base_url": server.url}
        )
        yield instance
        await instance.aclose()
        assert fake.leaked_auth == []

    @pytest.fixture
    async def reopen(self, fake: FakeReplicate, server: LoopbackServer) -> AsyncIterator[Backend]:
        instance = ReplicateBackend(
            name="replicate", settings={"api_token": FAKE_TOKEN, "base_url": server.url}
        )
        yield instance
        await instance.aclose()

    @pytest.fixture
    async def slow_backend(
        self, fake: FakeReplicate, server: LoopbackServer
    ) -> AsyncIterator[Backend | None]:
        fake.default_plan = Plan(statuses=("starting", "processing"))
        instance = ReplicateBackend(
            name="replicate", settings={"api_token": FAKE_TOKEN, "base_url": server.url}
        )
        yield instance
        await instance.aclose()

    @pytest.fixture
    def deployment(self) -> Deployment:
        return deployment()

    @pytest.fixture
    def secrets(self) -> list[str]:
        return [FAKE_TOKEN]
