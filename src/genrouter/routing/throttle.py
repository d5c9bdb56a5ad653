"""Token buckets that keep retries and hedges from multiplying load.

- :class:`RetryThrottle` is gRPC A6's retry throttling, one bucket per provider:
  the count starts at ``max_tokens``; a failed attempt subtracts 1, a success adds
  ``token_ratio``; while the count is at or below ``max_tokens / 2`` retries (and
  hedges) to that provider are refused. With the defaults (10, 0.1), a provider that
  fails everything gets at most ~5 retries before they stop, and needs ~50 successes
  to earn them back: an outage cannot become a retry storm.
- :class:`HedgeBudget` caps hedge submissions at ``max_extra_fraction`` of primary
  submissions over the last 60 s (a token bucket whose size follows the recent
  primary count, so hedges can cluster in an incident). It starts with one token,
  so a fresh router can hedge at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["HedgeBudget", "RetryThrottle"]


@dataclass(slots=True)
class RetryThrottle:
    """Per-provider retry tokens (gRPC A6 ``retryThrottling``)."""

    max_tokens: float = 10.0
    token_ratio: float = 0.1
    _tokens: dict[str, float] = field(default_factory=dict)

    def tokens(self, provider: str) -> float:
        """The provider's current token count."""
        return self._tokens.get(provider, self.max_tokens)

    def allows_retry(self, provider: str) -> bool:
        """Whether a retry (or hedge) to ``provider`` may go now."""
        return self.tokens(provider) > self.max_tokens / 2

    def on_failure(self, provider: str) -> None:
        """A failed attempt: one token less (never below zero)."""
        self._tokens[provider] = max(0.0, self.tokens(provider) - 1.0)

    def on_success(self, provider: str) -> None:
        """A successful attempt: ``token_ratio`` back (never above ``max_tokens``)."""
        current = self._tokens.get(provider)
        if current is not None:
            self._tokens[provider] = min(self.max_tokens, current + self.token_ratio)


@dataclass(slots=True)
class HedgeBudget:
    """Hedges ≤ ``max_extra_fraction`` × primaries over the last ``window_s``, as a token bucket.

    Each primary adds ``max_extra_fraction`` tokens and each hedge spends one. The
    bucket holds at most ``max(1, max_extra_fraction × primaries in the window)``
    tokens: hedges can cluster when slow requests do (an incident), while over any
    window they stay within the fraction. It starts with one token, so a fresh router
    can hedge at once.
    """

    max_extra_fraction: float = 0.05
    window_s: float = 60.0
    _tokens: float = 1.0
    _per_second: deque[list[float]] = field(default_factory=deque)
    _in_window: int = 0
    primaries: int = 0
    hedges: int = 0

    def _slide(self, now: float) -> None:
        buckets = self._per_second
        while buckets and buckets[0][0] <= now - self.window_s:
            self._in_window -= int(buckets.popleft()[1])

    def on_primary(self, now: float = 0.0) -> None:
        """A primary submission earns ``max_extra_fraction`` of a hedge."""
        self.primaries += 1
        self._slide(now)
        second = float(int(now))
        if self._per_second and self._per_second[-1][0] == second:
            self._per_second[-1][1] += 1
        else:
            self._per_second.append([second, 1.0])
        self._in_window += 1
        self._tokens = min(self._capacity(), self._tokens + self.max_extra_fraction)

    def try_spend(self, *, keep: float = 0.0) -> bool:
        """Take one token for a hedge if there is one beyond ``keep`` (a fraction of the
        bucket's capacity held back); else False."""
        if self._tokens - 1.0 >= keep * self._capacity():
            self._tokens -= 1.0
            self.hedges += 1
            return True
        return False

    def _capacity(self) -> float:
        return max(1.0, self.max_extra_fraction * self._in_window)

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        return self._tokens
