"""The clock the router measures, sleeps and sets alarms with, injectable for tests.

Production uses :class:`MonotonicClock` (``time.monotonic``, ``asyncio.sleep`` and the
event loop's timers). Tests inject :class:`genrouter.testing.FakeClock`, whose ``sleep``
advances time instantly and fires the alarms that come due, so retry, Retry-After,
hedging and deadline behaviour is checked without real waiting and takes the same path
as on the real clock.

:func:`wait_done` is ``asyncio.wait(..., timeout=...)`` on a clock: every bounded wait
in the engine goes through it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import Context
from typing import Any, Protocol, runtime_checkable

__all__ = ["Clock", "MonotonicClock", "Timer", "bare_context", "call_later", "wait_done"]


class Timer(Protocol):
    """A pending alarm (``asyncio.TimerHandle`` or a fake clock's)."""

    def cancel(self) -> None:
        """Stop it from firing (no-op once fired)."""
        ...


@runtime_checkable
class Clock(Protocol):
    """Monotonic seconds and an async sleep (and, optionally, ``call_later`` alarms)."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Wait ``seconds`` (no-op for ≤ 0); an ``async def`` is fine."""
        ...


def _set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_BARE = threading.local()


def bare_context() -> Context:
    """Where the engine's own timer and done callbacks run: they read no context
    variable, and passing one spares asyncio a context copy per callback (per request in
    flight). One per thread: a context cannot be entered by two threads' loops at once."""
    context: Context | None = getattr(_BARE, "context", None)
    if context is None:
        context = _BARE.context = Context()
    return context


async def _no_wait() -> None:
    return None


class MonotonicClock:
    """The real clock: ``time.monotonic()``, ``asyncio.sleep`` and ``loop.call_later``."""

    __slots__ = ()

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> Awaitable[None]:
        """A future the loop resolves after ``seconds`` (``asyncio.sleep`` without its two
        coroutine frames and context copy: ten thousand requests in flight each sleep
        between polls, and every object they hold is walked by each full collection).
        ``seconds <= 0`` returns at once."""
        if seconds <= 0:
            return _no_wait()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        loop.call_later(seconds, _set_none, future, context=bare_context())
        return future

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> Timer:
        """``callback(*args)`` after ``delay`` seconds, on the running loop."""
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback, *args, context=context)


def call_later(
    clock: Clock, delay: float, callback: Callable[..., object], *args: Any, context: Context | None = None
) -> Timer:
    """An alarm on ``clock``: its ``call_later`` when it has one (a clock written before
    clocks had alarms falls back to the event loop's timer)."""
    method = getattr(clock, "call_later", None)
    if method is not None:
        timer: Timer = method(delay, callback, *args, context=context)
        return timer
    return asyncio.get_running_loop().call_later(max(0.0, delay), callback, *args, context=context)


def _wake(wake: asyncio.Future[None], *_: object) -> None:
    if not wake.done():
        wake.set_result(None)


async def wait_done(clock: Clock, futures: Iterable[asyncio.Future[Any]], within_s: float) -> None:
    """Wait until every one of ``futures`` is done, or ``within_s`` seconds pass on ``clock``.

    Like ``asyncio.wait(futures, timeout=within_s)`` (nothing is cancelled), but the
    timeout is an alarm on ``clock``.
    """
    pending = [f for f in futures if not f.done()]
    if not pending:
        await asyncio.sleep(0)  # as asyncio.wait does: the futures' done callbacks run first
        return
    loop = asyncio.get_running_loop()
    wake: asyncio.Future[None] = loop.create_future()
    left = len(pending)

    def one_done(_future: asyncio.Future[Any]) -> None:
        nonlocal left
        left -= 1
        if left == 0:
            _wake(wake)

    for future in pending:
        future.add_done_callback(one_done)
    timer = call_later(clock, within_s, _wake, wake)
    try:
        await wake
    finally:
        timer.cancel()
        for future in pending:
            future.remove_done_callback(one_done)
