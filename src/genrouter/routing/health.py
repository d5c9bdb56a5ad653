"""Per-deployment health: latency observations, outcome counts and the circuit breaker.

The breaker (per deployment):

- **closed**: requests flow. ``failure_threshold`` consecutive failures open it.
- **open**: excluded from plans for ``cooldown_s``.
- **half-open**: after the cooldown, one probe at a time is admitted; its success
  closes the circuit, its failure re-opens it for another ``cooldown_s``.

Failures are connection errors, 5xx, attempt timeouts and retryable job failures.
429s (handled by Retry-After), invalid requests and poll errors of a pinned job are
not failures. Everything here is plain data and pure functions of ``now``.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["CircuitState", "DeploymentHealth"]

LATENCY_WINDOW = 256
"""Latency observations kept per deployment (the most recent ones)."""


class CircuitState(StrEnum):
    """A deployment's circuit breaker state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class DeploymentHealth:
    """What the router has seen of one deployment."""

    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    opened_at: float | None = None
    open_until: float = 0.0
    probe_in_flight: bool = False
    _sorted: list[float] = field(default_factory=list)
    """The same observations as ``latencies``, kept sorted for O(log n) quantiles."""

    def record_success(self, latency_s: float) -> None:
        """A job finished successfully in ``latency_s``; closes a half-open circuit."""
        if len(self.latencies) == self.latencies.maxlen:
            evicted = self.latencies[0]
            del self._sorted[bisect.bisect_left(self._sorted, evicted)]
        self.latencies.append(latency_s)
        bisect.insort(self._sorted, latency_s)
        self.successes += 1
        self.consecutive_failures = 0
        self.opened_at = None
        self.open_until = 0.0
        self.probe_in_flight = False

    def record_failure(self, now: float, failure_threshold: int, cooldown_s: float) -> None:
        """A failure that counts against the breaker; may open the circuit."""
        self.failures += 1
        self.consecutive_failures += 1
        was_probe = self.probe_in_flight
        self.probe_in_flight = False
        if was_probe or self.consecutive_failures >= failure_threshold:
            self.opened_at = now
            self.open_until = now + cooldown_s

    def release_probe(self) -> None:
        """A half-open probe ended with neither success nor breaker failure (e.g. a 429)."""
        self.probe_in_flight = False

    def state(self, now: float) -> CircuitState:
        """The circuit state at ``now``."""
        if self.opened_at is None:
            return CircuitState.CLOSED
        if now < self.open_until:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def admits(self, now: float) -> bool:
        """Whether a request may go here now (closed, or half-open with no probe out)."""
        state = self.state(now)
        if state is CircuitState.CLOSED:
            return True
        return state is CircuitState.HALF_OPEN and not self.probe_in_flight

    def begin_request(self, now: float) -> None:
        """Mark a request as sent; in half-open it becomes the one probe."""
        if self.state(now) is CircuitState.HALF_OPEN:
            self.probe_in_flight = True

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

    def describe(self, now: float) -> str:
        """Short human summary: ``closed, 12 ok / 1 failed, p95 1.8s``."""
        p95 = self.p95
        latency = f", p95 {p95:.2f}s" if p95 is not None else ", no latency data"
        state = self.state(now)
        extra = f" for {self.open_until - now:.1f}s" if state is CircuitState.OPEN else ""
        return f"{state.value}{extra}, {self.successes} ok / {self.failures} failed{latency}"
