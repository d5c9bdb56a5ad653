"""The clock the router measures and sleeps with, injectable for tests.

Production uses :class:`MonotonicClock` (``time.monotonic`` and ``asyncio.sleep``).
Tests inject :class:`genrouter.testing.FakeClock`, whose ``sleep`` advances time
instantly, so retry and Retry-After behaviour is checked without real waiting.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "MonotonicClock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic seconds and an async sleep."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (no-op for ≤ 0)."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic()`` and ``asyncio.sleep``."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``; returns at once for ``seconds <= 0``."""
        if seconds > 0:
            await asyncio.sleep(seconds)
