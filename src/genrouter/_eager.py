"""Eager start of coroutines: run until the first suspension, then go on as a task.

``asyncio.eager_task_factory`` does this on Python 3.12+. A coroutine that finishes
without suspending (an instant backend, a lane whose job is already done) then costs
no task and no turn of the event loop, which is most of a routed call's overhead.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar, cast

__all__ = ["start_eagerly"]

T = TypeVar("T")


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


def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` now until it first suspends.

    Returns a finished future when it completed (or raised) without suspending, else
    a task that carries on from where it stopped. Either way the result is awaitable
    and cancellable like a task.
    """
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
