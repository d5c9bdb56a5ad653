"""The real ``replicate`` client (1.0.7) against the loopback fake: proof that the fake speaks
Replicate's protocol, and a record of the SDK behaviours genrouter's backend works around."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
import replicate
from pydantic import v1 as pydantic_v1
from replicate.exceptions import ModelError, ReplicateError
from tests.fakes.replicate import SDXL_VERSION, TOKEN, FakeReplicate, Plan
from tests.fakes.server import LoopbackServer, serve

from genrouter import JobState, ProviderJob, ProviderUnavailableError
from genrouter.backends.replicate import ReplicateBackend

FLUX = "black-forest-labs/flux-dev"


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with serve(FakeReplicate()) as running:
        yield running


@pytest.fixture
def fake(server: LoopbackServer) -> FakeReplicate:
    handler = FakeReplicate()
    server.handler = handler
    return handler


@contextmanager
def sdk_client(url: str, token: str = TOKEN) -> Iterator[replicate.Client]:
    """The SDK pointed at ``url``, polling fast; its (lazily built) HTTP client closed after."""
    sdk = replicate.Client(api_token=token, base_url=url)
    sdk.poll_interval = 0.001
    try:
        yield sdk
    finally:
        sdk._client.close()


@pytest.fixture
def client(server: LoopbackServer) -> Iterator[replicate.Client]:
    with sdk_client(server.url) as sdk:
        yield sdk


@pytest.fixture
async def backend(server: LoopbackServer) -> AsyncIterator[ReplicateBackend]:
    instance = ReplicateBackend(name="replicate", settings={"api_token": TOKEN, "base_url": server.url})
    yield instance
    await instance.aclose()


def as_job(prediction_id: str) -> ProviderJob:
    return ProviderJob(provider="replicate", endpoint=FLUX, provider_request_id=prediction_id)


# -- the fake speaks Replicate's protocol ------------------------------------------------------------------


def test_sdk_parses_an_official_model_create(client: replicate.Client, fake: FakeReplicate) -> None:
    """models.predictions.create parses the fake's 201: id, model, version, status, urls."""
    prediction = client.models.predictions.create(model=FLUX, input={"prompt": "a fox"})
    assert len(prediction.id) == 26
    assert prediction.id.islower()
    assert (prediction.model, prediction.version, prediction.status) == (FLUX, "hidden", "starting")
    assert prediction.urls is not None
    assert prediction.urls["get"].endswith(f"/v1/predictions/{prediction.id}")
    assert fake.creates[0].path == f"/v1/models/{FLUX}/predictions"


def test_sdk_follows_the_progression_to_outputs(client: replicate.Client, fake: FakeReplicate) -> None:
    """predictions.get walks starting → processing → succeeded and parses metrics and outputs."""
    created = client.models.predictions.create(model=FLUX, input={"prompt": "a fox", "num_outputs": 2})
    seen = [client.predictions.get(created.id).status for _ in range(3)]
    assert seen == ["starting", "processing", "succeeded"]
    done = client.predictions.get(created.id)
    assert isinstance(done.output, list)
    assert len(done.output) == 2
    assert done.metrics is not None
    assert done.metrics["predict_time"] == 1.25


def test_sdk_cancels_a_running_prediction(client: replicate.Client, fake: FakeReplicate) -> None:
    """predictions.cancel parses the canceled prediction the fake answers."""
    fake.default_plan = Plan(statuses=("starting", "processing"))
    created = client.models.predictions.create(model=FLUX, input={"prompt": "a fox"})
    client.predictions.get(created.id)
    assert client.predictions.cancel(created.id).status == "canceled"
    assert fake.cancels == [created.id]


def test_sdk_run_with_a_version_reads_the_version(client: replicate.Client, fake: FakeReplicate) -> None:
    """run("owner/name:version") creates by version, GETs the version, and returns the outputs."""
    output = client.run(f"stability-ai/sdxl:{SDXL_VERSION}", input={"prompt": "a castle"})
    assert fake.creates[0].json()["version"] == SDXL_VERSION
    assert fake.version_gets == [SDXL_VERSION]
    assert isinstance(output, list)
    assert output[0].endswith("/out-0.png")  # http: URLs stay plain strings in the SDK


def test_sdk_run_is_served_by_prefer_wait(client: replicate.Client, fake: FakeReplicate) -> None:
    """run() on an official model sends Prefer: wait and gets the finished prediction from the create."""
    output = client.run(FLUX, input={"prompt": "a fox"})
    assert fake.creates[0].header("prefer") == "wait"
    assert sum(fake.gets.values()) == 0
    assert isinstance(output, list)
    assert len(output) == 1


def test_sdk_reads_the_fakes_problem_details(client: replicate.Client, fake: FakeReplicate) -> None:
    """A 422 from the fake is an RFC 7807 ReplicateError with title, detail and status."""
    with pytest.raises(ReplicateError) as caught:
        client.models.predictions.create(model=FLUX, input={"prompt": "a fox", "seed": "seven"})
    error = caught.value
    assert (error.status, error.title) == (422, "Input validation failed")
    assert error.detail is not None
    assert "input.seed" in error.detail


def test_sdk_is_refused_with_a_wrong_token(server: LoopbackServer, fake: FakeReplicate) -> None:
    """A wrong token is a 401 Unauthenticated, as Replicate answers."""
    with (
        sdk_client(server.url, "r8_wrongwrongwrongwrongwrong") as sdk,
        pytest.raises(ReplicateError) as caught,
    ):
        sdk.models.predictions.create(model=FLUX, input={"prompt": "a fox"})
    assert (caught.value.status, caught.value.title) == (401, "Unauthenticated")


def test_sdk_raises_model_error_for_a_failed_run(client: replicate.Client, fake: FakeReplicate) -> None:
    """A failed prediction surfaces in run() as ModelError with the prediction's error text."""
    fake.default_plan = Plan(statuses=("failed",), error="All generated images contained NSFW content")
    with pytest.raises(ModelError, match="NSFW"):
        client.run(FLUX, input={"prompt": "a fox"})


async def test_sdk_and_backend_read_the_same_prediction(
    client: replicate.Client, fake: FakeReplicate, backend: ReplicateBackend
) -> None:
    """A prediction created by the SDK is polled and fetched by the backend."""
    created = client.models.predictions.create(model=FLUX, input={"prompt": "a fox"})
    while not (await backend.poll(as_job(created.id))).state.is_terminal:
        pass
    result = await backend.fetch_result(as_job(created.id))
    assert [a.url for a in result.outputs] == client.predictions.get(created.id).output


# -- the SDK behaviours the backend works around -------------------------------------------------------------


async def test_sdk_crashes_on_aborted_where_the_backend_reads_cancelled(
    client: replicate.Client, fake: FakeReplicate, backend: ReplicateBackend
) -> None:
    """replicate 1.0.7 cannot parse status "aborted"; the backend reads it as cancelled."""
    fake.default_plan = Plan(statuses=("aborted",))
    created = client.models.predictions.create(model=FLUX, input={"prompt": "a fox"})
    with pytest.raises(pydantic_v1.ValidationError, match="status"):
        client.predictions.get(created.id)
    assert (await backend.poll(as_job(created.id))).state is JobState.CANCELLED


def test_sdk_create_with_model_drops_wait(client: replicate.Client, fake: FakeReplicate) -> None:
    """predictions.create(model=..., wait=5) sends no Prefer header (the backend sends its own)."""
    client.predictions.create(model=FLUX, input={"prompt": "a fox"}, wait=5)
    assert fake.creates[0].header("prefer") is None


async def test_sdk_retries_gets_itself_where_the_backend_does_not(
    client: replicate.Client, fake: FakeReplicate, backend: ReplicateBackend
) -> None:
    """The SDK's RetryTransport re-sends a 503'd GET (a second retry layer); the backend sends one."""
    fake.default_plan = Plan(get_faults=(503, 503, 503))
    created = client.models.predictions.create(model=FLUX, input={"prompt": "a fox"})
    with pytest.raises(ProviderUnavailableError) as caught:
        await backend.poll(as_job(created.id))
    assert caught.value.retryable
    assert fake.gets[created.id] == 1  # one GET: the router decides whether to poll again
    assert client.predictions.get(created.id).status == "starting"
    assert fake.gets[created.id] == 4  # two more 503s retried inside the SDK, then an answer
