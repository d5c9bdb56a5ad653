"""Dynamic batching for the diffusion service: one worker thread runs groups of compatible items.

Also :func:`builtin_error`, which turns any exception into a builtin one, so that
results and errors unpickle where neither torch nor this folder is installed.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

__all__ = ["DynamicBatcher", "Entry", "builtin_error"]


def builtin_error(exc: BaseException) -> Exception:
    """``exc`` as a plain builtin exception, which unpickles where torch and this folder are absent.

    Bad input (any ``ValueError``/``TypeError``) stays ``ValueError``; everything else is a
    ``RuntimeError`` naming the original type. Out-of-memory says what to reduce.
    """
    if type(exc) in (ValueError, RuntimeError):
        return exc  # type: ignore[return-value]
    if isinstance(exc, ValueError | TypeError):
        return ValueError(str(exc))
    name = type(exc).__name__
    if "OutOfMemory" in name:
        return RuntimeError(f"out of GPU memory ({exc}); use a smaller size, batch or fewer outputs")
    return RuntimeError(f"{name}: {exc}")


@dataclasses.dataclass
class Entry:
    """One queued item: ``run`` resolves its ``future``; ``started`` is when its group began."""

    payload: Any
    key: Hashable
    size: int
    future: cf.Future[Any]
    enqueued: float
    started: float = 0.0


@dataclasses.dataclass
class _Group:
    entries: list[Entry]
    first_at: float
    size: int


@dataclasses.dataclass
class _Bundle:
    """Entries queued together; their groups (and all waiting ones) run without waiting."""

    entries: list[Entry]


_STOP = object()


class DynamicBatcher:
    """Groups compatible work items and runs each group on one thread (the GPU thread).

    ``submit(payload, key, size)`` returns a :class:`concurrent.futures.Future`. Items
    with equal ``key`` join one group until it holds ``max_batch_size`` (in ``size``
    units: images) or its first item has waited ``wait_ms``; groups run oldest first.
    A single item larger than ``max_batch_size`` runs alone. ``run(entries)`` must
    resolve every entry's future; if it raises, unresolved futures get the error.
    A future cancelled before its group starts is skipped.
    """

    def __init__(
        self,
        run: Callable[[list[Entry]], None],
        *,
        max_batch_size: int,
        wait_ms: float,
        name: str = "genrouter-gpu",
    ) -> None:
        self._run = run
        self.max_batch_size = max(1, max_batch_size)
        self.wait_s = max(0.0, wait_ms) / 1000
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._started = False
        self.batches: collections.deque[int] = collections.deque(maxlen=10_000)
        """Images per dispatched group, the latest 10,000 in order (for tests and benchmarks)."""

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if not self._started:
            self._started = True
            self._thread.start()

    def submit(self, payload: Any, key: Hashable, size: int = 1) -> cf.Future[Any]:
        """Queue one item; its future resolves when its group has run."""
        future: cf.Future[Any] = cf.Future()
        self._queue.put(Entry(payload, key, max(1, size), future, time.monotonic()))
        return future

    def submit_many(self, items: Sequence[tuple[Any, Hashable, int]]) -> list[cf.Future[Any]]:
        """Queue ``(payload, key, size)`` items together and run their groups at once (no wait).

        The items reach the worker as one message, so they group with each other however
        fast the worker is; Modal's ``@batched`` call uses this (Modal already waited).
        """
        now = time.monotonic()
        entries = [Entry(payload, key, max(1, size), cf.Future(), now) for payload, key, size in items]
        self._queue.put(_Bundle(entries))
        return [entry.future for entry in entries]

    def flush(self) -> None:
        """Run every waiting group now, without waiting out ``wait_ms``."""
        self._queue.put(_Bundle([]))

    def close(self, timeout: float | None = 60.0) -> None:
        """Run what is queued, then stop the worker."""
        if self._started and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _loop(self) -> None:
        groups: dict[Hashable, _Group] = {}
        while True:
            timeout = None
            if groups:
                oldest = min(g.first_at for g in groups.values())
                timeout = max(0.0, oldest + self.wait_s - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            flush = stop = False
            while True:  # drain what is already queued before deciding
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Bundle):
                    flush = True
                    for entry in item.entries:
                        self._add(groups, entry)
                elif item is not None:
                    self._add(groups, item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            now = time.monotonic()
            due = [
                key
                for key, g in groups.items()
                if flush or stop or g.size >= self.max_batch_size or now >= g.first_at + self.wait_s
            ]
            for key in due:
                self._dispatch(groups.pop(key).entries)
            if stop:
                return

    def _add(self, groups: dict[Hashable, _Group], entry: Entry) -> None:
        group = groups.get(entry.key)
        if group is not None and group.size + entry.size > self.max_batch_size:
            self._dispatch(groups.pop(entry.key).entries)
            group = None
        if group is None:
            groups[entry.key] = _Group([entry], entry.enqueued, entry.size)
        else:
            group.entries.append(entry)
            group.size += entry.size

    def _dispatch(self, entries: list[Entry]) -> None:
        live = [e for e in entries if e.future.set_running_or_notify_cancel()]
        if not live:
            return
        now = time.monotonic()
        for entry in live:
            entry.started = now
        self.batches.append(sum(e.size for e in live))
        try:
            self._run(live)
        except BaseException as exc:
            error = builtin_error(exc)
            for entry in live:
                if not entry.future.done():
                    entry.future.set_exception(error)
