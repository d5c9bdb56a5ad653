"""Test doubles and helpers for code that uses genrouter, and for backends.

- :class:`FunctionBackend` wraps an async function as a :class:`Backend`.
- :class:`FakeBackend` plays a script of outcomes (succeed, fail at submit, fail the
  job, hang) and records what it was asked, for assertions.
- :class:`FakeClock` advances time instantly when slept on.
- :func:`set_testing` removes every backoff and Retry-After sleep from the router.
- ``BackendContract`` (lazily imported; needs pytest) is the conformance suite that
  every backend's tests subclass.
- ``InProcessModalTransport`` runs ``deploy/modal/service.py`` in-process behind the Modal
  backend; ``comfy_transport(comfy_url, workflows_dir=...)`` does the same for the ComfyUI
  class (``deploy/modal/comfy/service.py``) against a ComfyUI server at ``comfy_url``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from genrouter.engine import _testing_mode
from genrouter.engine._eager import start_eagerly
from genrouter.errors import GenRouterError, JobFailedError
from genrouter.types import (
    Artifact,
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    ProviderJob,
)

if TYPE_CHECKING:
    from genrouter.catalog import Deployment
    from genrouter.engine._clock import Clock

__all__ = [
    "BackendContract",
    "FailJob",
    "FailSubmit",
    "FakeBackend",
    "FakeClock",
    "FunctionBackend",
    "Hang",
    "InProcessModalTransport",
    "Succeed",
    "comfy_transport",
    "set_testing",
]


def set_testing(enabled: bool = True) -> None:
    """Make the router skip backoff and Retry-After sleeps (attempts still happen and are recorded)."""
    _testing_mode.enabled = enabled


class FakeClock:
    """A clock whose ``sleep`` advances ``now`` instantly; every sleep is recorded in ``sleeps``.

    Alarms set with :meth:`call_later` (the router's hedge, deadline and grace alarms)
    fire, in time order, when a ``sleep`` or :meth:`advance` moves time past them: a
    request on a fake clock takes the same path as on the real one, in milliseconds.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        """The current fake time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward without sleeping (firing the alarms that come due)."""
        self._now += seconds
        self._fire_due()

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, advance time (firing due alarms), and yield to the event loop once."""
        self.sleeps.append(seconds)
        if seconds > 0:
            self._now += seconds
        self._fire_due()
        await asyncio.sleep(0)

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> _FakeTimer:
        """Call ``callback(*args)`` once fake time reaches ``now + delay``."""
        timer = _FakeTimer(self._now + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def _fire_due(self) -> None:
        timers = self._timers
        while timers and timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(timers)
            timer.fire()


@dataclass(eq=False, slots=True)
class _FakeTimer:
    when: float
    callback: Callable[..., object]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.callback(*self.args)


def _placeholder_outputs(request: GenerationRequest, name: str, request_id: str) -> list[Artifact]:
    from genrouter.util._png import sim_url

    width, height = request.width or 64, request.height or 64
    seed = request.seed or 0
    return [
        Artifact(
            url=sim_url(name, request_id, i, width, height, seed + i),
            content_type="image/png",
            width=width,
            height=height,
        )
        for i in range(request.num_outputs)
    ]


def _as_result(
    value: GenerationResult | Sequence[Artifact], job: ProviderJob, model: str, seed: int | None
) -> GenerationResult:
    if isinstance(value, GenerationResult):
        return value
    return GenerationResult(
        id="",
        model=model,
        provider=job.provider,
        endpoint=job.endpoint,
        provider_request_id=job.provider_request_id,
        outputs=list(value),
        seed=seed,
    )


GenerateFn = Callable[[GenerationRequest], Coroutine[Any, Any, GenerationResult | Sequence[Artifact]]]


class FunctionBackend:
    """A backend whose jobs run an async function: ``fn(request) -> GenerationResult | [Artifact]``.

    Each submit starts ``fn`` as a task (the job is accepted at once); its exception,
    if any, is the job's error at ``fetch_result``. Cancel cancels the task.
    ``eager=True`` runs ``fn`` at once until it first waits, so an instant function is
    done when ``submit`` returns (no task, no loop turn). On Python 3.11 that is safe
    only for functions that open no anyio/httpx cancel scope before their first
    ``await``; on 3.12+ it is always safe.
    """

    max_jobs_kept = 10_000
    """Finished jobs remembered for idempotent poll/fetch before the oldest are forgotten."""

    def __init__(self, fn: GenerateFn, *, name: str = "function", eager: bool = False) -> None:
        self.name = name
        # Its own submit/wait/fetch open no cancel scope, so its lanes may start eagerly
        # whatever ``eager`` says (which is about running ``fn`` itself eagerly).
        self.eager_start_safe = True
        self._fn = fn
        self.eager = eager
        self._ids = itertools.count(1)
        self._tasks: dict[str, asyncio.Future[GenerationResult | Sequence[Artifact]]] = {}
        # A kept job holds (model, seed), not its request: ten thousand kept requests are
        # ~70,000 objects that every full garbage collection walks (a routed call slower).
        self._requests: dict[str, tuple[str, int | None]] = {}

    def __repr__(self) -> str:
        return f"FunctionBackend(name={self.name!r})"

    async def submit(
        self,
        deployment: Deployment,
        request: GenerationRequest,
        *,
        webhook_url: str | None = None,
    ) -> ProviderJob:
        """Start ``fn(request)`` and return its job."""
        request_id = f"{self.name}-{next(self._ids)}"
        if len(self._tasks) >= self.max_jobs_kept:
            self._forget_oldest_finished()
        self._tasks[request_id] = start_eagerly(
            asyncio.get_running_loop(), self._fn(request), safe=self.eager
        )
        self._requests[request_id] = (request.model, request.seed)
        return ProviderJob(provider=self.name, endpoint=deployment.endpoint, provider_request_id=request_id)

    def _forget_oldest_finished(self) -> None:
        # Jobs stay fetchable (fetch and poll are idempotent) until this many newer ones exist.
        for request_id in list(self._tasks)[: len(self._tasks) // 2]:
            if self._tasks[request_id].done():
                del self._tasks[request_id]
                del self._requests[request_id]

    def _task(self, job: ProviderJob) -> asyncio.Future[GenerationResult | Sequence[Artifact]]:
        task = self._tasks.get(job.provider_request_id)
        if task is None:
            raise JobFailedError(
                f"{self.name}: unknown job {job.provider_request_id}",
                provider=self.name,
                provider_request_id=job.provider_request_id,
            )
        return task

    def _status(self, job: ProviderJob) -> JobStatus:
        task = self._task(job)
        if not task.done():
            state = JobState.RUNNING
        elif task.cancelled():
            state = JobState.CANCELLED
        else:
            state = JobState.FAILED if task.exception() is not None else JobState.SUCCEEDED
        return JobStatus(state=state, provider=self.name, provider_request_id=job.provider_request_id)

    async def poll(self, job: ProviderJob) -> JobStatus:
        """The job's state now."""
        return self._status(job)

    async def wait(self, job: ProviderJob, timeout_s: float) -> JobStatus:
        """Wait for the function to return, at most ``timeout_s``."""
        task = self._task(job)
        if not task.done():
            await asyncio.wait((task,), timeout=timeout_s)
        return self._status(job)

    async def fetch_result(self, job: ProviderJob) -> GenerationResult:
        """The function's result, or its exception (a non-genrouter one becomes JobFailedError)."""
        task = self._task(job)
        rid = job.provider_request_id
        if task.cancelled():
            raise JobFailedError.cancelled(self.name, rid)
        if not task.done():
            raise JobFailedError(f"{self.name}: job {rid} has not finished", provider=self.name)
        error = task.exception()
        if isinstance(error, GenRouterError):
            raise error
        if error is not None:
            raise JobFailedError(
                f"{self.name}: {type(error).__name__}: {error}",
                provider=self.name,
                provider_request_id=rid,
            ) from error
        return _as_result(task.result(), job, *self._requests[rid])

    async def cancel(self, job: ProviderJob) -> None:
        """Cancel the function's task."""
        task = self._tasks.get(job.provider_request_id)
        if task is not None and not task.done():
            task.cancel()

    async def aclose(self) -> None:
        """Cancel every unfinished task."""
        for task in self._tasks.values():
            if not task.done():
                task.cancel()


@dataclass(frozen=True)
class Succeed:
    """Script step: the job succeeds after ``latency_s`` with ``outputs`` (default: as requested)."""

    latency_s: float = 0.0
    outputs: int | None = None


@dataclass(frozen=True)
class FailSubmit:
    """Script step: ``submit`` raises ``error`` (nothing is accepted)."""

    error: BaseException


@dataclass(frozen=True)
class FailJob:
    """Script step: the job is accepted, then fails after ``latency_s``; ``fetch_result`` raises."""

    error: BaseException
    latency_s: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Script step: the job is accepted and never finishes until cancelled."""


Step = Succeed | FailSubmit | FailJob | Hang


@dataclass
class _FakeJob:
    step: Step
    request: GenerationRequest
    done_at: float
    cancelled: bool = False


@dataclass
class FakeBackend:
    """A scripted backend. Steps are consumed one per submit; the last step repeats.

    A bare exception in ``script`` means :class:`FailSubmit`. Inspect ``submissions``
    (requests accepted or refused, in order), ``cancelled`` (request ids) and
    ``polls`` in assertions. It has no ``wait``: the router polls it.
    """

    eager_start_safe: ClassVar[bool] = True
    """No I/O of its own: the router may start its lanes eagerly."""

    name: str = "fake"
    script: Sequence[Step | BaseException] = (Succeed(),)
    clock: Clock | None = None
    """Times ``latency_s`` steps; the router binds its own clock (see ``bind_clock``)."""
    submissions: list[GenerationRequest] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    polls: int = 0
    _jobs: dict[str, _FakeJob] = field(default_factory=dict, repr=False)
    _index: int = field(default=0, repr=False)

    def _next_step(self) -> Step:
        steps = list(self.script) or [Succeed()]
        raw = steps[min(self._index, len(steps) - 1)]
        self._index += 1
        return FailSubmit(raw) if isinstance(raw, BaseException) else raw

    async def submit(
        self,
        deployment: Deployment,
        request: GenerationRequest,
        *,
        webhook_url: str | None = None,
    ) -> ProviderJob:
        """Play the next step: raise its submit error, or accept the job."""
        self.submissions.append(request)
        step = self._next_step()
        if isinstance(step, FailSubmit):
            raise step.error
        latency = getattr(step, "latency_s", 0.0)
        request_id = f"{self.name}-{len(self.submissions)}"
        self._jobs[request_id] = _FakeJob(step, request, self._now() + latency)
        return ProviderJob(provider=self.name, endpoint=deployment.endpoint, provider_request_id=request_id)

    def _job(self, job: ProviderJob) -> _FakeJob:
        fake = self._jobs.get(job.provider_request_id)
        if fake is None:
            raise JobFailedError(f"{self.name}: unknown job {job.provider_request_id}", provider=self.name)
        return fake

    async def poll(self, job: ProviderJob) -> JobStatus:
        """The scripted state now."""
        self.polls += 1
        state = self._state(self._job(job))
        return JobStatus(state=state, provider=self.name, provider_request_id=job.provider_request_id)

    def bind_clock(self, clock: Clock) -> None:
        """Use the router's clock for step latencies (so a FakeClock drives them)."""
        if self.clock is None:
            self.clock = clock

    def _now(self) -> float:
        return self.clock.now() if self.clock is not None else asyncio.get_running_loop().time()

    def _state(self, fake: _FakeJob) -> JobState:
        if fake.cancelled:
            return JobState.CANCELLED
        if isinstance(fake.step, Hang) or self._now() < fake.done_at:
            return JobState.RUNNING
        if isinstance(fake.step, FailJob):
            return JobState.FAILED
        return JobState.SUCCEEDED

    async def fetch_result(self, job: ProviderJob) -> GenerationResult:
        """The scripted result, or the scripted job error."""
        fake = self._job(job)
        rid = job.provider_request_id
        if fake.cancelled:
            raise JobFailedError.cancelled(self.name, rid)
        if isinstance(fake.step, FailJob):
            raise fake.step.error
        count = fake.request.num_outputs
        if isinstance(fake.step, Succeed) and fake.step.outputs is not None:
            count = fake.step.outputs
        request = fake.request.model_copy(update={"num_outputs": max(count, 1)})
        outputs = _placeholder_outputs(request, self.name, rid)[:count]
        return _as_result(outputs, job, fake.request.model, fake.request.seed)

    async def cancel(self, job: ProviderJob) -> None:
        """Record the cancel and mark the job cancelled."""
        self.cancelled.append(job.provider_request_id)
        fake = self._jobs.get(job.provider_request_id)
        if fake is not None and not self._state(fake).is_terminal:
            fake.cancelled = True

    async def aclose(self) -> None:
        """Nothing to release."""

    @property
    def submit_count(self) -> int:
        """How many times ``submit`` was called."""
        return len(self.submissions)


def __getattr__(name: str) -> Any:
    if name == "BackendContract":
        from genrouter.testing._contract import BackendContract

        return BackendContract
    if name == "InProcessModalTransport":
        from genrouter.testing._modal import InProcessModalTransport

        return InProcessModalTransport
    if name == "comfy_transport":
        from genrouter.testing._comfy import comfy_transport

        return comfy_transport
    raise AttributeError(f"module 'genrouter.testing' has no attribute {name!r}")
