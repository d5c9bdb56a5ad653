"""``on_progress``: tell a caller what its request's jobs are doing while it waits.

The router hands the execution (or ``result()``) backends wrapped by
:func:`watch`: each status a backend returns from ``poll`` (or ``wait``) is compared
with the last one of that job, and when its state or queue position changed, or new
log lines came, the callback gets a :class:`~genrouter.types.Progress`. Providers
send logs cumulatively (fal's ``?logs=1``, Replicate's ``logs``), trimmed to their
last lines; only the lines after those already sent are passed on.

A callback may be a plain function or (on the async API) a coroutine function,
awaited before the request polls again. One that raises is logged once per
request and otherwise ignored: progress never fails a request.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from genrouter.types import JobState, JobStatus, Progress

if TYPE_CHECKING:
    from genrouter.backends.base import Backend
    from genrouter.engine._clock import Clock
    from genrouter.types import ProviderJob

__all__ = ["ProgressCallback", "ProgressReporter", "new_lines", "watch"]

log = logging.getLogger("genrouter")

ProgressCallback = Callable[[Progress], Awaitable[None] | None]
"""``fn(progress)``; on the async API it may be a coroutine function."""


def new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of ``now`` that follow what ``before`` already showed.

    Both are the tails of one growing log: the longest end of ``before`` that starts
    ``now`` is the overlap; with none, every line of ``now`` is new.
    """
    if not before:
        return list(now)
    for size in range(min(len(before), len(now)), 0, -1):
        if before[-size:] == now[:size]:
            return now[size:]
    return list(now)


class ProgressReporter:
    """Turns one request's job statuses into :class:`Progress` calls (see the module docstring)."""

    __slots__ = ("_callback", "_clock", "_failed", "_last", "_started")

    def __init__(self, callback: ProgressCallback, clock: Clock, started: float | None = None) -> None:
        self._callback = callback
        self._clock = clock
        self._started = clock.now() if started is None else started
        self._last: dict[tuple[str, str], tuple[JobState, int | None, list[str]]] = {}
        self._failed = False

    async def seen(self, job: ProviderJob, status: JobStatus) -> None:
        """A status of ``job`` came in: report it if it says something new."""
        key = (job.provider, job.provider_request_id)
        before = self._last.get(key)
        lines = new_lines(before[2] if before else [], list(status.logs))
        if (
            before is not None
            and before[0] is status.state
            and before[1] == status.queue_position
            and not lines
        ):
            return
        self._last[key] = (status.state, status.queue_position, list(status.logs))
        await self.emit(
            Progress(
                provider=job.provider,
                state=status.state,
                queue_position=status.queue_position,
                logs=lines,
                elapsed_s=max(0.0, self._clock.now() - self._started),
            )
        )

    async def emit(self, progress: Progress) -> None:
        """Call the callback; an exception is logged (the first time) and swallowed."""
        try:
            outcome = self._callback(progress)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            if not self._failed:
                self._failed = True
                log.warning(
                    "genrouter: on_progress callback raised; ignored for the rest of this request",
                    exc_info=True,
                )


class _Watched:
    """A backend whose statuses are reported; everything else is the backend's own."""

    def __init__(self, backend: Backend, reporter: ProgressReporter) -> None:
        self._backend = backend
        self._reporter = reporter

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._backend, name)
        if name == "wait":
            reporter = self._reporter

            async def wait(job: ProviderJob, timeout_s: float) -> JobStatus:
                status: JobStatus = await value(job, timeout_s)
                await reporter.seen(job, status)
                return status

            return wait
        return value

    async def poll(self, job: ProviderJob) -> JobStatus:
        status = await self._backend.poll(job)
        await self._reporter.seen(job, status)
        return status

    def __repr__(self) -> str:
        return repr(self._backend)


def watch(backend: Backend, reporter: ProgressReporter) -> Backend:
    """``backend`` with its job statuses reported to ``reporter``."""
    return _Watched(backend, reporter)


def watch_all(
    backends: Mapping[str, Backend], callback: ProgressCallback, clock: Clock, started: float | None = None
) -> dict[str, Backend]:
    """Every backend of a request wrapped by one reporter."""
    reporter = ProgressReporter(callback, clock, started)
    return {key: watch(backend, reporter) for key, backend in backends.items()}
