"""Token buckets that keep retries and hedges from multiplying load.

- :class:`RetryBudget`: retries are paid for by successes, one bucket per provider.
  The bucket starts full at ``max_tokens``; each retry on that provider spends one
  token and is refused when less than one is left; each successful attempt there
  earns ``token_ratio`` (never above ``max_tokens``). So, per provider and over any
  stretch of time, ``retries <= max_tokens + token_ratio × successes``. With the
  defaults (5, 1.0) retries never outnumber successes by more than five: a provider
  failing a share ``p`` of attempts wants ``p / (1 - p)`` retries per success, so up to
  about a third failing nearly every retry goes (at 28 %, 1 in 200 is refused and falls
  back instead), while one that fails everything gets 5 retries in all and then only
  first attempts and fallbacks: an outage cannot become a retry storm. A provider's
  bucket refuses hedges to it while it is empty.
- :class:`HedgeBudget` caps hedge submissions at ``max_extra_fraction`` of primary
  submissions over the last 60 s (a token bucket whose size follows the recent
  primary count, so hedges can cluster in an incident). It starts with one token,
  so a fresh router can hedge at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["HedgeBudget", "RetryBudget", "RetryThrottle"]


@dataclass(slots=True)
class RetryBudget:
    """Per-provider retry tokens: a retry spends one, a success earns ``token_ratio``.

    Why not gRPC A6's throttle (a *failure* takes a token, retries stop at half the
    bucket)? It cannot tell a provider failing 28 % of calls, where a retry nearly
    always pays, from one failing all of them: at ``token_ratio`` 0.1 it stops retrying
    once about 9 % of calls fail, and requests then give up with most of their deadline
    unused. Tying retries to successes lets them follow what retrying can still win.
    """

    max_tokens: float = 5.0
    token_ratio: float = 1.0
    _tokens: dict[str, float] = field(default_factory=dict)
    retries: int = 0
    """Retries granted so far (every provider)."""
    refused: int = 0
    """Retries refused so far (every provider)."""

    def tokens(self, provider: str) -> float:
        """The provider's current token count (``max_tokens`` for one never seen)."""
        return self._tokens.get(provider, self.max_tokens)

    def allows_retry(self, provider: str) -> bool:
        """Whether a retry (or hedge) to ``provider`` could go now (one token or more)."""
        return self.tokens(provider) >= 1.0

    def try_spend(self, provider: str) -> bool:
        """Take one token for a retry to ``provider``; False (nothing taken) when none is left."""
        tokens = self.tokens(provider)
        if tokens < 1.0:
            self.refused += 1
            return False
        self._tokens[provider] = tokens - 1.0
        self.retries += 1
        return True

    def on_success(self, provider: str) -> None:
        """A successful attempt: ``token_ratio`` more (never above ``max_tokens``)."""
        current = self._tokens.get(provider)
        if current is not None:
            self._tokens[provider] = min(self.max_tokens, current + self.token_ratio)


RetryThrottle = RetryBudget
"""The name this class had while it was gRPC A6's throttle."""


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
