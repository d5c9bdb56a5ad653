"""Building blocks of an attempt: waiting for jobs, results, backoff, error classes.

:mod:`genrouter.engine._execution` runs lanes of attempts with these; they hold no state of
their own, so the router's jobs API uses them too.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar, cast

from genrouter.backends.capabilities import Capabilities
from genrouter.engine import _testing_mode
from genrouter.engine._abandoned import ABANDONED_ANSWERS
from genrouter.engine._backoff import Backoff
from genrouter.engine._clock import MonotonicClock, wait_done
from genrouter.errors import (
    AttemptTimedOutError,
    AuthenticationError,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    ProviderError,
    RateLimitedError,
    describe_error,
)
from genrouter.types import (
    Attempt,
    Cost,
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    ProviderJob,
    Timings,
)

logger = logging.getLogger("genrouter")

if TYPE_CHECKING:
    import httpx

    from genrouter.backends.base import Backend
    from genrouter.backends.capabilities import SupportsWait
    from genrouter.catalog import Deployment
    from genrouter.config import RoutePolicy
    from genrouter.engine._clock import Clock
    from genrouter.routing.store import StateStore

__all__ = [
    "CANCEL_GRACE_S",
    "RESULT_READS",
    "AttemptTimedOutError",
    "JobWaiter",
    "Submitted",
    "counts_against_circuit",
    "finalise_result",
    "merge_results",
    "new_result_id",
    "observe_failure",
    "quiet_cancel",
    "retry_same_provider",
    "split_request",
    "terminal_state_of",
]

CANCEL_GRACE_S = 1.0
"""Longest the router waits for cancels (and in-flight submits) after a deadline."""

T = TypeVar("T")

_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_result_id() -> str:
    """A unique result id: a per-process random prefix and a counter (cheaper than uuid4)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


RESULT_READS = 10
"""Reads of a finished job's result by ``AsyncRouter.result`` before a transient error is
raised (the job stays pinned: calling ``result`` again reads it again)."""

FIRST_POLL_INTERVAL_S = 0.05
MAX_POLL_INTERVAL_S = 1.0
POLL_GROWTH = 1.5


def poll_cadence() -> Backoff:
    """Waits between polls (and between reads of a finished job's result): 50 ms growing
    ×1.5 to 1 s. A cadence, not a backoff: ``set_testing()`` leaves it alone, so a fake
    clock advances and a hung job still reaches its time limit."""
    return Backoff(FIRST_POLL_INTERVAL_S, MAX_POLL_INTERVAL_S, growth=POLL_GROWTH, testing_zero=False)


@dataclass(slots=True)
class Submitted:
    """Jobs accepted by one deployment (several when outputs were split across calls)."""

    deployment: Deployment
    jobs: list[ProviderJob]
    started: float


_NONE = Capabilities()
_NO_CAPABILITIES: Mapping[str, Capabilities] = {}


class JobWaiter:
    """Waits for accepted jobs to end: the backend's ``wait`` if it has one, else polling.

    One waiter serves one request. A ``Retry-After`` on any of its polls or result reads
    holds for every later call of this request to that provider (:meth:`held_until`), its
    cancels included. It does not block other requests: providers meter job reads apart
    from job creation (Replicate: 3000/min against 600/min), and a submit's 429 blocks
    new submits router-wide through the state store instead.
    """

    __slots__ = ("_abandoned", "_capabilities", "_clock", "_not_before")

    def __init__(self, clock: Clock, capabilities: Mapping[str, Capabilities] | None = None) -> None:
        self._clock = clock
        # Checked once when the router was built (backends/capabilities.py), keyed by provider.
        self._capabilities = capabilities if capabilities is not None else _NO_CAPABILITIES
        # Both made on first use: ten thousand requests in flight each hold a waiter.
        self._not_before: dict[str, float] | None = None
        self._abandoned: set[asyncio.Future[Any]] | None = None

    async def _call(self, provider: str, call: Awaitable[T]) -> T:
        """Run one provider call; if its lane is stopped mid-call, the answer is still heard.

        A stopped lane (a lost hedge) abandons the call, not the answer: the HTTP layer
        reports the abandoned request here (:data:`ABANDONED_ANSWERS`), a 429 in it still
        sets :meth:`held_until`, and :meth:`settle` lets a cancel wait for it. Backends with
        no I/O of their own (``eager_start_safe``) skip this.
        """
        if self._capabilities.get(provider, _NONE).eager_start_safe:
            return await call
        token = ABANDONED_ANSWERS.set(self)
        try:
            return await call
        finally:
            ABANDONED_ANSWERS.reset(token)

    def abandoned(self, provider: str, answer: asyncio.Future[httpx.Response]) -> None:
        """A request to ``provider`` was sent, then its caller stopped: hear its answer."""
        if self._abandoned is None:
            self._abandoned = set()
        self._abandoned.add(answer)
        answer.add_done_callback(functools.partial(self._heard, provider))

    def _heard(self, provider: str, answer: asyncio.Future[httpx.Response]) -> None:
        if self._abandoned is not None:
            self._abandoned.discard(answer)
        if answer.cancelled() or answer.exception() is not None:
            return
        response = answer.result()
        if response.status_code == 429:
            from genrouter.backends._http import parse_retry_after  # httpx is loaded by now

            self.note_retry_after(provider, parse_retry_after(response.headers))

    async def settle(self, within_s: float) -> None:
        """Wait (at most ``within_s`` on the clock) for the answers of abandoned requests."""
        if self._abandoned:
            await wait_done(self._clock, list(self._abandoned), within_s)

    def note_retry_after(self, provider: str, retry_after: float | None) -> None:
        """Hold this request's later calls to ``provider`` for ``retry_after`` seconds."""
        if retry_after:
            until = self._clock.now() + retry_after
            if self._not_before is None:
                self._not_before = {}
            self._not_before[provider] = max(self._not_before.get(provider, 0.0), until)

    def held_until(self, provider: str) -> float:
        """The clock time before which this request must not call ``provider`` again."""
        return self._not_before.get(provider, 0.0) if self._not_before else 0.0

    def wait_before_calling(self, provider: str) -> float:
        """Seconds this request must still wait before it calls ``provider`` again."""
        return max(0.0, self.held_until(provider) - self._clock.now())

    async def wait(self, backend: Backend, job: ProviderJob, until: float) -> JobStatus | None:
        """The job's terminal status, or None if ``until`` came first.

        Retryable poll errors are absorbed (the job stays pinned); others raise.
        """
        clock = self._clock
        # ``backend`` may be a progress watcher around the provider's: call its ``wait``.
        has_wait = self._capabilities.get(job.provider, _NONE).wait is not None
        waiter = cast("SupportsWait", backend).wait if has_wait else None
        cadence: Backoff | None = None  # made on the first pause: most jobs need none
        while True:
            remaining = until - clock.now()
            if remaining <= 0:
                return None
            hold = self.wait_before_calling(job.provider)
            if hold > 0:
                await clock.sleep(min(hold, remaining))
                continue
            try:
                if waiter is not None:
                    status: JobStatus = await waiter(job, remaining)
                else:
                    status = await self._call(job.provider, backend.poll(job))
            except GenRouterError as exc:
                if not _transient(exc):
                    raise
                self.note_retry_after(job.provider, exc.retry_after)  # a throttled poll waits as told
                status = None  # type: ignore[assignment]
            if status is not None and status.state.is_terminal:
                return status
            if waiter is None or status is None:
                status = None  # type: ignore[assignment]  # not held while sleeping (×10,000 in flight)
                if cadence is None:
                    cadence = poll_cadence()
                pause = min(max(next(cadence), self.wait_before_calling(job.provider)), until - clock.now())
                await clock.sleep(pause) if pause > 0 else await asyncio.sleep(0)

    async def fetch(
        self,
        backend: Backend,
        job: ProviderJob,
        until: float,
        *,
        succeeded: bool = True,
        max_reads: int | None = None,
    ) -> GenerationResult:
        """The job's result; transient fetch errors are retried until ``until``.

        A job that ``succeeded`` is pinned like a running one, and it is already billed:
        giving up on *reading* it would mean paying for another, so reads go on (backing
        off to one a second, or as a Retry-After says) for as long as ``until`` allows,
        with no count of tries unless ``max_reads`` sets one (the jobs API: its caller can
        come back later). A job that did not succeed is read once: its error is the job's
        outcome. The job's own failure (JobFailedError) is raised at once.
        """
        clock = self._clock
        if not succeeded:
            return await self._call(job.provider, backend.fetch_result(job))
        cadence: Backoff | None = None
        hold = self.wait_before_calling(job.provider)
        if hold > 0 and clock.now() + hold < until:
            await clock.sleep(hold)
        reads = 0
        while True:
            reads += 1
            try:
                return await self._call(job.provider, backend.fetch_result(job))
            except GenRouterError as exc:
                self.note_retry_after(job.provider, exc.retry_after)  # a throttled read waits as told
                if cadence is None:
                    cadence = poll_cadence()
                pause = max(next(cadence), self.wait_before_calling(job.provider))
                out_of_reads = max_reads is not None and reads >= max_reads
                if not _transient(exc) or out_of_reads or clock.now() + pause >= until:
                    raise
            await clock.sleep(pause)


def _transient(error: GenRouterError) -> bool:
    """A retryable error talking to the provider, as opposed to the job itself failing."""
    return error.retryable and not isinstance(error, JobFailedError)


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
            "cost": _summed_cost(results),
        }
    )


def _summed_cost(results: Sequence[GenerationResult]) -> Cost:
    """The parts' backend-reported costs added up, or unknown (the router prices it) if any is."""
    amounts = [r.cost.amount_usd for r in results]
    if any(a is None for a in amounts):
        return Cost()
    return Cost(
        amount_usd=sum((a for a in amounts if a is not None), Decimal(0)),
        estimated=any(r.cost.estimated for r in results),
        basis=f"sum of {len(results)} calls",
    )


def finalise_result(
    result: GenerationResult,
    *,
    request: GenerationRequest,
    deployment: Deployment,
    jobs: Sequence[ProviderJob],
    attempts: list[Attempt],
    total_s: float,
    estimated_cost: Decimal | None = None,
) -> GenerationResult:
    """Stamp routing facts on a backend's result: alias, provider key, cost, attempts, warnings.

    ``estimated_cost`` is the plan's estimate when it made one (else it is computed here).
    """
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
    return _restamped(
        result,
        {
            "id": result.id or new_result_id(),
            "model": request.model,
            "provider": deployment.provider,
            "endpoint": deployment.endpoint,
            "provider_request_id": result.provider_request_id or jobs[0].provider_request_id,
            "cost": cost,
            "estimated_cost_usd": (
                estimated_cost
                if estimated_cost is not None
                else deployment.estimate_cost(request)
                if deployment.pricing
                else None
            ),
            "timings": timings,
            "attempts": attempts,
            "warnings": list(dict.fromkeys(warnings)) if warnings else warnings,
        },
    )


def _restamped(result: GenerationResult, update: dict[str, Any]) -> GenerationResult:
    """``result.model_copy(update=update)`` without pydantic's generic copy (once a routed call).

    Every value in ``update`` is already of its field's type, as with ``model_copy``, which
    does not validate either; :class:`GenerationResult` has no extras or private attributes.
    """
    copied = object.__new__(GenerationResult)
    fields = result.__dict__.copy()
    fields.update(update)
    object.__setattr__(copied, "__dict__", fields)
    object.__setattr__(copied, "__pydantic_fields_set__", result.__pydantic_fields_set__ | update.keys())
    object.__setattr__(copied, "__pydantic_extra__", None)
    object.__setattr__(copied, "__pydantic_private__", None)
    return copied


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


CANCEL_PERSIST_S = 30.0
"""How long one cancel keeps being re-sent after transient errors before it is given up.

A job left running bills; a provider's outage typically outlasts a handful of quick
retries (the chaos bench's 10 s one did), so the cancel is bounded by time, and by
``CANCEL_MAX_SENDS`` sends (which also ends it when ``set_testing()`` removes the waits).
"""

CANCEL_MAX_SENDS = 40

CANCEL_MAX_PAUSE_S = 2.0

CANCEL_MAX_HOLD_S = 300.0
"""Longest Retry-After a cancel waits out; beyond it the cancel is given up (and logged).

Five minutes still saves most of a long video job's bill; an answer asking for hours
(or, from a broken proxy, centuries) would only keep a task asleep that the router's
``aclose()`` then waits for.
"""


async def quiet_cancel(
    backend: Backend,
    job: ProviderJob,
    delay_s: float = 0.0,
    *,
    on_retry_after: Callable[[str, float | None], None] | None = None,
    clock: Clock | None = None,
) -> None:
    """Cancel a job at its provider: retried on transient errors, never raising.

    A cancel lost to a 503 leaves a job running and billing, so it is sent again with
    backoff (0.1 s doubling, capped at 2 s, or the provider's Retry-After) for up to
    ``CANCEL_PERSIST_S``; the caller waits only its grace period and leaves the rest
    to run in the background. A Retry-After over ``CANCEL_MAX_HOLD_S`` gives the cancel
    up. A failed cancel must not mask the request's real outcome, so nothing is raised.
    Waits go through ``clock`` (the router's; real time when None); ``set_testing()``
    removes them.
    """
    clock = clock or _REAL_CLOCK
    wait_s = delay_s  # the provider's Retry-After may not have passed yet
    backoff = Backoff(0.1, CANCEL_MAX_PAUSE_S)
    give_up_at = clock.now() + CANCEL_PERSIST_S
    for sends in range(1, CANCEL_MAX_SENDS + 1):
        if wait_s > CANCEL_MAX_HOLD_S:
            logger.warning(
                "%s: not cancelling job %s: the provider asked for %.0f s before the next call",
                job.provider,
                job.provider_request_id,
                wait_s,
            )
            return
        if wait_s > 0 and not _testing_mode.enabled:
            await clock.sleep(wait_s)
        try:
            await backend.cancel(job)
            return
        except GenRouterError as exc:
            if not exc.retryable or clock.now() >= give_up_at or sends == CANCEL_MAX_SENDS:
                return
            # A provider's Retry-After holds for cancels too (and for the request's
            # later calls, which ``on_retry_after`` tells).
            wait_s = max(next(backoff), exc.retry_after or 0.0)
            if on_retry_after is not None:
                on_retry_after(job.provider, exc.retry_after)
        except Exception:
            return


_REAL_CLOCK = MonotonicClock()


def observe_failure(
    store: StateStore, now: float, deployment: Deployment, error: BaseException, policy: RoutePolicy
) -> None:
    """Feed a failed attempt into routing state: breaker, Retry-After, disabling."""
    if isinstance(error, RateLimitedError) and error.retry_after is not None:
        store.block(deployment.provider, now + error.retry_after)
    if isinstance(error, AuthenticationError):
        store.disable(deployment.provider, describe_error(error))
    if counts_against_circuit(error):
        store.observe_failure(deployment.key, now, policy.circuit_breaker)
    else:
        store.health(deployment.key).release_probe()


def terminal_state_of(statuses: Sequence[JobStatus]) -> JobState:
    """Combined state of a split request's jobs."""
    states = {s.state for s in statuses}
    if states == {JobState.SUCCEEDED}:
        return JobState.SUCCEEDED
    for state in (JobState.FAILED, JobState.CANCELLED, JobState.RUNNING):
        if state in states:
            return state
    return JobState.QUEUED
