"""The injected clock's alarms: FakeClock fires them as its time passes them."""

from __future__ import annotations

import asyncio

from genrouter.engine._clock import MonotonicClock, call_later, wait_done
from genrouter.testing import FakeClock


async def test_a_fake_alarm_fires_when_a_sleep_passes_it() -> None:
    """call_later(2) fires during the sleep that moves time past it, not before."""
    clock = FakeClock()
    fired: list[float] = []
    clock.call_later(2.0, lambda: fired.append(clock.now()))
    await clock.sleep(1.0)
    assert fired == []
    await clock.sleep(1.5)
    assert fired == [1002.5]


def test_fake_alarms_fire_in_time_order_and_a_cancelled_one_never() -> None:
    """Alarms due in one advance fire earliest first; cancel() stops one."""
    clock = FakeClock()
    fired: list[str] = []
    clock.call_later(3, fired.append, "late")
    clock.call_later(1, fired.append, "early")
    clock.call_later(2, fired.append, "cancelled").cancel()
    clock.advance(5)
    assert fired == ["early", "late"]


async def test_wait_done_times_out_on_the_fake_clock() -> None:
    """A bounded wait ends when fake time passes its timeout, with the future still pending."""
    clock = FakeClock()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(wait_done(clock, [never], 10.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    await clock.sleep(10.0)
    await waiting
    assert not never.done()


async def test_wait_done_returns_once_every_future_is_done() -> None:
    """No timeout needed when the futures end first."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(2)]
    waiting = asyncio.ensure_future(wait_done(MonotonicClock(), futures, 3600))
    for future in futures:
        future.set_result(None)
    await asyncio.wait_for(waiting, 5)


async def test_a_clock_without_alarms_falls_back_to_the_event_loop() -> None:
    """A user clock with only now() and sleep() still gets alarms (the loop's timer)."""

    class Bare:
        def now(self) -> float:
            return 0.0

        async def sleep(self, seconds: float) -> None:
            await asyncio.sleep(seconds)

    fired = asyncio.Event()
    call_later(Bare(), 0.0, fired.set)
    await asyncio.wait_for(fired.wait(), 5)
