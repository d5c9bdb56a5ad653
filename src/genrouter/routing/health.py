"""Per-deployment health: recent latencies, outcomes, and the circuit breaker.

**Latency.** The most recent ``LATENCY_WINDOW`` successful latencies, kept sorted so
a quantile is O(1) to read and O(log n) to update. Samples older than
``LATENCY_HORIZON_S`` are dropped (all but the newest ``LATENCY_KEEP``), so an
incident shows within a few requests and a recovery is noticed rather than averaged
away. Queue time and run time are tracked apart where providers report them (cold
starts show up as queue time).

**Change**: when most of the newest ``RECENT_SAMPLES`` latencies exceeded the window's
p95 as they came in (nine of sixteen: by chance, with independent latencies, about once
in forty million), the window no longer describes the deployment: the estimate is
then the p95 of those recent samples, until the window catches up. An incident that
ended with the deployment benched leaves a window mostly of older, faster samples;
without this it would rank level with its healthy peer again while still slow.

**Circuit breaker** (per deployment):

- **closed**: requests flow. It opens after ``failure_threshold`` consecutive
  failures, or when failures reach ``failure_rate_threshold`` of at least
  ``minimum_requests`` outcomes in the last ``window_s``. A deployment that fails a
  fraction ``p`` of the time anyway (measured over ``minimum_requests`` or more
  outcomes before the streak) needs a streak unlikely under ``p``:
  ``max(failure_threshold, ceil(log(1e-4) / log(p)))`` failures, at most
  ``4 × failure_threshold`` (5 at p = 5 %, 8 at p = 28 %, 11 at p = 40 %). At volume a
  run of five failures from a flaky provider is routine, not an outage, and benching
  it for ``cooldown_s`` would cost more than it saves; a real outage makes such a
  streak within moments.
- **open**: excluded from plans for ``cooldown_s``.
- **half-open**: after the cooldown, ``half_open_probes`` requests at a time are
  admitted; a success closes the circuit, a failure re-opens it for ``cooldown_s``.

Failures are connection errors, 5xx, attempt timeouts and retryable job failures;
429s (Retry-After handles them), invalid requests and poll errors of a pinned job
are not. Everything here is plain data and pure functions of ``now``.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "HEDGE_WIN_PRIOR",
    "LATENCY_HORIZON_S",
    "LATENCY_WINDOW",
    "OVERDUE_EVIDENCE",
    "STREAK_FALSE_ALARM",
    "CircuitState",
    "DeploymentHealth",
    "streak_needed",
]

STREAK_FALSE_ALARM = 1e-4
"""Chance, under a deployment's usual failure rate, of a streak long enough to open it."""


def streak_needed(threshold: int, usual_failure_rate: float | None) -> int:
    """Consecutive failures that open a circuit, given the usual failure rate (if known).

    ``max(threshold, ceil(log(STREAK_FALSE_ALARM) / log(p)))``, capped at ``4 × threshold``.
    """
    p = usual_failure_rate
    if p is None or p <= 0.0:
        return threshold
    if p >= 1.0:
        return 4 * threshold
    unlikely = math.ceil(math.log(STREAK_FALSE_ALARM) / math.log(p) - 1e-9)
    return min(4 * threshold, max(threshold, unlikely))


LATENCY_WINDOW = 256
"""Most latency observations kept per deployment."""

LATENCY_HORIZON_S = 120.0
"""Observations older than this stop counting (except the newest ``LATENCY_KEEP``)."""

LATENCY_KEEP = 8
"""Observations always kept, however old, so a quiet deployment keeps an estimate."""

_DEFAULT_WINDOW_S = 60.0

QUEUED_S = 0.01
"""Queue time above which a job counts as having waited in a provider-side queue."""

RECENT_SAMPLES = 16
"""The newest latencies that are checked against the window for a change."""

OVERDUE_EVIDENCE = 3
"""Requests in flight past a threshold that show a deployment is slow *now*.

One or two stragglers are the usual tail (at 100 requests a second, a lognormal's p95
has one other request past it about 40 % of the time while a request runs past its
own); three at once is an incident starting, or a queue building up.
"""

HEDGE_WIN_PRIOR = 0.4
"""Hedge win rate assumed before a deployment's first race."""

HEDGE_WIN_DECAY = 0.1
"""Weight of the newest race in a deployment's hedge win rate (about the last 10)."""


class CircuitState(StrEnum):
    """A deployment's circuit breaker state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Outcomes:
    """Success/failure outcomes in a sliding time window, with running counts."""

    window_s: float = _DEFAULT_WINDOW_S
    events: deque[tuple[float, bool]] = field(default_factory=deque)
    failures: int = 0

    def add(self, now: float, failed: bool) -> None:
        self.events.append((now, failed))
        self.failures += failed
        self.expire(now)

    def expire(self, now: float) -> None:
        events = self.events
        horizon = now - self.window_s
        while events and events[0][0] < horizon:
            _, failed = events.popleft()
            self.failures -= failed

    @property
    def total(self) -> int:
        return len(self.events)


@dataclass(slots=True)
class DeploymentHealth:
    """What the router has seen of one deployment."""

    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    opened_at: float | None = None
    open_until: float = 0.0
    probes_in_flight: int = 0
    last_request_at: float | None = None
    queue_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    run_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    remote_p95: float | None = None
    """p95 seen by other processes sharing state (Redis store), sample-weighted."""
    remote_samples: int = 0
    _sorted: list[float] = field(default_factory=list)
    """The same observations as ``latencies``, kept sorted."""
    _stamps: deque[float | None] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    _outcomes: _Outcomes = field(default_factory=_Outcomes)
    _inflight: dict[int, float] = field(default_factory=dict)
    _inflight_heap: list[tuple[float, int]] = field(default_factory=list)
    _next_token: int = 0
    hedge_win_rate: float = HEDGE_WIN_PRIOR
    """How often a hedge beat a request here, recent races weighted most."""
    _changed_p95: float | None = None
    """p95 of the newest ``RECENT_SAMPLES`` when most of them exceeded the window's p95."""
    _recent_above: deque[bool] = field(default_factory=lambda: deque(maxlen=RECENT_SAMPLES))
    _overtaken: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=OVERDUE_EVIDENCE))
    """(started, cancelled) of the newest requests here that a hedge overtook."""

    # -- observations ----------------------------------------------------------------

    def record_success(
        self,
        latency_s: float,
        now: float | None = None,
        *,
        queued_s: float | None = None,
        running_s: float | None = None,
    ) -> None:
        """A job finished successfully in ``latency_s``; closes a half-open circuit."""
        if len(self.latencies) == LATENCY_WINDOW:
            self._drop_oldest()
        self._append_latency(latency_s, now)
        if queued_s is not None:
            self.queue_times.append(queued_s)
        if running_s is not None:
            self.run_times.append(running_s)
        self.successes += 1
        self.consecutive_failures = 0
        self.opened_at = None
        self.open_until = 0.0
        self.probes_in_flight = 0
        if now is not None:
            self._outcomes.add(now, False)
            self.expire(now)

    def record_latency(self, latency_s: float, now: float | None = None) -> None:
        """A latency seen without a success: a hedge loser stopped after ``latency_s``.

        A lower bound of what that request would have taken; recording it keeps the
        window from seeing only the requests fast enough to win (survivorship bias).
        """
        if len(self.latencies) == LATENCY_WINDOW:
            self._drop_oldest()
        self._append_latency(latency_s, now)

    def _append_latency(self, latency_s: float, now: float | None) -> None:
        # Whether each of the newest samples exceeded the window's p95 when it came in,
        # so the hot path sorts nothing.
        window_p95 = self.quantile(0.95) if len(self._sorted) >= RECENT_SAMPLES else None
        self._recent_above.append(window_p95 is not None and latency_s > window_p95)
        self.latencies.append(latency_s)
        self._stamps.append(now)
        bisect.insort(self._sorted, latency_s)
        self._changed_p95 = None
        if sum(self._recent_above) > RECENT_SAMPLES // 2:
            # Fewer than RECENT_SAMPLES may be left once old samples expired.
            newest = sorted(itertools.islice(reversed(self.latencies), RECENT_SAMPLES))
            self._changed_p95 = newest[round(0.95 * (len(newest) - 1))]

    def record_failure(
        self,
        now: float,
        failure_threshold: int,
        cooldown_s: float,
        *,
        failure_rate_threshold: float | None = None,
        minimum_requests: int = 1,
        window_s: float | None = None,
    ) -> None:
        """A failure that counts against the breaker; may open the circuit."""
        self.failures += 1
        self.consecutive_failures += 1
        outcomes = self._outcomes
        if window_s is not None:
            outcomes.window_s = window_s
        outcomes.add(now, True)
        was_probe = self.probes_in_flight > 0
        self.probes_in_flight = 0
        rate_tripped = (
            failure_rate_threshold is not None
            and outcomes.total >= minimum_requests
            and outcomes.failures / outcomes.total >= failure_rate_threshold
        )
        streak = self.consecutive_failures
        before = outcomes.total - streak
        usual = (outcomes.failures - streak) / before if before >= minimum_requests else None
        if was_probe or streak >= streak_needed(failure_threshold, usual) or rate_tripped:
            self.opened_at = now
            self.open_until = now + cooldown_s

    def release_probe(self) -> None:
        """A request ended with neither success nor breaker failure (a 429, a cancel)."""
        if self.probes_in_flight:
            self.probes_in_flight -= 1

    def _drop_oldest(self) -> None:
        evicted = self.latencies.popleft()
        self._stamps.popleft()
        del self._sorted[bisect.bisect_left(self._sorted, evicted)]

    def expire(self, now: float) -> None:
        """Forget latencies older than the horizon (keeping the newest few)."""
        stamps = self._stamps
        horizon = now - LATENCY_HORIZON_S
        while len(stamps) > LATENCY_KEEP and stamps[0] is not None and stamps[0] < horizon:
            self._drop_oldest()

    # -- breaker -----------------------------------------------------------------------

    def state(self, now: float) -> CircuitState:
        """The circuit state at ``now``."""
        if self.opened_at is None:
            return CircuitState.CLOSED
        if now < self.open_until:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def admits(self, now: float, half_open_probes: int = 1) -> bool:
        """Whether a request may go here now (closed, or half-open with a probe slot free)."""
        if self.opened_at is None:
            return True
        if now < self.open_until:
            return False
        return self.probes_in_flight < half_open_probes

    def begin_request(self, now: float) -> int:
        """Mark a request as sent (in half-open it takes a probe slot); returns its token.

        Pass the token to :meth:`end_request` when the request ends, however it ends.
        """
        self.last_request_at = now
        if self.opened_at is not None and now >= self.open_until:
            self.probes_in_flight += 1
        self._next_token += 1
        token = self._next_token
        self._inflight[token] = now
        heapq.heappush(self._inflight_heap, (now, token))
        return token

    def end_request(self, token: int) -> None:
        """A request that :meth:`begin_request` started has ended."""
        self._inflight.pop(token, None)

    def _evidence_age(self, now: float, count: int = OVERDUE_EVIDENCE) -> float | None:
        """How long the ``count``-th oldest request in flight has run (None if fewer are
        in flight): that many requests have all run at least this long."""
        heap = self._inflight_heap
        alive = self._inflight
        taken: list[tuple[float, int]] = []
        while heap and len(taken) < count:
            entry = heapq.heappop(heap)
            if entry[1] in alive:  # ended requests are dropped here, lazily
                taken.append(entry)
        for entry in taken:
            heapq.heappush(heap, entry)
        return now - taken[-1][0] if len(taken) == count else None

    def overdue(self, now: float, age: float) -> bool:
        """Whether ``OVERDUE_EVIDENCE`` requests here have run ``age`` or longer.

        A request that a hedge overtook within the last ``age`` counts as if still in
        flight: cancelled, it stops showing the slowness that got it overtaken, and the
        requests that started beside it would otherwise lose their evidence. Not while
        the deployment has queued lately: its queue is what slows it, the requests waiting
        in it show that already, and more hedges would only add load (in the capacity
        benchmark counting them made the p99 1.1-1.2x the even split's, not 1.02x).
        """
        since = now - age
        overtaken = 0
        if not self.queued_lately:
            overtaken = sum(started <= since <= cancelled for started, cancelled in self._overtaken)
        if overtaken >= OVERDUE_EVIDENCE:
            return True
        evidence = self._evidence_age(now, OVERDUE_EVIDENCE - overtaken)
        return evidence is not None and evidence >= age

    def record_overtaken(self, started: float, now: float) -> None:
        """A request here, running since ``started``, lost a race to its hedge at ``now``."""
        self._overtaken.append((started, now))

    def record_race(self, *, hedge_won: bool) -> None:
        """A request here was hedged and the race ended: did the hedge win it?"""
        self.hedge_win_rate += HEDGE_WIN_DECAY * (float(hedge_won) - self.hedge_win_rate)

    def outlived(self, age: float) -> bool:
        """Whether a request has run longer than every latency in the window (or there are none)."""
        ordered = self._sorted
        return not ordered or age > ordered[-1]

    @property
    def queues(self) -> bool:
        """Whether recent jobs waited in a provider-side queue (a concurrency limit, cold starts).

        True when more than a quarter of the last queue-time observations exceed 10 ms.
        """
        times = self.queue_times
        return bool(times) and sum(t > QUEUED_S for t in times) * 4 > len(times)

    @property
    def queued_lately(self) -> bool:
        """Whether any of the last queue-time observations exceeds 10 ms (a weaker :attr:`queues`)."""
        return any(t > QUEUED_S for t in self.queue_times)

    @property
    def inflight(self) -> int:
        """Requests in flight here now."""
        return len(self._inflight)

    def expected_p95(self, now: float, estimate: float | None) -> float | None:
        """``estimate`` raised to the age of the third-oldest request still in flight.

        Completed requests show an incident only after they finish; requests that have
        already waited longer than the usual p95 show it now (and a provider-side queue
        building up under load shows as old requests too). It takes three
        (``OVERDUE_EVIDENCE``): a straggler or two are the usual tail, and letting them
        move the estimate would flap traffic between equally good deployments.
        """
        age = self._evidence_age(now)
        if age is None:
            return estimate
        return age if estimate is None or age > estimate else estimate

    @property
    def probe_in_flight(self) -> bool:
        """Whether a half-open probe is out."""
        return self.probes_in_flight > 0

    def failure_rate(self, now: float) -> float | None:
        """Failures ÷ outcomes in the breaker window; None with no outcomes."""
        outcomes = self._outcomes
        outcomes.expire(now)
        return outcomes.failures / outcomes.total if outcomes.total else None

    # -- latency -----------------------------------------------------------------------

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0-1) of recent latencies; None with no observations."""
        ordered = self._sorted
        if not ordered:
            return None
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    @property
    def p95(self) -> float | None:
        """95th percentile of recent latencies, seconds."""
        return self.quantile(0.95)

    @property
    def estimated_p95(self) -> float | None:
        """This process's p95 blended with other processes' by sample count (planning uses it).

        This process's part is the recent p95 when the deployment has changed (see the
        module docstring), else the window's.
        """
        local = self._changed_p95 if self._changed_p95 is not None else self.quantile(0.95)
        remote = self.remote_p95
        if remote is None:
            return local
        if local is None:
            return remote
        n = len(self._sorted)
        return (local * n + remote * self.remote_samples) / (n + self.remote_samples)

    @property
    def changed(self) -> bool:
        """Whether most of the newest latencies exceeded the window's p95 (a change)."""
        return self._changed_p95 is not None

    @property
    def samples(self) -> int:
        """How many latency observations currently count."""
        return len(self._sorted)

    def describe(self, now: float) -> str:
        """Short human summary: ``closed, 12 ok / 1 failed, p95 1.80s``."""
        p95 = self.p95
        latency = f", p95 {p95:.2f}s" if p95 is not None else ", no latency data"
        state = self.state(now)
        extra = f" for {self.open_until - now:.1f}s" if state is CircuitState.OPEN else ""
        queue = ""
        if self.queue_times:
            queue = f", queue p50 {sorted(self.queue_times)[len(self.queue_times) // 2]:.2f}s"
        return f"{state.value}{extra}, {self.successes} ok / {self.failures} failed{latency}{queue}"
