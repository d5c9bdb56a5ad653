"""The execute loop for one request: lanes, retries, fallback, hedging, one deadline.

A *lane* is one candidate deployment: a first attempt, then retries while the error is
retryable on that provider and the provider's retry budget allows.
Lanes start eagerly: one whose job finishes without waiting completes before a task
is even needed; otherwise it goes on as its own task.

- **Fallback**: when a lane fails and no other lane is running, the next candidate's
  lane starts (up to ``fallback.max_providers`` candidates); when all have failed,
  the plan's last resort (deployments benched by an open circuit) gets its turn.
- **Hedging**: when the primary lane has run ``hedge.delay`` (its deployment's
  estimated p95, or seconds) and the hedge budget has a token, the next candidate's
  lane starts beside it (with ``p95``, routinely only from the top half of the bucket
  unless the hedge clearly pays: see :meth:`Execution._hedge_pays`). A primary holding
  no job at that moment (backing off, or waiting out a Retry-After) is replaced instead
  of raced. The first lane whose job *finishes at the provider* wins: the others are
  stopped at once (each more second they run could make a second billed job), their
  attempts recorded ``hedge_lost`` and their jobs cancelled in the background, with
  retries, while the winner reads its result.
- **Deadline**: when it passes, every lane is stopped, accepted jobs are cancelled
  within a grace of at most 1 s, and :class:`DeadlineExceededError` is raised.

Invariants: one :class:`~genrouter.types.Attempt` per submission; an accepted job is
pinned (poll failures never resubmit it); a submit in flight when a lane is stopped is
allowed to finish (within the grace) so that its job, if accepted, gets cancelled.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, cast

from genrouter.engine import _testing_mode
from genrouter.engine._attempts import (
    CANCEL_GRACE_S,
    AttemptTimedOutError,
    JobWaiter,
    Submitted,
    counts_against_circuit,
    new_result_id,
    observe_failure,
    quiet_cancel,
    retry_same_provider,
    split_request,
)
from genrouter.engine._backoff import retry_delays
from genrouter.engine._clock import Timer, call_later, wait_done
from genrouter.engine._clock import bare_context as _bare_context
from genrouter.engine._completion import complete, read_results
from genrouter.engine._deadline import SUBMIT_DEADLINE
from genrouter.engine._eager import start_eagerly
from genrouter.errors import (
    AllProvidersFailedError,
    BudgetExceededError,
    DeadlineExceededError,
    GenRouterError,
    ProviderError,
    RateLimitedError,
    describe_error,
)
from genrouter.observability import attempt_ended, logger
from genrouter.routing.reservations import budget_refusal
from genrouter.types import (
    Attempt,
    AttemptOutcome,
    GenerationRequest,
    GenerationResult,
    JobState,
    ProviderJob,
)

if TYPE_CHECKING:
    from decimal import Decimal

    from genrouter.backends.base import Backend
    from genrouter.backends.capabilities import Capabilities
    from genrouter.catalog import Deployment
    from genrouter.config import RoutePolicy
    from genrouter.engine._clock import Clock
    from genrouter.observability import MetricsHook
    from genrouter.routing.budgets import BudgetGuard
    from genrouter.routing.health import DeploymentHealth
    from genrouter.routing.plan import PlannedCandidate
    from genrouter.routing.reservations import Hold
    from genrouter.routing.store import StateStore
    from genrouter.routing.throttle import HedgeBudget, RetryBudget

__all__ = ["Execution"]

HEDGE_WAIT_FOR_TOKEN = 0.5
"""How long, in hedge delays, a request refused a hedge token keeps asking for one."""

HEDGE_RECHECK_MIN_S = 0.01
"""Shortest wait before a request refused a hedge token asks again."""

HEDGE_ROUTINE_KEEP = 0.5
"""Share of the hedge bucket a routine hedge (one that does not clearly pay) leaves for
those that do: the light tail's hedges shave its p99 a little while tokens are plentiful,
and half the bucket is still there when an incident starts."""

HEDGE_PAYS_WIN_RATE = 1 / 3
"""Hedge win rate from which a deployment's requests are hedged at their p95 routinely.

A hedge costs a request whether it wins or not. On a light tail (a lognormal) the
request already running usually finishes first, about 85 % of the time at its p95,
so routine hedges there buy almost nothing and spend the tokens an incident needs;
on a heavy tail (a few requests ten times slower) the hedge wins about half the races.
"""


def _resolve(wake: asyncio.Future[bool], timed_out: bool) -> None:
    if not wake.done():
        wake.set_result(timed_out)


class _TimeLeft:
    """Seconds left before a deadline, for :data:`SUBMIT_DEADLINE`. Not a bound method of
    the execution: a task the backend starts in ``submit`` copies the context, and a kept
    task would then keep the whole execution (plan, lanes, result) alive, so every full
    garbage collection walked them (+30 µs a call with a lazy ``FunctionBackend``)."""

    __slots__ = ("clock", "deadline_at")

    def __init__(self, clock: Clock, deadline_at: float) -> None:
        self.clock = clock
        self.deadline_at = deadline_at

    def __call__(self) -> float:
        return self.deadline_at - self.clock.now()


class LaneState(enum.Enum):
    """Where a lane is. ``ATTEMPTING`` → ``COMPLETED`` when its jobs succeed; any lane may
    be stopped (``STOPPING``) or lose (``LOST``: stopped, and its attempt is recorded by
    whoever made it lose, not as cancelled)."""

    ATTEMPTING = "attempting"
    """Submitting, waiting for its jobs, or backing off before a retry."""
    COMPLETED = "completed"
    """Its jobs reached a successful end at the provider (billed): the others are waste."""
    STOPPING = "stopping"
    """Told to stop (the deadline, the caller); a submit in flight settles first."""
    LOST = "lost"
    """Lost a hedge race, or the primary moved on from while it held no job."""


@dataclass(eq=False, slots=True)
class _Lane:
    """One candidate's run: its task (or finished future), its state and its jobs."""

    candidate: PlannedCandidate
    hedged: bool
    started: float
    future: asyncio.Future[Any] | None = None
    state: LaneState = LaneState.ATTEMPTING
    submitting: int = 0
    """Submits in flight (a stopped lane lets them settle, so no job runs unseen)."""
    jobs: list[ProviderJob] = field(default_factory=list)
    """The current attempt's jobs (emptied when it fails)."""
    live: list[ProviderJob] = field(default_factory=list)
    """Jobs accepted at the provider whose result is not in yet: what a stop cancels."""
    attempt_started: float = 0.0
    result_attempt: Attempt | None = None

    @property
    def stop_requested(self) -> bool:
        """Whether it was told to stop (or lost)."""
        return self.state is LaneState.STOPPING or self.state is LaneState.LOST

    def drop(self, job: ProviderJob) -> None:
        """``job`` needs no cancel any more (its result is in, it failed, or it is cancelled)."""
        live = self.live
        for i, held in enumerate(live):
            if held is job:
                del live[i]
                return


class Execution:
    """Runs one request's plan to a result, or to a typed error."""

    # One per request in flight (10,000 at once in a batch): slots, not a dict each.
    __slots__ = (
        "_cancelling",
        "_deadline_bound",
        "_deadline_fired",
        "_hedge_at",
        "_hedged_from",
        "_lanes",
        "_queue",
        "_request_id",
        "_running",
        "_submit_only",
        "_waiter",
        "_wake",
        "attempts",
        "backends",
        "background",
        "budget",
        "candidates",
        "capabilities",
        "clock",
        "deadline_at",
        "deadline_s",
        "errors",
        "hedge_budget",
        "hooks",
        "last_resort",
        "policy",
        "request",
        "started",
        "store",
        "throttle",
        "webhook_url",
    )

    def __init__(
        self,
        *,
        request: GenerationRequest,
        candidates: Sequence[PlannedCandidate],
        policy: RoutePolicy,
        last_resort: Sequence[PlannedCandidate] = (),
        backends: dict[str, Backend],
        capabilities: Mapping[str, Capabilities],
        store: StateStore,
        clock: Clock,
        deadline_s: float,
        webhook_url: str | None = None,
        throttle: RetryBudget | None = None,
        hedge_budget: HedgeBudget | None = None,
        budget: BudgetGuard | None = None,
        background: set[asyncio.Task[Any]] | None = None,
        hooks: Sequence[MetricsHook] = (),
    ) -> None:
        self.request = request
        self.candidates = candidates
        # Usually empty: () holds nothing the collector walks, an empty list would.
        self.last_resort = last_resort if last_resort and policy.fallback.enabled else ()
        self.policy = policy
        self.backends = backends
        self.capabilities = capabilities
        self.store = store
        self.clock = clock
        self.deadline_s = deadline_s
        self.started = clock.now()
        self.deadline_at = self.started + deadline_s
        self.webhook_url = webhook_url
        self.throttle = throttle
        self.hedge_budget = hedge_budget
        self.budget = budget
        self.background = background if background is not None else set()
        self.attempts: list[Attempt] = []
        self.errors: list[BaseException] = []
        self._lanes: list[_Lane] = []  # every lane started, stopped ones included
        self._waiter = JobWaiter(clock, capabilities)
        self._submit_only = False
        self._deadline_fired = False
        self._deadline_bound = False
        self._cancelling: set[asyncio.Task[None]] | None = None  # made on first cancel
        self.hooks = hooks
        self._request_id: str | None = None
        self._running: list[_Lane] = []
        self._hedged_from: _Lane | None = None
        self._queue: list[PlannedCandidate] = []  # candidates not started yet (set by _run)
        self._hedge_at: float | None = None  # clock time the hedge alarm rings next
        self._wake: asyncio.Future[bool] | None = None

    @property
    def request_id(self) -> str:
        """An id for this request in logs (made on first use)."""
        if self._request_id is None:
            self._request_id = new_result_id()
        return self._request_id

    # -- public entry points -------------------------------------------------------

    def generate(self) -> Coroutine[Any, Any, GenerationResult]:
        """Run lanes until one succeeds; fallback, hedging, retries and the deadline apply.

        The lane loop's own coroutine, not a wrapper around it: one frame fewer for
        each of ten thousand requests in flight.
        """
        return cast(Coroutine[Any, Any, GenerationResult], self._run())

    async def submit(self) -> Submitted:
        """Submit to the first deployment that accepts, without waiting for the job."""
        self._submit_only = True
        outcome = await self._run()
        assert isinstance(outcome, Submitted)
        return outcome

    # -- the lane loop ----------------------------------------------------------------

    def _start(self, candidate: PlannedCandidate, *, hedged: bool) -> _Lane:
        lane = _Lane(candidate, hedged, self.clock.now())
        self._lanes.append(lane)
        safe = self.capabilities[candidate.deployment.provider].eager_start_safe
        lane.future = future = start_eagerly(asyncio.get_running_loop(), self._lane(lane), safe=safe)
        if not future.done():
            future.add_done_callback(self._lane_done, context=_bare_context())
        return lane

    def _hedge_due(self, lane: _Lane) -> float | None:
        """Clock time at which ``lane`` should be hedged, or None when it never is."""
        hedge = self.policy.hedge
        if not hedge.enabled or self._submit_only or lane.hedged:
            return None
        delay = lane.candidate.completed_p95 if hedge.delay == "p95" else hedge.delay
        if delay is None:
            return None
        return lane.started + float(delay)

    async def _run(self) -> GenerationResult | Submitted:
        """The lane loop: one event wait (a lane ended, or the alarm for the next hedge or
        the deadline), then the handler for what happened: :meth:`_on_finished`,
        :meth:`_on_hedge_due`, or the deadline; :meth:`_start_next` when no lane runs."""
        fallback = self.policy.fallback
        self._queue = list(self.candidates[: fallback.max_providers if fallback.enabled else 1])
        if self.hedge_budget is not None and self.policy.hedge.enabled and not self._submit_only:
            self.hedge_budget.on_primary(self.started)
        running: list[_Lane] = self._running
        if self._queue and self.clock.now() < self.deadline_at:
            # Fast path: a first lane that finished while starting eagerly.
            first = self._start(self._queue.pop(0), hedged=False)
            future = first.future
            assert future is not None
            if future.done():
                if not future.cancelled() and future.exception() is None:
                    return future.result()  # type: ignore[no-any-return]
                if not isinstance(future.exception(), GenRouterError):
                    raise future.exception()  # type: ignore[misc]
            else:
                running.append(first)
                self._hedge_at = self._hedge_due(first) if self._queue else None
        while True:
            if not running and self._start_next():
                return await self._deadline(running)
            finished = [lane for lane in running if lane.future is not None and lane.future.done()]
            if not finished:
                hedge_at = self._hedge_at
                wake_at = self.deadline_at if hedge_at is None else min(hedge_at, self.deadline_at)
                wake, alarm = self._alarm(max(0.0, wake_at - self.clock.now()))
                try:
                    timed_out = await wake
                except asyncio.CancelledError:
                    await self._stop_all(running)
                    raise
                finally:
                    alarm.cancel()
                    self._wake = None
                finished = [lane for lane in running if lane.future is not None and lane.future.done()]
                if not finished:
                    # Not timed out: a lane stopped earlier has ended; sleep on.
                    if timed_out:
                        if self.clock.now() >= self.deadline_at:
                            return await self._deadline(running)
                        self._on_hedge_due()
                    continue
            winner, crash = self._on_finished(finished)
            if winner is not None:
                return self._won(winner, running)
            if crash is not None:
                await self._stop_all(running)
                raise crash

    def _start_next(self) -> bool:
        """No lane runs: start the next candidate (the open-circuit ones once the viable
        ones are spent). True when the deadline has passed instead; raises when none is left."""
        queue = self._queue
        if not queue and self.last_resort and self.clock.now() < self.deadline_at:
            # Every viable candidate failed: try those benched by an open circuit.
            queue = self._queue = list(self.last_resort)
            self.last_resort = ()
        if self.clock.now() >= self.deadline_at and (queue or self._deadline_bound):
            return True
        if not queue:
            raise budget_refusal(self.errors) or AllProvidersFailedError(
                self._failure_summary(), errors=self.errors, attempts=self.attempts
            )
        lane = self._start(queue.pop(0), hedged=False)
        self._running.append(lane)
        self._hedge_at = self._hedge_due(lane) if queue else None
        return False

    def _on_hedge_due(self) -> None:
        """The hedge alarm rang with no lane finished: race the primary, or move on from it."""
        running, queue = self._running, self._queue
        primary = running[0]
        self._hedge_at = None
        if not queue or any(lane.state is LaneState.COMPLETED for lane in running):
            return  # a finished job is being read: nothing to race it with
        if not self._has_live_job(primary):
            # The primary holds no job (it is backing off or waiting out a
            # Retry-After): move on to the next candidate instead of racing.
            self._stop(primary)
            primary.state = LaneState.LOST
            running.remove(primary)
            lane = self._start(queue.pop(0), hedged=False)
            running.append(lane)
            self._hedge_at = self._hedge_due(lane) if queue else None
            return
        self._hedge_at = self._hedge_or_wait(primary, queue)

    def _on_finished(self, finished: list[_Lane]) -> tuple[_Lane | None, BaseException | None]:
        """Lanes ended: the first that succeeded wins; one that raised something other
        than a genrouter error ends the request with it; failed and cancelled ones are
        dropped (their errors are already recorded)."""
        running = self._running
        for lane in finished:
            running.remove(lane)
            future = lane.future
            assert future is not None
            if future.cancelled():
                continue
            error = future.exception()
            if error is None:
                return lane, None
            if not isinstance(error, GenRouterError):
                return None, error
        if not running:
            self._hedge_at = None
        return None, None

    def _alarm(self, timeout_s: float) -> tuple[asyncio.Future[bool], Timer]:
        """A future that a lane's end (False) or ``timeout_s`` passing (True) resolves.

        ``asyncio.wait`` would do, at about ten objects a call (two coroutines, a closure
        and its cells, sets); with ten thousand requests in flight those objects are what
        each full garbage collection walks, so the loop stalls longer. Here it is one
        future, which every lane's done callback (:meth:`_lane_done`) and one alarm on
        the router's clock resolve. A lane no longer running (a stopped one) may resolve
        it too: the caller checks. The caller cancels the timer and clears ``_wake`` when it wakes.
        """
        wake: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._wake = wake
        return wake, call_later(self.clock, timeout_s, _resolve, wake, True, context=_bare_context())

    def _lane_done(self, _future: asyncio.Future[Any]) -> None:
        wake = self._wake
        if wake is not None:
            _resolve(wake, False)

    def _hedge_or_wait(self, primary: _Lane, queue: list[PlannedCandidate]) -> float | None:
        """Start a hedge beside ``primary`` if allowed; else the clock time to ask again.

        Refused (no token, or the hedge provider's retry budget is spent), the request
        asks again every tenth of its delay until it is half a delay late, then gives up:
        a token earned later is worth more to a request just reaching its delay than to
        one that is already late (the p99 is made of the requests hedged late). A
        routine hedge, one that does not clearly pay (:meth:`_hedge_pays`), takes only
        tokens beyond ``HEDGE_ROUTINE_KEEP`` of the bucket, and none when either
        deployment has queued lately; after half a delay the request keeps asking only
        in case it comes to pay (three overdue, a hang).
        """
        due = self._hedge_due(primary)
        if due is None:
            return None
        delay = due - primary.started
        now = self.clock.now()
        recheck_at = now + max(HEDGE_RECHECK_MIN_S, delay / 10)
        target = self.store.health(queue[0].deployment.key)
        if target.queues:
            return None  # a hedge would wait in the target's queue and lengthen it
        pays = self._hedge_pays(primary, now, delay)
        late = now >= due + HEDGE_WAIT_FOR_TOKEN * delay
        if not pays and (
            late or target.queued_lately or self.store.health(primary.candidate.deployment.key).queued_lately
        ):
            # No routine hedge when late, or near a provider's capacity (it would add
            # load where load is the problem); ask again in case it comes to pay.
            return recheck_at
        if self._may_hedge(queue[0], keep=0.0 if pays else HEDGE_ROUTINE_KEEP):
            self._hedged_from = primary
            self._running.append(self._start(queue.pop(0), hedged=True))
            return None
        if late:  # it pays, but no token came within half a delay
            return None
        return recheck_at

    def _hedge_pays(self, primary: _Lane, now: float, delay: float) -> bool:
        """Whether racing ``primary`` now is likely to win time (always, for a fixed delay).

        With ``delay: p95`` a request past its delay is hedged when its deployment's
        hedges win at least ``HEDGE_PAYS_WIN_RATE`` of their races (a heavy tail), when
        ``OVERDUE_EVIDENCE`` requests there are past the delay, this one included (the
        deployment is slow right now), or when it has outlived every latency in the
        window (a hang). Otherwise it is asked again every tenth of a delay.
        """
        if self.policy.hedge.delay != "p95":
            return True
        health = self.store.health(primary.candidate.deployment.key)
        return (
            health.hedge_win_rate >= HEDGE_PAYS_WIN_RATE
            or health.overdue(now, delay)
            or health.outlived(now - primary.attempt_started)
        )

    def _may_hedge(self, candidate: PlannedCandidate, *, keep: float = 0.0) -> bool:
        """A hedge needs a budget token (beyond ``keep`` of the bucket) and the hedge
        provider's retry budget."""
        provider = candidate.deployment.provider
        if self.throttle is not None and not self.throttle.allows_retry(provider):
            return False
        return self.hedge_budget is None or self.hedge_budget.try_spend(keep=keep)

    def _has_live_job(self, lane: _Lane) -> bool:
        """Whether ``lane`` has a job accepted (or a submit in flight) at its provider."""
        return bool(lane.submitting) or bool(lane.live)

    def _won(self, winner: _Lane, others: list[_Lane]) -> GenerationResult | Submitted:
        assert winner.future is not None
        outcome: GenerationResult | Submitted = winner.future.result()
        raced = self._hedged_from
        if raced is not None:
            health = self.store.health(raced.candidate.deployment.key)
            health.record_race(hedge_won=winner is not raced)
            if winner is not raced:
                health.record_overtaken(raced.attempt_started, self.clock.now())
        if not others:
            return outcome
        now = self.clock.now()
        stopped = []
        for lane in others:
            if lane.state is LaneState.LOST:
                continue  # already stopped when the winner's job finished
            future = lane.future
            if future is not None and future.done() and not future.cancelled() and not future.exception():
                # It finished in the same instant: its job is done (and billed) too.
                self._relabel(lane, "finished as well; its result was not used")
            else:
                self._lose(lane, now, "lost the hedge race; cancelled")
                stopped.append(lane)
        # The winning attempt is listed last.
        if winner.result_attempt is not None and winner.result_attempt in self.attempts:
            self.attempts.remove(winner.result_attempt)
            self.attempts.append(winner.result_attempt)
        self._reap_later(stopped)
        if isinstance(outcome, GenerationResult):
            outcome = outcome.model_copy(update={"attempts": list(self.attempts)})
        return outcome

    def _on_completed(self, winner: _Lane) -> None:
        """``winner``'s jobs finished: stop and cancel the other lanes now.

        Their jobs can only add to the bill from here on; waiting for ``winner`` to read
        its result first would give them time to finish (and be billed) too.
        """
        now = self.clock.now()
        others = [
            lane
            for lane in self._running
            if lane is not winner
            and lane.state is not LaneState.COMPLETED
            and lane.state is not LaneState.LOST
            and lane.future is not None
            and not lane.future.done()
        ]
        for lane in others:
            self._lose(lane, now, "another provider's job finished first; cancelled")
        self._reap_later(others)

    def _lose(self, lane: _Lane, now: float, note: str) -> None:
        """Record ``lane`` as a lost hedge and stop it (its jobs are cancelled by a reap)."""
        lane.state = LaneState.LOST
        self._note_slow(lane, now)  # the loser would have taken at least this long
        self._record(
            lane.candidate.deployment,
            lane.jobs,
            AttemptOutcome.HEDGE_LOST,
            note,
            lane.attempt_started,
            hedged=lane.hedged,
        )
        self._stop(lane)

    def _note_slow(self, lane: _Lane, now: float) -> None:
        """Record ``lane``'s attempt, stopped or failed without a result, as a latency lower bound.

        Only one above the deployment's usual p95 says something (it was slow, and the
        user waited that long for nothing); shorter ones would bias the window low.
        """
        elapsed = now - lane.attempt_started
        usual = lane.candidate.completed_p95
        if usual is not None and elapsed > usual:
            self.store.health(lane.candidate.deployment.key).record_latency(elapsed, now)

    def _relabel(self, lane: _Lane, note: str) -> None:
        """Turn ``lane``'s succeeded attempt into a lost hedge (its result is dropped)."""
        attempt = lane.result_attempt
        if attempt is None or attempt not in self.attempts:
            return
        index = self.attempts.index(attempt)
        relabelled = attempt.model_copy(update={"outcome": AttemptOutcome.HEDGE_LOST, "error": note})
        self.attempts[index] = relabelled

    def _reap_later(self, lanes: list[_Lane]) -> None:
        if not lanes:
            return
        task = asyncio.get_running_loop().create_task(self._reap(lanes))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _reap(self, lanes: list[_Lane]) -> None:
        """Let stopped lanes wind down, then cancel their accepted jobs at the provider."""
        futures = [lane.future for lane in lanes if lane.future is not None]
        if futures:
            await wait_done(self.clock, futures, 2 * CANCEL_GRACE_S)
            _retrieve(futures)
        await self._cancel_jobs(self._live_jobs(lanes))

    async def _deadline(self, running: list[_Lane]) -> NoReturn:
        self._deadline_fired = True
        await self._stop_all(running)
        last = self.attempts[-1] if self.attempts else None
        raise DeadlineExceededError(
            f"deadline of {self.deadline_s:g}s passed after {len(self.attempts)} attempt(s)",
            deadline_s=self.deadline_s,
            attempts=self.attempts,
            provider=last.provider if last else None,
            provider_request_id=last.provider_request_id if last else None,
        )

    def _stop(self, lane: _Lane) -> None:
        """Stop a lane; one with a submit in flight gets the grace period to settle it."""
        if lane.state is not LaneState.LOST:
            lane.state = LaneState.STOPPING
        future = lane.future
        if future is None or future.done():
            return
        if lane.submitting:
            call_later(self.clock, CANCEL_GRACE_S, future.cancel)
        else:
            future.cancel()

    async def _stop_all(self, lanes: Sequence[_Lane]) -> None:
        """Stop lanes, wait for them briefly, then cancel every accepted job (within the grace)."""
        grace_until = self.clock.now() + CANCEL_GRACE_S
        for lane in lanes:
            self._stop(lane)
        futures = [lane.future for lane in lanes if lane.future is not None and not lane.future.done()]
        if futures:
            await wait_done(self.clock, futures, 2 * CANCEL_GRACE_S)
            _retrieve(futures)
        await self._cancel_jobs(self._live_jobs(self._lanes), grace_until)
        if self._cancelling:  # cancels a lane started (e.g. its attempt timed out) must land too
            await wait_done(self.clock, list(self._cancelling), max(0.01, grace_until - self.clock.now()))

    def _failure_summary(self) -> str:
        parts = [f"{a.provider}: {a.error}" for a in self.attempts if a.error]
        skipped = [e for e in self.errors if not any(a.error and str(e) in a.error for a in self.attempts)]
        parts += [f"{getattr(e, 'provider', None)}: {describe_error(e)}" for e in skipped]
        return f"all {len(self.attempts)} attempt(s) failed: " + "; ".join(parts[-5:])

    # -- one lane ----------------------------------------------------------------------

    async def _lane(self, lane: _Lane) -> GenerationResult | Submitted:
        """A first attempt, then retries on the same deployment while all of these hold:
        the error is retryable there, ``retry.max_attempts`` is not reached, the wait
        (the provider's Retry-After, else the backoff) ends before the deadline, and the
        provider's retry budget has a token (spent only when the retry goes)."""
        try:
            return await self._attempt(lane)
        except GenRouterError as first:
            retry = self.policy.retry
            if retry.max_attempts == 1 or not retry_same_provider(first):
                raise
            error: GenRouterError = first
        provider = lane.candidate.deployment.provider
        delays = retry_delays(retry)
        tries = 1
        while True:
            pause = next(delays)
            if error.retry_after is not None:
                pause = 0.0 if _testing_mode.enabled else max(0.0, error.retry_after)
            if self.clock.now() + pause >= self.deadline_at:
                raise error
            if self.throttle is not None and not self.throttle.try_spend(provider):
                raise error
            await self.clock.sleep(pause)
            tries += 1
            try:
                return await self._attempt(lane)
            except GenRouterError as exc:
                if tries >= retry.max_attempts or not retry_same_provider(exc):
                    raise
                error = exc

    async def _attempt(self, lane: _Lane) -> GenerationResult | Submitted:
        deployment = lane.candidate.deployment
        backend = self.backends[deployment.provider]
        started = self.clock.now()
        if self._blocked_until(deployment.provider) > started:
            try:
                await self._respect_retry_after(deployment)
            except RateLimitedError as exc:
                self.errors.append(exc)
                raise
            started = self.clock.now()
        hold = (
            await self._reserve(deployment.provider, lane.candidate.estimated_cost) if self.budget else None
        )
        health = self.store.health(deployment.key)
        token = health.begin_request(started)
        lane.attempt_started = started
        try:
            body = self._submit_body if self._submit_only else self._attempt_body
            outcome = await body(lane, backend, deployment, health, started)
        except BaseException:
            if hold is not None:
                hold.release()  # failed, cancelled or lost a hedge: nothing spent
            raise
        finally:
            health.end_request(token)
        if hold is not None:
            hold.settle(outcome, keep_s=self.deadline_s)  # cost to spend; a submitted job keeps it
        return outcome

    async def _reserve(self, provider: str, estimate: Decimal | None) -> Hold | None:
        """Hold the estimate on the budgets covering ``provider`` (BudgetExceededError if none left)."""
        assert self.budget is not None
        try:
            return await self.budget.reserve(provider, estimate)
        except BudgetExceededError as exc:
            self.errors.append(exc)
            raise

    async def _attempt_body(
        self,
        lane: _Lane,
        backend: Backend,
        deployment: Deployment,
        health: DeploymentHealth,
        started: float,
    ) -> GenerationResult:
        """A watched attempt: submit, wait for the jobs, read and complete the result."""
        jobs: list[ProviderJob] = []
        lane.jobs = jobs
        parts = split_request(self.request, deployment.limits.max_outputs_per_call)
        try:
            for part in parts:
                jobs.append(await self._submit_one(lane, backend, deployment, part))
            until = min(started + self.policy.timeouts.attempt_s, self.deadline_at)
            succeeded = True
            finished: dict[int, bool] = {}
            for job in jobs:
                status = await self._waiter.wait(backend, job, until)
                if status is None:
                    # attempt_s may exceed the deadline: then the deadline ended this wait.
                    self._deadline_bound = self._deadline_bound or until >= self.deadline_at
                    timed_out = await self._attempt_timed_out(backend, deployment, jobs, until)
                    if not await self._finished_anyway(backend, jobs):
                        raise timed_out
                    break  # the cancel came too late: the jobs are done (and billed), use them
                finished[id(job)] = status.state is JobState.SUCCEEDED
                succeeded = succeeded and finished[id(job)]
            if succeeded:
                lane.state = LaneState.COMPLETED
                self._on_completed(lane)
            # A finished job is billed: reading its result may take until the deadline.
            # A job used after a late cancel is missing from ``finished``: it succeeded.
            results = await read_results(
                self._waiter, backend, jobs, self.deadline_at, finished, on_read=lane.drop
            )
        except BaseException as exc:
            await self._attempt_failed(lane, backend, deployment, health, jobs, len(parts), exc, started)
        now = self.clock.now()
        if self.throttle is not None:
            self.throttle.on_success(deployment.provider)
        lane.result_attempt = self._record(
            deployment, jobs, AttemptOutcome.SUCCEEDED, None, started, now, hedged=lane.hedged
        )
        return complete(
            results,
            store=self.store,
            deployment=deployment,
            request=self.request,
            jobs=jobs,
            attempts=list(self.attempts),
            watched_s=now - started,
            watched_from_submit=True,
            now=now,
            total_s=now - self.started,
            estimated_cost=lane.candidate.estimated_cost,  # the plan's, when it made one
        )

    def _live_jobs(self, lanes: Sequence[_Lane]) -> list[tuple[Backend, ProviderJob]]:
        """The jobs ``lanes`` hold accepted and unread, with their backends."""
        return [
            (self.backends[lane.candidate.deployment.provider], job) for lane in lanes for job in lane.live
        ]

    async def _submit_body(
        self,
        lane: _Lane,
        backend: Backend,
        deployment: Deployment,
        health: DeploymentHealth,
        started: float,
    ) -> Submitted:
        """A submit-only attempt (``AsyncRouter.submit``): the jobs accepted, nothing watched."""
        jobs: list[ProviderJob] = []
        lane.jobs = jobs
        parts = split_request(self.request, deployment.limits.max_outputs_per_call)
        try:
            for part in parts:
                jobs.append(await self._submit_one(lane, backend, deployment, part))
        except BaseException as exc:
            await self._attempt_failed(lane, backend, deployment, health, jobs, len(parts), exc, started)
        # Nobody watches the jobs from here: free the half-open probe slot now;
        # AsyncRouter.result() records the outcome when it is fetched.
        health.release_probe()
        return Submitted(deployment, jobs, started)

    async def _attempt_failed(
        self,
        lane: _Lane,
        backend: Backend,
        deployment: Deployment,
        health: DeploymentHealth,
        jobs: list[ProviderJob],
        parts: int,
        error: BaseException,
        started: float,
    ) -> NoReturn:
        """Record an attempt that ended without a result, then raise for it.

        Cancelled (the deadline, a won hedge, the caller): says nothing about the
        deployment, and a hedge loser's attempt was already recorded by the winner. A
        genrouter error or any other exception (wrapped in a ProviderError) fails the
        attempt, after the other accepted jobs of a split request are cancelled.
        """
        if isinstance(error, asyncio.CancelledError):
            health.release_probe()
            if lane.state is not LaneState.LOST:
                self._record(
                    deployment,
                    jobs,
                    AttemptOutcome.CANCELLED,
                    "cancelled before it finished",
                    started,
                    hedged=lane.hedged,
                )
            raise error
        if not isinstance(error, Exception):
            raise error  # KeyboardInterrupt, SystemExit: not the attempt's business
        await self._cancel_unfinished(backend, jobs, parts)
        if isinstance(error, GenRouterError):
            self._fail(lane, deployment, jobs, error, started)
            raise error
        wrapped = ProviderError(
            f"backend {deployment.provider!r} raised {type(error).__name__}: {error}",
            provider=deployment.provider,
            retryable=False,
        )
        self._fail(lane, deployment, jobs, wrapped, started)
        raise wrapped from error

    async def _submit_one(
        self, lane: _Lane, backend: Backend, deployment: Deployment, request: GenerationRequest
    ) -> ProviderJob:
        # A lane must not abandon a submit half-way (its job could run unseen): _stop
        # leaves a submitting lane alone for the grace period, and the lane stops
        # itself here once the job is recorded, so that the job gets cancelled.
        lane.submitting += 1
        # The backend may pass the time left on to the provider (fal's X-Fal-Request-Timeout,
        # Replicate's Cancel-After). A submit-only job outlives the submit unless the
        # request itself set a deadline.
        pushed = not self._submit_only or self.request.deadline_s is not None
        token = SUBMIT_DEADLINE.set(_TimeLeft(self.clock, self.deadline_at) if pushed else None)
        try:
            job = await backend.submit(deployment, request, webhook_url=self.webhook_url)
        finally:
            lane.submitting -= 1
            try:  # noqa: SIM105 - contextlib.suppress costs a context manager per submit
                SUBMIT_DEADLINE.reset(token)
            except ValueError:  # resumed in another task's context (3.11 eager start)
                pass
        lane.live.append(job)
        if lane.stop_requested:
            raise asyncio.CancelledError
        return job

    async def _cancel_unfinished(self, backend: Backend, jobs: Sequence[ProviderJob], parts: int) -> None:
        """A failed split attempt must not leave its other accepted jobs running (and billing)."""
        if parts > 1 and jobs:
            await self._cancel_jobs([(backend, job) for job in jobs])

    def _blocked_until(self, provider: str) -> float:
        """When ``provider`` may next be sent a submit: the router-wide block after a
        submit's 429, or this request's own Retry-After from any call to it."""
        return max(self.store.blocked_until(provider), self._waiter.held_until(provider))

    async def _respect_retry_after(self, deployment: Deployment) -> None:
        blocked_until = self._blocked_until(deployment.provider)
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

    async def _finished_anyway(self, backend: Backend, jobs: Sequence[ProviderJob]) -> bool:
        """After a timed-out attempt's cancels: whether every job had in fact succeeded.

        A job that finished just before its cancel arrived is billed all the same; using
        it beats paying for another elsewhere. Each job is polled (transient errors
        absorbed) for up to ``CANCEL_GRACE_S`` until it shows an end; no end, or a job
        error, means no.
        """
        for job in jobs:
            until = min(self.clock.now() + CANCEL_GRACE_S, self.deadline_at)
            try:
                status = await self._waiter.wait(backend, job, until)
            except GenRouterError:
                return False
            if status is None or status.state is not JobState.SUCCEEDED:
                return False
        return True

    async def _attempt_timed_out(
        self, backend: Backend, deployment: Deployment, jobs: Sequence[ProviderJob], until: float
    ) -> AttemptTimedOutError:
        """Cancel a timed-out attempt's jobs and wait until the cancels are answered, for
        at most half of what is left of the deadline (at least ``CANCEL_GRACE_S``).

        Until a cancel is answered the job may still finish, and be billed, unseen (its
        provider down, say): racing it elsewhere then risks paying twice, while the
        answer, once in, says which it is (:meth:`_finished_anyway`).
        """
        now = self.clock.now()
        patience = max(CANCEL_GRACE_S, (self.deadline_at - now) / 2)
        await self._cancel_jobs([(backend, job) for job in jobs], now + patience)
        bound = (
            f"the deadline (deadline_s={self.deadline_s:g}s)"
            if until >= self.deadline_at
            else f"timeouts.attempt_s={self.policy.timeouts.attempt_s:g}s"
        )
        return AttemptTimedOutError(
            f"job did not finish within {bound}; cancelled it at the provider",
            provider=deployment.provider,
            provider_request_id=jobs[0].provider_request_id if jobs else None,
        )

    # -- bookkeeping -----------------------------------------------------------------

    def _record(
        self,
        deployment: Deployment,
        jobs: Sequence[ProviderJob],
        outcome: AttemptOutcome,
        error: str | None,
        started: float,
        now: float | None = None,
        *,
        hedged: bool = False,
    ) -> Attempt:
        attempt = Attempt(
            provider=deployment.provider,
            endpoint=deployment.endpoint,
            outcome=outcome,
            error=error,
            duration_s=(self.clock.now() if now is None else now) - started,
            hedged=hedged,
            provider_request_id=jobs[0].provider_request_id if jobs else None,
        )
        self.attempts.append(attempt)
        if self.hooks or logger.isEnabledFor(logging.DEBUG):
            attempt_ended(self.hooks, attempt, self.request, self.request_id, len(self.attempts))
        return attempt

    def _fail(
        self,
        lane: _Lane,
        deployment: Deployment,
        jobs: Sequence[ProviderJob],
        error: GenRouterError,
        started: float,
    ) -> None:
        if error.provider is None:
            error.provider = deployment.provider
        if error.provider_request_id is None and jobs:
            error.provider_request_id = jobs[0].provider_request_id
        self._waiter.note_retry_after(deployment.provider, error.retry_after)
        outcome = (
            AttemptOutcome.CANCELLED if isinstance(error, AttemptTimedOutError) else AttemptOutcome.FAILED
        )
        self._record(deployment, jobs, outcome, describe_error(error), started, hedged=lane.hedged)
        lane.jobs = []  # a later lost-hedge record must not name this attempt's jobs
        self.errors.append(error)
        for job in jobs:
            lane.drop(job)
        now = self.clock.now()
        if counts_against_circuit(error):
            self._note_slow(lane, now)  # a provider that fails slowly is slow
        observe_failure(self.store, now, deployment, error, self.policy)

    # -- cancellation -----------------------------------------------------------------

    async def _cancel_jobs(
        self, jobs: Sequence[tuple[Backend, ProviderJob]], grace_until: float | None = None
    ) -> None:
        if not jobs:
            return
        if grace_until is None:
            grace_until = self.clock.now() + CANCEL_GRACE_S
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._cancel_one(backend, job)) for backend, job in jobs]
        if self._cancelling is None:
            self._cancelling = set()
        for task in tasks:
            # Retries of a cancel outlive this request's grace period: the router's
            # background set keeps them alive (and aclose() waits for them).
            self._cancelling.add(task)
            task.add_done_callback(self._cancelling.discard)
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        for lane in self._lanes:
            for _, job in jobs:
                lane.drop(job)
        await wait_done(self.clock, tasks, max(0.01, grace_until - self.clock.now()))

    async def _cancel_one(self, backend: Backend, job: ProviderJob) -> None:
        """Cancel ``job`` once the answers to its calls still in flight are in (a stopped
        lane's last poll may carry a Retry-After that the cancel must honour)."""
        waiter = self._waiter
        await waiter.settle(CANCEL_GRACE_S)
        await quiet_cancel(
            backend,
            job,
            waiter.wait_before_calling(job.provider),
            on_retry_after=waiter.note_retry_after,
            clock=self.clock,
        )


def _retrieve(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Read the outcome of stopped lanes, so asyncio does not report it as never retrieved."""
    for future in futures:
        if future.done() and not future.cancelled():
            future.exception()
