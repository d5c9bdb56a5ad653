"""``BackendContract``: the conformance suite every backend's tests subclass.

Subclass it in a test module and provide three fixtures::

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def backend(self) -> Backend: ...           # a fresh backend whose jobs succeed
        @pytest.fixture
        def deployment(self) -> Deployment: ...     # a deployment it serves
        @pytest.fixture
        def slow_backend(self) -> Backend | None:   # jobs that stay running (or None to skip)
            ...

Optionally override ``contract_request`` and ``reopen`` (a second backend instance
reading the same provider, for the resume test) and ``secrets`` (values that must
never appear in reprs or job data). Needs pytest with asyncio support.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from genrouter.backends.base import Backend
from genrouter.catalog import Deployment
from genrouter.types import GenerationRequest, GenerationResult, JobState, JobStatus, ProviderJob

__all__ = ["BackendContract"]

CONTRACT_TIMEOUT_S = 30.0


async def wait_terminal(
    backend: Backend, job: ProviderJob, timeout_s: float = CONTRACT_TIMEOUT_S
) -> JobStatus:
    """Poll until the job is terminal (test helper; the router does this for real)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await backend.poll(job)
        if status.state.is_terminal or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.01)


class BackendContract:
    """Behaviour every :class:`~genrouter.backends.base.Backend` must have."""

    @pytest.fixture
    def backend(self) -> Backend:
        """A fresh backend whose jobs succeed."""
        raise NotImplementedError("subclass BackendContract and provide a backend fixture")

    @pytest.fixture
    def deployment(self) -> Deployment:
        """A deployment the backend serves."""
        raise NotImplementedError("subclass BackendContract and provide a deployment fixture")

    @pytest.fixture
    def slow_backend(self) -> Backend | None:
        """A backend whose jobs stay running until cancelled, or None to skip those checks."""
        return None

    @pytest.fixture
    def reopen(self, backend: Backend) -> Backend:
        """A second instance for the same provider (default: the same instance)."""
        return backend

    @pytest.fixture
    def secrets(self) -> list[str]:
        """Secret values that must never leak into reprs or job data."""
        return []

    @pytest.fixture
    def contract_request(self, deployment: Deployment) -> GenerationRequest:
        """The request the contract submits."""
        return GenerationRequest(model=deployment.model, prompt="a red fox in snow", seed=7)

    async def test_submit_returns_a_job_pinned_to_the_backend(
        self, backend: Backend, deployment: Deployment, contract_request: GenerationRequest
    ) -> None:
        """submit() returns a ProviderJob naming this provider, the endpoint and a request id."""
        job = await backend.submit(deployment, contract_request)
        assert job.provider == backend.name
        assert job.endpoint == deployment.endpoint
        assert job.provider_request_id

    async def test_job_succeeds_and_result_has_outputs(
        self, backend: Backend, deployment: Deployment, contract_request: GenerationRequest
    ) -> None:
        """A succeeding job reaches succeeded, and fetch_result returns its outputs."""
        job = await backend.submit(deployment, contract_request)
        status = await wait_terminal(backend, job)
        assert status.state is JobState.SUCCEEDED
        result = await backend.fetch_result(job)
        assert isinstance(result, GenerationResult)
        assert result.outputs
        assert all(a.url for a in result.outputs)

    async def test_provider_job_resumes_after_json_round_trip(
        self,
        backend: Backend,
        reopen: Backend,
        deployment: Deployment,
        contract_request: GenerationRequest,
    ) -> None:
        """A ProviderJob read back from JSON can be polled and fetched (by a new instance)."""
        job = await backend.submit(deployment, contract_request)
        restored = ProviderJob.model_validate_json(job.model_dump_json())
        status = await wait_terminal(reopen, restored)
        assert status.state is JobState.SUCCEEDED
        result = await reopen.fetch_result(restored)
        assert result.outputs

    async def test_poll_and_fetch_are_idempotent(
        self, backend: Backend, deployment: Deployment, contract_request: GenerationRequest
    ) -> None:
        """Polling and fetching a finished job twice gives the same answer."""
        job = await backend.submit(deployment, contract_request)
        await wait_terminal(backend, job)
        first = await backend.fetch_result(job)
        second = await backend.fetch_result(job)
        assert [a.url for a in first.outputs] == [a.url for a in second.outputs]
        assert (await backend.poll(job)).state is JobState.SUCCEEDED

    async def test_cancel_after_completion_is_harmless(
        self, backend: Backend, deployment: Deployment, contract_request: GenerationRequest
    ) -> None:
        """Cancelling a finished job raises nothing and leaves it succeeded."""
        job = await backend.submit(deployment, contract_request)
        await wait_terminal(backend, job)
        await backend.cancel(job)
        assert (await backend.poll(job)).state is JobState.SUCCEEDED

    async def test_cancel_stops_a_running_job(
        self,
        slow_backend: Backend | None,
        deployment: Deployment,
        contract_request: GenerationRequest,
    ) -> None:
        """Cancelling a running job ends it cancelled (or failed), never succeeded."""
        if slow_backend is None:
            pytest.skip("this backend's tests provide no slow_backend")
        job = await slow_backend.submit(deployment, contract_request)
        await slow_backend.cancel(job)
        status = await wait_terminal(slow_backend, job, timeout_s=5)
        assert status.state in (JobState.CANCELLED, JobState.FAILED)

    async def test_aclose_is_idempotent(self, backend: Backend) -> None:
        """aclose() can be called twice."""
        await backend.aclose()
        await backend.aclose()

    async def test_no_secret_in_repr_or_job(
        self,
        backend: Backend,
        deployment: Deployment,
        contract_request: GenerationRequest,
        secrets: list[str],
    ) -> None:
        """Secrets never appear in the backend's repr or a job's JSON."""
        job = await backend.submit(deployment, contract_request)
        exposed = repr(backend) + str(backend) + job.model_dump_json()
        for secret in secrets:
            assert secret not in exposed
