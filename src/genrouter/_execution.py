"""The execute loop for one request: lanes, retries, fallback, one deadline, cancellation.

A *lane* is one candidate deployment run as an asyncio task: a first attempt, then
retries (tenacity) while the error is retryable on that provider. Lanes run one
after another (fallback); because each is its own task, hedging can start a second
lane beside the first without changing this structure. Lanes start eagerly: one
whose job finishes without waiting completes before a task is even needed.

Invariants:

- One :class:`~genrouter.types.Attempt` per submission, in order.
- An accepted job is pinned: poll failures never resubmit it, anywhere.
- When the deadline passes, every accepted job is cancelled at its provider (within
  a grace of at most 1 s), a submit still in flight is awaited briefly and its job
  cancelled if accepted, and then :class:`DeadlineExceededError` is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from genrouter import _testing_mode
from genrouter._eager import start_eagerly
from genrouter.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    DeadlineExceededError,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    describe_error,
)
from genrouter.types import (
    Attempt,
    AttemptOutcome,
    Cost,
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    ProviderJob,
    Timings,
)

if TYPE_CHECKING:
    from genrouter._clock import Clock
    from genrouter.backends.base import Backend
    from genrouter.catalog import Deployment
    from genrouter.config import RoutePolicy
    from genrouter.routing.plan import PlannedCandidate
    from genrouter.routing.store import StateStore

__all__ = ["CANCEL_GRACE_S", "AttemptTimedOutError", "Execution", "JobWaiter", "finalise_result"]

CANCEL_GRACE_S = 1.0
"""Longest the router waits for cancels (and in-flight submits) after a deadline."""

_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_result_id() -> str:
    """A unique result id: a per-process random prefix and a counter (cheaper than uuid4)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


FIRST_POLL_INTERVAL_S = 0.05
MAX_POLL_INTERVAL_S = 1.0
POLL_GROWTH = 1.5


class AttemptTimedOutError(ProviderUnavailableError):
    """An accepted job outlived ``timeouts.attempt_s``; it was cancelled and the plan moved on."""

    retryable = False


@dataclass(slots=True)
class Submitted:
    """Jobs accepted by one deployment (several when outputs were split across calls)."""

    deployment: Deployment
    jobs: list[ProviderJob]
    started: float


class JobWaiter:
    """Waits for accepted jobs to end: the backend's ``wait`` if it has one, else polling."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def wait(self, backend: Backend, job: ProviderJob, until: float) -> JobStatus | None:
        """The job's terminal status, or None if ``until`` came first.

        Retryable poll errors are absorbed (the job stays pinned); others raise.
        """
        clock = self._clock
        waiter = getattr(backend, "wait", None)
        interval = FIRST_POLL_INTERVAL_S
        while True:
            remaining = until - clock.now()
            if remaining <= 0:
                return None
            try:
                if waiter is not None:
                    status: JobStatus = await waiter(job, remaining)
                else:
                    status = await backend.poll(job)
            except GenRouterError as exc:
                if not exc.retryable:
                    raise
                status = None  # type: ignore[assignment]
            if status is not None and status.state.is_terminal:
                return status
            if waiter is None or status is None:
                pause = 0.0 if _testing_mode.enabled else min(interval, until - clock.now())
                await clock.sleep(pause) if pause > 0 else await asyncio.sleep(0)
                interval = min(interval * POLL_GROWTH, MAX_POLL_INTERVAL_S)


def merge_results(results: Sequence[GenerationResult]) -> GenerationResult:
    """One result from the results of a request split across several provider calls."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    outputs = [a for r in results for a in r.outputs]
    running = [r.timings.running_s for r in results if r.timings.running_s is not None]
    queued = [r.timings.queued_s for r in results if r.timings.queued_s is not None]
    return first.model_copy(
        update={
            "outputs": outputs,
            "timings": Timings(
                queued_s=max(queued) if queued else None,
                running_s=sum(running) if running else None,
            ),
            "warnings": [w for r in results for w in r.warnings],
            "raw": {"parts": [r.raw for r in results]},
        }
    )


def finalise_result(
    result: GenerationResult,
    *,
    request: GenerationRequest,
    deployment: Deployment,
    jobs: Sequence[ProviderJob],
    attempts: list[Attempt],
    total_s: float,
) -> GenerationResult:
    """Stamp routing facts on a backend's result: alias, provider key, cost, attempts, warnings."""
    cost = result.cost
    if cost.amount_usd is None and deployment.pricing is not None:
        amount, basis = deployment.pricing.actual(request, result, deployment)
        cost = Cost(amount_usd=amount, estimated=True, basis=basis)
    warnings = [w for job in jobs for w in job.warnings]
    warnings.extend(result.warnings)
    if len(result.outputs) < request.num_outputs:
        warnings.append(
            f"{deployment.provider} returned {len(result.outputs)} of "
            f"{request.num_outputs} requested outputs (a safety filter may have dropped some)"
        )
    if deployment.pricing is None:
        warnings.append(f"no price known for {deployment.key}; cost is unknown")
    timings = Timings(queued_s=result.timings.queued_s, running_s=result.timings.running_s, total_s=total_s)
    return result.model_copy(
        update={
            "id": result.id or new_result_id(),
            "model": request.model,
            "provider": deployment.provider,
            "endpoint": deployment.endpoint,
            "provider_request_id": result.provider_request_id or jobs[0].provider_request_id,
            "cost": cost,
            "timings": timings,
            "attempts": attempts,
            "warnings": list(dict.fromkeys(warnings)) if warnings else warnings,
        }
    )


def split_request(request: GenerationRequest, per_call: int) -> list[GenerationRequest]:
    """Split ``num_outputs`` over calls of at most ``per_call``; seeds stay reproducible."""
    if request.num_outputs <= per_call:
        return [request]
    parts = []
    done = 0
    while done < request.num_outputs:
        n = min(per_call, request.num_outputs - done)
        seed = None if request.seed is None else (request.seed + done) % 2**32
        parts.append(request.model_copy(update={"num_outputs": n, "seed": seed}))
        done += n
    return parts


def counts_against_circuit(error: BaseException) -> bool:
    """Connection errors, 5xx, attempt timeouts and retryable job failures open circuits."""
    if isinstance(error, RateLimitedError | AuthenticationError | InvalidRequestError):
        return False
    if isinstance(error, JobFailedError):
        return error.retryable
    return isinstance(error, ProviderError)


def retry_same_provider(error: BaseException) -> bool:
    """Whether ``error`` is worth another attempt on the same deployment."""
    if isinstance(error, InvalidRequestError | AuthenticationError | AttemptTimedOutError):
        return False
    return isinstance(error, GenRouterError) and error.retryable


class _Backoff(wait_base):
    """Retry-After when the provider sent one, else capped exponential backoff ± jitter.

    ``min(max_backoff_s, initial_backoff_s · 2^(n-1)) · (1 + jitter · U(-1, 1))``;
    ``max_backoff_s`` caps genrouter's own backoff, never a provider's Retry-After.
    """

    def __init__(self, initial: float, maximum: float, jitter: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None:
            return max(0.0, retry_after)
        exponent = retry_state.attempt_number - 1
        base: float = min(self.maximum, self.initial * 2.0**exponent)
        return max(0.0, base * (1.0 + self.jitter * random.uniform(-1.0, 1.0)))


class _StopAtDeadline(stop_base):
    """Stop when the next wait would end at or after the deadline."""

    def __init__(self, clock: Clock, deadline_at: float) -> None:
        self.clock = clock
        self.deadline_at = deadline_at

    def __call__(self, retry_state: RetryCallState) -> bool:
        upcoming = retry_state.upcoming_sleep or 0.0
        return self.clock.now() + upcoming >= self.deadline_at


class Execution:
    """Runs one request's plan to a result, or to a typed error."""

    def __init__(
        self,
        *,
        request: GenerationRequest,
        candidates: Sequence[PlannedCandidate],
        policy: RoutePolicy,
        backends: dict[str, Backend],
        store: StateStore,
        clock: Clock,
        deadline_s: float,
        webhook_url: str | None = None,
    ) -> None:
        self.request = request
        self.candidates = candidates
        self.policy = policy
        self.backends = backends
        self.store = store
        self.clock = clock
        self.deadline_s = deadline_s
        self.started = clock.now()
        self.deadline_at = self.started + deadline_s
        self.webhook_url = webhook_url
        self.attempts: list[Attempt] = []
        self.errors: list[BaseException] = []
        self._live: dict[int, tuple[Backend, ProviderJob]] = {}
        self._submitting = 0
        self._deadline_fired = False
        self._waiter = JobWaiter(clock)
        self._submit_only = False

    # -- public entry points -------------------------------------------------

    async def generate(self) -> GenerationResult:
        """Run attempts until one succeeds; fallback, retries and the deadline apply."""
        outcome = await self._run_lanes()
        assert isinstance(outcome, GenerationResult)
        return outcome

    async def submit(self) -> Submitted:
        """Submit to the first deployment that accepts, without waiting for the job."""
        self._submit_only = True
        outcome = await self._run_lanes()
        assert isinstance(outcome, Submitted)
        return outcome

    # -- lanes -----------------------------------------------------------------

    async def _run_lanes(self) -> GenerationResult | Submitted:
        fallback = self.policy.fallback
        limit = fallback.max_providers if fallback.enabled else 1
        loop = asyncio.get_running_loop()
        for candidate in self.candidates[:limit]:
            remaining = self.deadline_at - self.clock.now()
            if remaining <= 0:
                self._deadline_fired = True
                break
            # Eager: a lane whose job completes without waiting costs no task or loop turn.
            lane = start_eagerly(loop, self._lane(candidate))
            if lane.done():
                if lane.exception() is None:
                    return lane.result()
                if isinstance(lane.exception(), GenRouterError):
                    continue
                return lane.result()  # re-raises an unexpected error
            timer = loop.call_later(remaining, self._on_deadline, lane)
            try:
                return await lane
            except asyncio.CancelledError:
                if not self._deadline_fired:  # the caller cancelled this request
                    await self._abort((lane,))
                    raise
                break
            except GenRouterError:
                continue  # recorded in self.errors; fall back to the next candidate
            finally:
                timer.cancel()
        if not self._deadline_fired:
            raise AllProvidersFailedError(self._failure_summary(), errors=self.errors, attempts=self.attempts)
        await self._cancel_live()
        last = self.attempts[-1] if self.attempts else None
        raise DeadlineExceededError(
            f"deadline of {self.deadline_s:g}s passed after {len(self.attempts)} attempt(s)",
            deadline_s=self.deadline_s,
            attempts=self.attempts,
            provider=last.provider if last else None,
            provider_request_id=last.provider_request_id if last else None,
        )

    def _on_deadline(self, lane: asyncio.Future[Any]) -> None:
        """The deadline passed: stop the lane, unless a submit is in flight.

        A submit in flight is given up to the grace period to settle, so that its job,
        if accepted, is known and can be cancelled (_submit_one then stops the lane).
        """
        self._deadline_fired = True
        if self._submitting:
            asyncio.get_running_loop().call_later(CANCEL_GRACE_S, lane.cancel)
        else:
            lane.cancel()

    def _failure_summary(self) -> str:
        parts = [f"{a.provider}: {a.error}" for a in self.attempts if a.error]
        skipped = [e for e in self.errors if not any(a.error and str(e) in a.error for a in self.attempts)]
        parts += [f"{getattr(e, 'provider', None)}: {describe_error(e)}" for e in skipped]
        return f"all {len(self.attempts)} attempt(s) failed: " + "; ".join(parts[-5:])

    async def _lane(self, candidate: PlannedCandidate) -> GenerationResult | Submitted:
        try:
            return await self._attempt(candidate)
        except GenRouterError as first:
            if self.policy.retry.max_attempts == 1 or not retry_same_provider(first):
                raise
            pending: GenRouterError | None = first
        retry = self.policy.retry
        wait: wait_base = _Backoff(retry.initial_backoff_s, retry.max_backoff_s, retry.jitter)
        if _testing_mode.enabled:
            wait = _NoWait()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(retry.max_attempts) | _StopAtDeadline(self.clock, self.deadline_at),
            wait=wait,
            retry=retry_if_exception(retry_same_provider),
            sleep=self.clock.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if pending is not None:
                    error, pending = pending, None
                    raise error
                return await self._attempt(candidate)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    # -- one attempt ---------------------------------------------------------------

    async def _attempt(self, candidate: PlannedCandidate) -> GenerationResult | Submitted:
        deployment = candidate.deployment
        backend = self.backends[deployment.provider]
        started = self.clock.now()
        if self.store.blocked_until(deployment.provider) > started:
            try:
                await self._respect_retry_after(deployment)
            except RateLimitedError as exc:
                self.errors.append(exc)
                raise
            started = self.clock.now()
        health = self.store.health(deployment.key)
        health.begin_request(started)
        jobs: list[ProviderJob] = []
        parts = split_request(self.request, deployment.limits.max_outputs_per_call)
        try:
            for part in parts:
                jobs.append(await self._submit_one(backend, deployment, part))
            if self._submit_only:
                # Nobody watches the job from here: free the half-open probe slot now;
                # AsyncRouter.result() records the outcome when it is fetched.
                health.release_probe()
                return Submitted(deployment, jobs, started)
            until = min(started + self.policy.timeouts.attempt_s, self.deadline_at)
            for job in jobs:
                status = await self._waiter.wait(backend, job, until)
                if status is None:
                    raise await self._attempt_timed_out(backend, deployment, jobs)
            results = []
            for job in jobs:
                results.append(await backend.fetch_result(job))
                self._live.pop(id(job), None)
        except asyncio.CancelledError:
            # Cancelled by the deadline or the caller: says nothing about the deployment.
            health.release_probe()
            self._record(deployment, jobs, AttemptOutcome.CANCELLED, "cancelled before it finished", started)
            raise
        except GenRouterError as exc:
            await self._cancel_unfinished(backend, jobs, len(parts))
            self._fail(deployment, jobs, exc, started)
            raise
        except Exception as exc:
            await self._cancel_unfinished(backend, jobs, len(parts))
            wrapped = ProviderError(
                f"backend {deployment.provider!r} raised {type(exc).__name__}: {exc}",
                provider=deployment.provider,
                retryable=False,
            )
            self._fail(deployment, jobs, wrapped, started)
            raise wrapped from exc
        now = self.clock.now()
        health.record_success(now - started)
        self._record(deployment, jobs, AttemptOutcome.SUCCEEDED, None, started, now)
        return finalise_result(
            merge_results(results),
            request=self.request,
            deployment=deployment,
            jobs=jobs,
            attempts=self.attempts,
            total_s=now - self.started,
        )

    async def _submit_one(
        self, backend: Backend, deployment: Deployment, request: GenerationRequest
    ) -> ProviderJob:
        # A deadline must not abandon a submit half-way (its job could run unseen):
        # _on_deadline leaves a lane alone while a submit is in flight, and the lane
        # stops itself here once the job is recorded, so that it gets cancelled.
        self._submitting += 1
        try:
            job = await backend.submit(deployment, request, webhook_url=self.webhook_url)
        finally:
            self._submitting -= 1
        self._live[id(job)] = (backend, job)
        if self._deadline_fired:
            raise asyncio.CancelledError
        return job

    async def _cancel_unfinished(self, backend: Backend, jobs: Sequence[ProviderJob], parts: int) -> None:
        """A failed split attempt must not leave its other accepted jobs running (and billing)."""
        if parts > 1 and jobs:
            await self._cancel_jobs([(backend, job) for job in jobs])

    async def _respect_retry_after(self, deployment: Deployment) -> None:
        blocked_until = self.store.blocked_until(deployment.provider)
        now = self.clock.now()
        if blocked_until <= now:
            return
        if blocked_until >= self.deadline_at:
            raise RateLimitedError(
                f"{deployment.provider} asked us to wait {blocked_until - now:.1f}s, "
                "past this request's deadline",
                provider=deployment.provider,
                retry_after=blocked_until - now,
                retryable=False,
            )
        if not _testing_mode.enabled:
            await self.clock.sleep(blocked_until - now)

    async def _attempt_timed_out(
        self, backend: Backend, deployment: Deployment, jobs: Sequence[ProviderJob]
    ) -> AttemptTimedOutError:
        await self._cancel_jobs([(backend, job) for job in jobs])
        return AttemptTimedOutError(
            f"job did not finish within timeouts.attempt_s={self.policy.timeouts.attempt_s:g}s; "
            "cancelled it at the provider",
            provider=deployment.provider,
            provider_request_id=jobs[0].provider_request_id if jobs else None,
        )

    # -- bookkeeping -----------------------------------------------------------

    def _record(
        self,
        deployment: Deployment,
        jobs: Sequence[ProviderJob],
        outcome: AttemptOutcome,
        error: str | None,
        started: float,
        now: float | None = None,
    ) -> None:
        self.attempts.append(
            Attempt(
                provider=deployment.provider,
                endpoint=deployment.endpoint,
                outcome=outcome,
                error=error,
                duration_s=(self.clock.now() if now is None else now) - started,
                provider_request_id=jobs[0].provider_request_id if jobs else None,
            )
        )

    def _fail(
        self,
        deployment: Deployment,
        jobs: Sequence[ProviderJob],
        error: GenRouterError,
        started: float,
    ) -> None:
        if error.provider is None:
            error.provider = deployment.provider
        if error.provider_request_id is None and jobs:
            error.provider_request_id = jobs[0].provider_request_id
        outcome = (
            AttemptOutcome.CANCELLED if isinstance(error, AttemptTimedOutError) else AttemptOutcome.FAILED
        )
        self._record(deployment, jobs, outcome, describe_error(error), started)
        self.errors.append(error)
        for job in jobs:
            self._live.pop(id(job), None)
        observe_failure(self.store, self.clock.now(), deployment, error, self.policy)

    # -- cancellation ------------------------------------------------------------

    async def _abort(self, lanes: Sequence[asyncio.Future[Any]]) -> None:
        """Stop lanes, then cancel every accepted job, all within the grace period."""
        grace_until = self.clock.now() + CANCEL_GRACE_S
        for lane in lanes:
            lane.cancel()
        await asyncio.wait(lanes, timeout=max(0.01, grace_until - self.clock.now()))
        await self._cancel_live(grace_until)

    async def _cancel_live(self, grace_until: float | None = None) -> None:
        if not self._live:
            return
        jobs = list(self._live.values())
        self._live.clear()
        await self._cancel_jobs(jobs, grace_until)

    async def _cancel_jobs(
        self, jobs: Sequence[tuple[Backend, ProviderJob]], grace_until: float | None = None
    ) -> None:
        if grace_until is None:
            grace_until = self.clock.now() + CANCEL_GRACE_S
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(_quiet_cancel(backend, job)) for backend, job in jobs]
        for _, job in jobs:
            self._live.pop(id(job), None)
        await asyncio.wait(tasks, timeout=max(0.01, grace_until - self.clock.now()))


class _NoWait(wait_base):
    def __call__(self, retry_state: RetryCallState) -> float:
        return 0.0


async def _quiet_cancel(backend: Backend, job: ProviderJob) -> None:
    # A failed best-effort cancel must not mask the request's real outcome.
    with contextlib.suppress(Exception):
        await backend.cancel(job)


def observe_failure(
    store: StateStore, now: float, deployment: Deployment, error: BaseException, policy: RoutePolicy
) -> None:
    """Feed a failed attempt into routing state: breaker, Retry-After, disabling."""
    health = store.health(deployment.key)
    if isinstance(error, RateLimitedError) and error.retry_after is not None:
        store.block(deployment.provider, now + error.retry_after)
    if isinstance(error, AuthenticationError):
        store.disable(deployment.provider, describe_error(error))
    if counts_against_circuit(error):
        breaker = policy.circuit_breaker
        health.record_failure(now, breaker.failure_threshold, breaker.cooldown_s)
    else:
        health.release_probe()


def terminal_state_of(statuses: Sequence[JobStatus]) -> JobState:
    """Combined state of a split request's jobs."""
    states = {s.state for s in statuses}
    if states == {JobState.SUCCEEDED}:
        return JobState.SUCCEEDED
    for state in (JobState.FAILED, JobState.CANCELLED, JobState.RUNNING):
        if state in states:
            return state
    return JobState.QUEUED
