"""genrouter.testing: FakeBackend, FunctionBackend, FakeClock, set_testing, BackendContract."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from genrouter import (
    Artifact,
    GenerationRequest,
    GenerationResult,
    JobFailedError,
    JobState,
    ProviderUnavailableError,
)
from genrouter.backends.base import Backend
from genrouter.catalog import CatalogEntry, Deployment, build_deployment
from genrouter.engine import _testing_mode
from genrouter.testing import (
    BackendContract,
    FailJob,
    FailSubmit,
    FakeBackend,
    FakeClock,
    FunctionBackend,
    Hang,
    Succeed,
    set_testing,
)


def deployment(provider: str = "fake") -> Deployment:
    return build_deployment(
        provider=provider,
        provider_type="custom",
        model="flux-dev",
        entry=CatalogEntry(endpoint=f"{provider}/flux-dev"),
        spec=None,
    )


def request(**fields: object) -> GenerationRequest:
    return GenerationRequest.model_validate({"model": "flux-dev", "prompt": "a fox", **fields})


async def artifacts(req: GenerationRequest) -> Sequence[Artifact]:
    return [Artifact(url=f"data:image/png;base64,iVBORw0KGgo=#{i}") for i in range(req.num_outputs)]


async def forever(req: GenerationRequest) -> Sequence[Artifact]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


# -- contract conformance ------------------------------------------------------------------------


class TestFakeBackendContract(BackendContract):
    """FakeBackend passes the Backend contract."""

    @pytest.fixture
    def backend(self) -> Backend:
        return FakeBackend(name="fake")

    @pytest.fixture
    def deployment(self) -> Deployment:
        return deployment("fake")

    @pytest.fixture
    def slow_backend(self) -> Backend | None:
        return FakeBackend(name="fake", script=[Hang()])


class TestFunctionBackendContract(BackendContract):
    """FunctionBackend passes the Backend contract."""

    @pytest.fixture
    def backend(self) -> Backend:
        return FunctionBackend(artifacts, name="fn")

    @pytest.fixture
    def deployment(self) -> Deployment:
        return deployment("fn")

    @pytest.fixture
    def slow_backend(self) -> Backend | None:
        return FunctionBackend(forever, name="fn")


def test_backend_contract_is_importable_from_genrouter_testing() -> None:
    """BackendContract is exposed (lazily) by genrouter.testing."""
    import genrouter.testing
    from genrouter.testing._contract import BackendContract as Direct

    assert genrouter.testing.BackendContract is Direct


# -- FakeBackend ------------------------------------------------------------------------------------


async def test_fake_backend_plays_its_script_in_order_and_repeats_the_last_step() -> None:
    """Each submit consumes the next step; after the script ends, the last step repeats."""
    backend = FakeBackend(name="f", script=[ProviderUnavailableError("503"), Succeed()])
    with pytest.raises(ProviderUnavailableError):
        await backend.submit(deployment("f"), request())
    first = await backend.submit(deployment("f"), request())
    second = await backend.submit(deployment("f"), request())
    assert (await backend.poll(first)).state is JobState.SUCCEEDED
    assert (await backend.poll(second)).state is JobState.SUCCEEDED
    assert backend.submit_count == 3


async def test_fake_backend_records_every_submission_in_order() -> None:
    """submissions holds the requests received, accepted or refused, in order."""
    backend = FakeBackend(name="f", script=[FailSubmit(ProviderUnavailableError("503")), Succeed()])
    with pytest.raises(ProviderUnavailableError):
        await backend.submit(deployment("f"), request(seed=1))
    await backend.submit(deployment("f"), request(seed=2))
    assert [r.seed for r in backend.submissions] == [1, 2]


async def test_fake_backend_job_ids_are_name_and_submission_number() -> None:
    """Accepted jobs are named '<name>-<n>' by submission number."""
    backend = FakeBackend(name="f")
    job = await backend.submit(deployment("f"), request())
    assert (job.provider, job.endpoint, job.provider_request_id) == ("f", "f/flux-dev", "f-1")


async def test_fake_backend_fail_job_fails_after_acceptance() -> None:
    """FailJob: the job is accepted, then reads as failed and fetch_result raises the error."""
    error = JobFailedError("nsfw")
    backend = FakeBackend(name="f", script=[FailJob(error)])
    job = await backend.submit(deployment("f"), request())
    assert (await backend.poll(job)).state is JobState.FAILED
    with pytest.raises(JobFailedError) as info:
        await backend.fetch_result(job)
    assert info.value is error


async def test_fake_backend_succeed_latency_keeps_the_job_running() -> None:
    """Succeed(latency_s) keeps the job running until that much loop time has passed."""
    backend = FakeBackend(name="f", script=[Succeed(latency_s=0.05)])
    job = await backend.submit(deployment("f"), request())
    assert (await backend.poll(job)).state is JobState.RUNNING
    await asyncio.sleep(0.06)
    assert (await backend.poll(job)).state is JobState.SUCCEEDED


async def test_fake_backend_hang_runs_until_cancelled() -> None:
    """Hang: the job stays running; cancel() records it and the job reads cancelled."""
    backend = FakeBackend(name="f", script=[Hang()])
    job = await backend.submit(deployment("f"), request())
    assert (await backend.poll(job)).state is JobState.RUNNING
    await backend.cancel(job)
    assert backend.cancelled == ["f-1"]
    assert (await backend.poll(job)).state is JobState.CANCELLED
    with pytest.raises(JobFailedError) as info:
        await backend.fetch_result(job)
    assert info.value.state == "cancelled"


async def test_fake_backend_succeed_outputs_overrides_the_count() -> None:
    """Succeed(outputs=n) returns n outputs whatever was requested."""
    backend = FakeBackend(name="f", script=[Succeed(outputs=1)])
    job = await backend.submit(deployment("f"), request(num_outputs=3, width=32, height=32))
    result = await backend.fetch_result(job)
    assert len(result.outputs) == 1
    assert (result.outputs[0].width, result.outputs[0].height) == (32, 32)


async def test_fake_backend_outputs_are_readable_pngs() -> None:
    """FakeBackend outputs are sim: URLs that read as PNG bytes."""
    backend = FakeBackend(name="f")
    job = await backend.submit(deployment("f"), request(width=16, height=16))
    data = (await backend.fetch_result(job)).outputs[0].read()
    assert data.startswith(b"\x89PNG")


async def test_fake_backend_counts_polls() -> None:
    """polls counts every poll() call."""
    backend = FakeBackend(name="f")
    job = await backend.submit(deployment("f"), request())
    await backend.poll(job)
    await backend.poll(job)
    assert backend.polls == 2


async def test_fake_backend_empty_script_succeeds() -> None:
    """An empty script behaves as a single Succeed step."""
    backend = FakeBackend(name="f", script=[])
    job = await backend.submit(deployment("f"), request())
    assert (await backend.poll(job)).state is JobState.SUCCEEDED


# -- FunctionBackend -----------------------------------------------------------------------------------


async def test_function_backend_returns_the_functions_artifacts() -> None:
    """A function returning artifacts becomes a result with those outputs, pinned to the job."""
    backend = FunctionBackend(artifacts, name="fn")
    job = await backend.submit(deployment("fn"), request(num_outputs=2, seed=4))
    assert (await backend.wait(job, 1.0)).state is JobState.SUCCEEDED
    result = await backend.fetch_result(job)
    assert len(result.outputs) == 2
    assert (result.provider, result.provider_request_id, result.seed) == ("fn", job.provider_request_id, 4)


async def test_function_backend_passes_a_generation_result_through() -> None:
    """A function returning a GenerationResult has it returned as is."""
    made = GenerationResult(id="x", model="m", provider="p", endpoint="e", outputs=[])

    async def fn(req: GenerationRequest) -> GenerationResult:
        return made

    backend = FunctionBackend(fn, name="fn")
    job = await backend.submit(deployment("fn"), request())
    await backend.wait(job, 1.0)
    assert await backend.fetch_result(job) is made


async def test_function_backend_wraps_a_plain_exception_as_job_failed() -> None:
    """A function raising a non-genrouter exception fails the job with JobFailedError."""

    async def fn(req: GenerationRequest) -> Sequence[Artifact]:
        raise ValueError("bad latent")

    backend = FunctionBackend(fn, name="fn")
    job = await backend.submit(deployment("fn"), request())
    assert (await backend.wait(job, 1.0)).state is JobState.FAILED
    with pytest.raises(JobFailedError, match="ValueError: bad latent") as info:
        await backend.fetch_result(job)
    assert isinstance(info.value.__cause__, ValueError)


async def test_function_backend_re_raises_genrouter_errors() -> None:
    """A function raising a genrouter error has that error raised by fetch_result."""

    async def fn(req: GenerationRequest) -> Sequence[Artifact]:
        raise ProviderUnavailableError("gpu gone")

    backend = FunctionBackend(fn, name="fn")
    job = await backend.submit(deployment("fn"), request())
    await backend.wait(job, 1.0)
    with pytest.raises(ProviderUnavailableError, match="gpu gone"):
        await backend.fetch_result(job)


async def test_function_backend_cancel_cancels_the_task() -> None:
    """cancel() cancels the function's task; the job reads cancelled."""
    backend = FunctionBackend(forever, name="fn")
    job = await backend.submit(deployment("fn"), request())
    await backend.cancel(job)
    assert (await backend.wait(job, 1.0)).state is JobState.CANCELLED
    with pytest.raises(JobFailedError) as info:
        await backend.fetch_result(job)
    assert info.value.state == "cancelled"


async def test_function_backend_aclose_cancels_unfinished_tasks() -> None:
    """aclose() cancels every job still running."""
    backend = FunctionBackend(forever, name="fn")
    job = await backend.submit(deployment("fn"), request())
    await backend.aclose()
    assert (await backend.wait(job, 1.0)).state is JobState.CANCELLED


async def test_function_backend_wait_returns_running_after_the_timeout() -> None:
    """wait() returns the running state when the function outlasts the timeout."""
    backend = FunctionBackend(forever, name="fn")
    job = await backend.submit(deployment("fn"), request())
    assert (await backend.wait(job, 0.01)).state is JobState.RUNNING
    await backend.aclose()


# -- FakeClock and set_testing ----------------------------------------------------------------------------


async def test_fake_clock_sleep_advances_time_instantly_and_records_it() -> None:
    """FakeClock.sleep advances now() by the amount and records it in sleeps."""
    clock = FakeClock(start=10.0)
    await clock.sleep(2.5)
    await clock.sleep(0.5)
    assert clock.now() == 13.0
    assert clock.sleeps == [2.5, 0.5]


async def test_fake_clock_zero_or_negative_sleep_does_not_move_time() -> None:
    """A sleep of zero or less is recorded but does not move time."""
    clock = FakeClock(start=0.0)
    await clock.sleep(0)
    await clock.sleep(-1)
    assert clock.now() == 0.0
    assert clock.sleeps == [0, -1]


def test_fake_clock_advance_moves_time_without_recording_a_sleep() -> None:
    """advance() moves now() forward without adding to sleeps."""
    clock = FakeClock()
    start = clock.now()
    clock.advance(30)
    assert clock.now() == start + 30
    assert clock.sleeps == []


def test_set_testing_toggles_the_router_test_switch() -> None:
    """set_testing() turns the no-backoff switch on, set_testing(False) off."""
    set_testing()
    assert _testing_mode.enabled
    set_testing(False)
    assert not _testing_mode.enabled
