"""The simulated provider: the Backend contract, and its latency, failure and output model."""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from typing import Any

import pytest

from genrouter import (
    AllProvidersFailedError,
    AsyncRouter,
    GenerationRequest,
    InvalidRequestError,
    JobFailedError,
    JobState,
    NoRouteError,
    ProviderJob,
    ProviderUnavailableError,
    RateLimitedError,
)
from genrouter.backends.base import Backend
from genrouter.backends.simulated import SimulatedBackend
from genrouter.catalog import Catalog, Deployment, build_deployment
from genrouter.testing import BackendContract, FakeClock, set_testing

FAST = {"median_s": 0.01, "p99_s": 0.02}


def simulated(**settings: Any) -> SimulatedBackend:
    return SimulatedBackend(name="sim", settings={"seed": 3, **settings})


def deployment_of(backend: SimulatedBackend, model: str = "flux-dev") -> Deployment:
    catalog = Catalog.load()
    entry = backend.default_entries(catalog)[model]
    return build_deployment(
        provider=backend.name,
        provider_type="simulated",
        model=model,
        entry=entry,
        spec=catalog.models[model],
        price_override=backend.settings.price,
    )


def request(**fields: Any) -> GenerationRequest:
    return GenerationRequest.model_validate({"model": "flux-dev", "prompt": "a fox", **fields})


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def finished(backend: SimulatedBackend, job: ProviderJob) -> JobState:
    return (await backend.wait(job, 2.0)).state


# -- the Backend contract ---------------------------------------------------------------------------


class TestSimulatedBackendContract(BackendContract):
    """SimulatedBackend passes the conformance suite every backend passes."""

    @pytest.fixture
    def backend(self) -> Backend:
        return simulated(latency=FAST)

    @pytest.fixture
    def deployment(self) -> Deployment:
        return deployment_of(simulated(latency=FAST))

    @pytest.fixture
    def slow_backend(self) -> Backend | None:
        return simulated(latency=FAST, hang_rate=1.0)

    @pytest.fixture
    def reopen(self) -> Backend:
        return simulated(latency=FAST)


def test_simulated_backend_satisfies_the_backend_protocol() -> None:
    """SimulatedBackend is a Backend (runtime-checkable protocol)."""
    assert isinstance(simulated(), Backend)


# -- outputs -----------------------------------------------------------------------------------------


async def test_outputs_are_deterministic_for_a_seed() -> None:
    """Two jobs with the same seed and size produce the same image bytes; another seed differs."""
    backend = simulated()
    deployment = deployment_of(backend)

    async def image(seed: int) -> bytes:
        job = await backend.submit(deployment, request(seed=seed, width=48, height=32))
        result = await backend.fetch_result(job)
        return result.outputs[0].read()

    assert await image(7) == await image(7)
    assert await image(7) != await image(8)


async def test_outputs_are_pngs_of_the_requested_size() -> None:
    """Each output reads as a PNG whose IHDR has the requested width and height."""
    backend = simulated()
    job = await backend.submit(deployment_of(backend), request(width=80, height=48, num_outputs=2))
    result = await backend.fetch_result(job)
    assert len(result.outputs) == 2
    for artifact in result.outputs:
        assert (artifact.width, artifact.height) == (80, 48)
        assert artifact.content_type == "image/png"
        assert png_size(artifact.read()) == (80, 48)


async def test_each_output_of_a_job_differs() -> None:
    """The outputs of one multi-output job are different images."""
    backend = simulated()
    job = await backend.submit(deployment_of(backend), request(width=32, height=32, num_outputs=2, seed=1))
    first, second = (a.read() for a in (await backend.fetch_result(job)).outputs)
    assert first != second


async def test_without_a_size_outputs_use_the_default_size() -> None:
    """A request without a size gets the simulated default (1024×1024)."""
    backend = simulated()
    job = await backend.submit(deployment_of(backend), request())
    artifact = (await backend.fetch_result(job)).outputs[0]
    assert (artifact.width, artifact.height) == (1024, 1024)


async def test_without_a_seed_the_job_picks_one_and_reports_it() -> None:
    """A request without a seed gets one chosen by the simulator, reported on the result."""
    backend = simulated()
    job = await backend.submit(deployment_of(backend), request(width=16, height=16))
    result = await backend.fetch_result(job)
    assert isinstance(result.seed, int)


async def test_non_png_output_format_warns() -> None:
    """Asking for jpeg gets PNGs and a warning saying so."""
    backend = simulated()
    job = await backend.submit(deployment_of(backend), request(width=16, height=16, output_format="jpeg"))
    assert job.warnings == ["sim: simulated outputs are PNG, not jpeg"]


# -- latency ------------------------------------------------------------------------------------------


async def test_zero_latency_jobs_finish_at_once() -> None:
    """With no latency configured a job is succeeded as soon as it is submitted."""
    backend = simulated()
    job = await backend.submit(deployment_of(backend), request(width=16, height=16))
    assert (await backend.poll(job)).state is JobState.SUCCEEDED


async def test_a_job_runs_for_its_latency() -> None:
    """A job with a latency is running at first, then succeeds; running_s is that latency."""
    backend = simulated(latency={"median_s": 0.05, "p99_s": 0.05})
    job = await backend.submit(deployment_of(backend), request(width=16, height=16))
    assert (await backend.poll(job)).state is JobState.RUNNING
    assert await finished(backend, job) is JobState.SUCCEEDED
    result = await backend.fetch_result(job)
    assert result.timings.running_s == pytest.approx(0.05)


async def test_fetching_a_running_job_raises_a_retryable_job_failure() -> None:
    """fetch_result() before the job finished raises a retryable JobFailedError."""
    backend = simulated(latency={"median_s": 5, "p99_s": 5})
    job = await backend.submit(deployment_of(backend), request(width=16, height=16))
    with pytest.raises(JobFailedError) as info:
        await backend.fetch_result(job)
    assert info.value.retryable


async def test_incidents_raise_latency() -> None:
    """Inside an incident window latency is multiplied by latency_multiplier."""
    latency = {"median_s": 0.02, "p99_s": 0.02}
    calm = simulated(latency=latency)
    stormy = simulated(latency=latency, incidents=[{"start_s": 0, "end_s": 600, "latency_multiplier": 4}])
    running = []
    for backend in (calm, stormy):
        job = await backend.submit(deployment_of(backend), request(width=16, height=16))
        assert await finished(backend, job) is JobState.SUCCEEDED
        running.append((await backend.fetch_result(job)).timings.running_s)
    assert running == [pytest.approx(0.02), pytest.approx(0.08)]


async def test_incidents_outside_their_window_change_nothing() -> None:
    """An incident that has not started yet leaves jobs unaffected."""
    backend = simulated(incidents=[{"start_s": 500, "end_s": 600, "failure_rate": 1.0}])
    job = await backend.submit(deployment_of(backend), request(width=16, height=16))
    assert (await backend.poll(job)).state is JobState.SUCCEEDED


async def test_incidents_can_raise_the_failure_rate() -> None:
    """An incident's failure_rate applies inside its window."""
    backend = simulated(incidents=[{"start_s": 0, "end_s": 600, "failure_rate": 1.0}])
    job = await backend.submit(deployment_of(backend), request(width=16, height=16))
    assert (await backend.poll(job)).state is JobState.FAILED


def test_latency_hint_is_the_configured_p95() -> None:
    """The latency hint is the p95 of the lognormal through median_s and p99_s."""
    backend = simulated(latency={"median_s": 1.0, "p99_s": 3.0})
    hint = backend.latency_hint(deployment_of(backend))
    assert hint is not None
    assert 1.0 < hint < 3.0
    sigma = math.log(3.0) / 2.3263478740408408
    assert hint == pytest.approx(math.exp(1.6448536269514722 * sigma))
    assert simulated().latency_hint(deployment_of(simulated())) == 0.0


async def test_max_concurrency_queues_jobs_beyond_it() -> None:
    """With max_concurrency 1 a second job waits queued while the first runs."""
    backend = simulated(latency={"median_s": 0.2, "p99_s": 0.2}, max_concurrency=1)
    deployment = deployment_of(backend)
    first = await backend.submit(deployment, request(width=16, height=16))
    second = await backend.submit(deployment, request(width=16, height=16))
    assert (await backend.poll(first)).state is JobState.RUNNING
    assert (await backend.poll(second)).state is JobState.QUEUED


# -- failures ------------------------------------------------------------------------------------------


async def test_failure_rate_one_fails_every_job_as_unavailable() -> None:
    """failure_rate=1: every job fails, and fetch_result raises a 503-like ProviderUnavailableError."""
    backend = simulated(failure_rate=1.0)
    job = await backend.submit(deployment_of(backend), request(width=16, height=16))
    status = await backend.poll(job)
    assert status.state is JobState.FAILED
    assert status.error is not None
    with pytest.raises(ProviderUnavailableError) as info:
        await backend.fetch_result(job)
    assert info.value.status_code == 503
    assert info.value.provider_request_id == job.provider_request_id


async def test_rate_limit_rate_one_refuses_every_submit_with_retry_after() -> None:
    """rate_limit_rate=1: submit raises RateLimitedError(429) carrying retry_after_s."""
    backend = simulated(rate_limit_rate=1.0, retry_after_s=2.5)
    with pytest.raises(RateLimitedError) as info:
        await backend.submit(deployment_of(backend), request())
    assert info.value.retry_after == 2.5
    assert info.value.status_code == 429
    assert info.value.provider == "sim"


async def test_hang_rate_one_jobs_never_finish_until_cancelled() -> None:
    """hang_rate=1: a job stays running; after cancel it is cancelled and fetch_result says so."""
    backend = simulated(hang_rate=1.0)
    job = await backend.submit(deployment_of(backend), request(width=16, height=16))
    assert (await backend.wait(job, 0.02)).state is JobState.RUNNING
    await backend.cancel(job)
    assert (await backend.poll(job)).state is JobState.CANCELLED
    with pytest.raises(JobFailedError) as info:
        await backend.fetch_result(job)
    assert info.value.state == "cancelled"


async def test_an_unknown_request_id_is_an_invalid_request() -> None:
    """Polling a job id the simulator never issued raises InvalidRequestError."""
    backend = simulated()
    job = ProviderJob(provider="sim", endpoint="flux-dev", provider_request_id="not-a-sim-id")
    with pytest.raises(InvalidRequestError):
        await backend.poll(job)


# -- through the router -------------------------------------------------------------------------------------


def sim_config(**section: Any) -> dict[str, Any]:
    return {"version": 1, "providers": {"sim": {"type": "simulated", **section}}}


def test_without_models_it_serves_every_shipped_image_model_at_its_price() -> None:
    """Without models: a simulated provider serves each image model of the catalog at price."""
    router = AsyncRouter.from_config(sim_config(price={"per_image": "0.02"}))
    image_models = {name for name, spec in router.catalog.models.items() if spec.kind == "image"}
    served = {d.model for d in router.deployments()}
    assert served == image_models
    assert "flux-dev" in served
    assert all(d.pricing is not None and d.pricing.amount == Decimal("0.02") for d in router.deployments())


def test_with_models_it_serves_only_those() -> None:
    """An inline models: section limits what a simulated provider serves."""
    router = AsyncRouter.from_config(
        sim_config(models={"flux-dev": {"endpoint": "my-flux", "price": {"per_image": "0.05"}}})
    )
    assert [(d.model, d.endpoint) for d in router.deployments()] == [("flux-dev", "my-flux")]


def test_inline_models_without_limits_get_the_simulated_limits() -> None:
    """An inline simulated entry without limits takes sizes 16-4096 and 4 outputs per call."""
    router = AsyncRouter.from_config(sim_config(models={"flux-dev": {"endpoint": "my-flux"}}))
    limits = router.deployments("flux-dev")[0].limits
    assert (limits.width, limits.height) == ((16, 4096), (16, 4096))
    assert limits.max_outputs_per_call == 4


async def test_router_accepts_sizes_from_16_to_4096() -> None:
    """Widths and heights of 16 and 4096 are served."""
    router = AsyncRouter.from_config(sim_config())
    result = await router.generate("a fox", model="flux-dev", width=16, height=16)
    assert (result.outputs[0].width, result.outputs[0].height) == (16, 16)
    assert router.explain("a fox", model="flux-dev", width=4096, height=16).candidates[0].excluded is None


async def test_router_excludes_sizes_over_4096() -> None:
    """A width over 4096 leaves no route, saying the size is out of range."""
    router = AsyncRouter.from_config(sim_config())
    with pytest.raises(NoRouteError, match="width 4097 outside this endpoint's range 16-4096"):
        await router.generate("a fox", model="flux-dev", width=4097, height=512)


async def test_router_prices_simulated_outputs() -> None:
    """A simulated provider's price gives the result's cost."""
    router = AsyncRouter.from_config(sim_config(price={"per_image": "0.03"}))
    result = await router.generate("a fox", model="flux-dev", width=16, height=16, num_outputs=2)
    assert result.cost.amount_usd == Decimal("0.06")


async def test_router_retries_simulated_failures_then_reports_them() -> None:
    """Simulated 503s are retried and end in AllProvidersFailedError holding each."""
    set_testing()
    router = AsyncRouter.from_config(
        {**sim_config(failure_rate=1.0), "routing": {"default": {"retry": {"max_attempts": 2}}}}
    )
    with pytest.raises(AllProvidersFailedError) as info:
        await router.generate("a fox", model="flux-dev", width=16, height=16)
    assert [type(e) for e in info.value.errors] == [ProviderUnavailableError] * 2


async def test_router_honours_simulated_retry_after() -> None:
    """A simulated 429's retry_after_s is waited (on the router's clock) before the retry."""
    clock = FakeClock()
    router = AsyncRouter.from_config(
        {
            **sim_config(rate_limit_rate=1.0, retry_after_s=0.5),
            "routing": {"default": {"retry": {"max_attempts": 2}}},
        },
        clock=clock,
    )
    with pytest.raises(AllProvidersFailedError) as info:
        await router.generate("a fox", model="flux-dev")
    assert clock.sleeps == [0.5]
    assert [type(e) for e in info.value.errors] == [RateLimitedError] * 2
