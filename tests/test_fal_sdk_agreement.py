"""fal's own client (fal_client) drives the loopback fake: proof that the fake speaks fal's protocol.

fal_client takes no base URL, so its URL prefixes are monkeypatched to the fake
(reference §"Point fal_client at a fake"); ``key=`` is passed and ``FAL_HOME_DIR`` is a
temporary folder, so it never reads ``~/.fal`` or calls fal's auth service. The
genrouter backend is then held to the same requests fal_client makes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import fal_client
import fal_client.client
import pytest

from fakes.fal import Behaviour, FakeFal, start_server
from fakes.server import LoopbackServer
from genrouter import GenerationRequest, JobState
from genrouter.backends.fal import FalBackend
from genrouter.catalog import Catalog, build_deployment
from genrouter.testing._contract import wait_terminal

KEY = "fal-sdk-agreement-key-42"
FLUX = "fal-ai/flux/dev"
KLING = "fal-ai/kling-video/v1.6/standard/text-to-video"


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    loopback = start_server()
    yield loopback
    loopback.stop()


@pytest.fixture
def fake(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeFal:
    fake = FakeFal(api_key=KEY)
    server.handler = fake
    server.requests.clear()
    monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", f"{server.url}/")
    monkeypatch.setattr(fal_client.client, "RUN_URL_FORMAT", f"{server.url}/")
    monkeypatch.setenv("FAL_HOME_DIR", str(tmp_path))
    return fake


@pytest.fixture
async def sdk(fake: FakeFal) -> AsyncIterator[fal_client.AsyncClient]:
    client = fal_client.AsyncClient(key=KEY)
    yield client
    # fal_client has no close(); its httpx client is a cached property.
    if "_client" in client.__dict__:
        await (await client._client).aclose()


@pytest.fixture
def sync_sdk(fake: FakeFal) -> Iterator[fal_client.SyncClient]:
    client = fal_client.SyncClient(key=KEY)
    yield client
    if "_client" in client.__dict__:
        client._client.close()


async def test_async_client_walks_queue_progress_completed(sdk: fal_client.AsyncClient) -> None:
    """submit → status(IN_QUEUE) → status(IN_PROGRESS) → status(COMPLETED) parse into fal_client's types."""
    handle = await sdk.submit(FLUX, {"prompt": "a fox", "image_size": "square_hd"})
    queued = await handle.status(with_logs=True)
    running = await handle.status(with_logs=True)
    done = await handle.status(with_logs=True)
    assert isinstance(queued, fal_client.Queued)
    assert queued.position == 0
    assert isinstance(running, fal_client.InProgress)
    assert running.logs is not None
    assert running.logs[0]["message"] == "poll 2"
    assert isinstance(done, fal_client.Completed)
    assert (done.error, done.metrics) == (None, {"inference_time": 1.25})


async def test_async_client_gets_the_result(sdk: fal_client.AsyncClient) -> None:
    """handle.get() polls to completion and returns images of the requested size."""
    handle = await sdk.submit(FLUX, {"prompt": "a fox", "image_size": {"width": 640, "height": 480}})
    output = await handle.get(interval=0.001)
    (image,) = output["images"]
    assert (image["width"], image["height"]) == (640, 480)
    assert image["url"].startswith("http://127.0.0.1:")


def test_sync_client_round_trip(sync_sdk: fal_client.SyncClient, fake: FakeFal) -> None:
    """The sync client submits, polls and fetches against the fake."""
    handle = sync_sdk.submit(FLUX, {"prompt": "a fox", "num_images": 2})
    output = handle.get(interval=0.001)
    assert len(output["images"]) == 2
    assert fake.submit_count("a fox") == 1


async def test_cancel_of_a_running_job_is_accepted(sdk: fal_client.AsyncClient, fake: FakeFal) -> None:
    """cancel() of a hanging job succeeds; the job then shows COMPLETED with client_cancelled."""
    fake.behaviour = Behaviour(hang=True)
    handle = await sdk.submit(FLUX, {"prompt": "a fox"})
    await handle.cancel()
    status = await handle.status()
    assert isinstance(status, fal_client.Completed)
    assert status.error_type == "client_cancelled"
    assert fake.cancels == [handle.request_id]


async def test_cancel_after_completion_is_already_completed(sdk: fal_client.AsyncClient) -> None:
    """cancel() of a finished job answers 400 ALREADY_COMPLETED, as fal does."""
    handle = await sdk.submit(FLUX, {"prompt": "a fox"})
    await handle.get(interval=0.001)
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        await handle.cancel()
    assert info.value.status_code == 400
    assert "ALREADY_COMPLETED" in str(info.value.message)


async def test_handles_built_by_the_sdk_reach_subpath_jobs(sdk: fal_client.AsyncClient) -> None:
    """fal_client's own owner/alias URLs (status/result by id) find a kling job."""
    handle = await sdk.submit(KLING, {"prompt": "a fox", "duration": "5"})
    output = await sdk.result(KLING, handle.request_id)
    assert output["video"]["content_type"] == "video/mp4"
    assert isinstance(await sdk.status(KLING, handle.request_id), fal_client.Completed)


async def test_sdk_reads_the_fakes_422(sdk: fal_client.AsyncClient, fake: FakeFal) -> None:
    """A 422 from the fake is fal_client's FalClientHTTPError with the detail list."""
    fake.behaviour = Behaviour(submit_status=422)
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        await sdk.submit(FLUX, {"prompt": "a fox"})
    assert info.value.status_code == 422
    assert isinstance(info.value.message, list)
    assert fake.submit_count() == 1


async def test_backend_makes_the_same_requests_as_fal_client(
    sdk: fal_client.AsyncClient, fake: FakeFal, server: LoopbackServer
) -> None:
    """For a subpath endpoint with a webhook, the backend submits, polls and fetches where fal_client does."""
    hook = "https://app.example/hooks/fal?tenant=a&b=1"
    handle = await sdk.submit(KLING, {"prompt": "sdk"}, webhook_url=hook)
    await handle.get(interval=0.001)
    theirs = _shape(server, handle.request_id)

    server.requests.clear()
    catalog = Catalog.load()
    deployment = build_deployment(
        provider="fal",
        provider_type="fal",
        model="kling-video",
        entry=catalog.entries_for("fal")["kling-video"],
        spec=catalog.models["kling-video"],
    )
    backend = FalBackend(name="fal", settings={"api_key": KEY, "base_url": server.url})
    try:
        request = GenerationRequest(model="kling-video", prompt="ours")
        job = await backend.submit(deployment, request, webhook_url=hook)
        assert (await wait_terminal(backend, job, timeout_s=10)).state is JobState.SUCCEEDED
        await backend.fetch_result(job)
    finally:
        await backend.aclose()

    assert _shape(server, job.provider_request_id) == theirs
    assert theirs == [
        ("POST", f"/{KLING}"),
        ("GET", "/fal-ai/kling-video/requests/{id}/status"),
        ("GET", "/fal-ai/kling-video/requests/{id}"),
    ]
    assert fake.job_for("ours").webhook == fake.job_for("sdk").webhook == hook


def _shape(server: LoopbackServer, request_id: str) -> list[tuple[str, str]]:
    """The distinct (method, path) pairs the server saw, in first-seen order, the id as ``{id}``."""
    seen: list[tuple[str, str]] = []
    for r in server.requests:
        pair = (r.method, r.path.replace(request_id, "{id}"))
        if pair not in seen:
            seen.append(pair)
    return seen
