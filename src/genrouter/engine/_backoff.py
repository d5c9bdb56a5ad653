"""One backoff iterator for every wait between tries: retries, polls, cancels, reconciles.

``Backoff(initial, maximum, growth=2, jitter=0)`` yields the waits
``min(maximum, initial · growth^(n-1)) · (1 + jitter · U(-1, 1))`` for n = 1, 2, ...;
``maximum`` caps genrouter's own waits, never a provider's Retry-After (callers take
``max(next(backoff), retry_after)``). With ``set_testing()`` a *backoff* yields 0
(``testing_zero=True``, retries and cancels); a *cadence* (polling, which must let a
fake clock advance so a hung job reaches its time limit) keeps its waits.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from genrouter.engine import _testing_mode

if TYPE_CHECKING:
    from genrouter.config import RetryPolicy

__all__ = ["Backoff", "retry_delays"]


class Backoff:
    """The waits of one loop, as an endless iterator (see the module docstring)."""

    __slots__ = ("_next", "growth", "initial", "jitter", "maximum", "testing_zero")

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        growth: float = 2.0,
        jitter: float = 0.0,
        testing_zero: bool = True,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.growth = growth
        self.jitter = jitter
        self.testing_zero = testing_zero
        self._next = initial

    def __iter__(self) -> Backoff:
        return self

    def __next__(self) -> float:
        if self.testing_zero and _testing_mode.enabled:
            return 0.0
        base = min(self.maximum, self._next)
        self._next = min(self.maximum, self._next * self.growth)
        if not self.jitter:
            return max(0.0, base)
        return max(0.0, base * (1.0 + self.jitter * random.uniform(-1.0, 1.0)))


def retry_delays(retry: RetryPolicy) -> Backoff:
    """The waits between a lane's attempts: ``retry.initial_backoff_s`` doubling up to
    ``retry.max_backoff_s``, ± ``retry.jitter``."""
    return Backoff(retry.initial_backoff_s, retry.max_backoff_s, jitter=retry.jitter)
