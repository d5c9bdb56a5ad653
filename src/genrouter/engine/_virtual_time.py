"""Virtual time for simulations: an event loop that skips its idle waits.

:class:`VirtualTimeLoop` is asyncio's own selector loop whose ``time()`` is a virtual
clock: whenever the loop would block waiting for its next timer and no I/O is ready,
the clock jumps to that timer instead. ``asyncio.sleep``, ``call_later``, timeouts and
the router's own alarms all run unchanged, so a simulated five-minute traffic spike
through the real router takes as long as its CPU work. :class:`LoopClock` is the
matching :class:`~genrouter.engine._clock.Clock` for the router.

Only for simulated providers: real network I/O still happens in real time, and a
thread the loop waits on does not advance the virtual clock.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

__all__ = ["LoopClock", "VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")


class _SkippingSelector(selectors.BaseSelector):
    """A selector that, when nothing is ready, advances the loop's clock by the timeout."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:  # nothing scheduled: only another thread can wake the loop
            return self._real.select(None)
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a virtual clock that starts at ``start`` (see the module docstring)."""

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = start
        super().__init__(_SkippingSelector(self))

    def time(self) -> float:
        """The virtual time."""
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward."""
        self._virtual_now += seconds


class LoopClock:
    """A :class:`~genrouter.engine._clock.Clock` reading ``loop.time()`` and sleeping on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        """The loop's time."""
        return self._loop.time()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)`` (virtual on a :class:`VirtualTimeLoop`)."""
        if seconds > 0:
            await asyncio.sleep(seconds)


def run_virtual(main: Callable[[LoopClock], Awaitable[T]], start: float = 0.0) -> T:
    """Run ``main(clock)`` to completion on a fresh :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(main(LoopClock(loop)))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
