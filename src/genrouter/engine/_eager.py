"""Eager start of coroutines: run until the first suspension, then go on as a task.

A coroutine that finishes without suspending (an instant backend, a lane whose job
is already done) then costs no task and no turn of the event loop, which is most of
a routed call's overhead.

On Python 3.12+ this is ``asyncio.Task(..., eager_start=True)``: the first step runs
inside the new task, so it is safe for any coroutine. On 3.11 the first step has to
run in the caller's task, which breaks code that opens a cancel scope (anyio, httpx)
before its first suspension and closes it after; there it is used only when the
caller says the coroutine is safe (``safe=True``), and a plain task is created
otherwise.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar, cast

__all__ = ["NATIVE_EAGER_START", "start_eagerly"]

T = TypeVar("T")

NATIVE_EAGER_START = sys.version_info >= (3, 12)
"""Whether asyncio starts tasks eagerly itself (then every coroutine is safe)."""


@types.coroutine
def _drive(coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Go on driving a coroutine that already ran its first step, forwarding sends and throws."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return cast(T, stop.value)
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return cast(T, stop.value)


async def _continue(coro: Coroutine[Any, Any, T], first: Any) -> T:
    return await _drive(coro, first)


def start_eagerly(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], *, safe: bool = False
) -> asyncio.Future[T]:
    """Run ``coro`` now until it first suspends, where that is safe; else create a task.

    Returns a finished future when it completed (or raised) without suspending, else
    a task that carries on from where it stopped. Either way the result is awaitable
    and cancellable like a task.
    """
    if NATIVE_EAGER_START:
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    if not safe:
        return loop.create_task(coro)
    future: asyncio.Future[T]
    try:
        first = coro.send(None)
    except StopIteration as stop:
        future = loop.create_future()
        future.set_result(cast(T, stop.value))
        return future
    except BaseException as exc:
        future = loop.create_future()
        future.set_exception(exc)
        return future
    return loop.create_task(_continue(coro, first))
