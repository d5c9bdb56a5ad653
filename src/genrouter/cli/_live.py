"""The live status line of ``genrouter generate``: provider, state, queue position, elapsed time.

Shown on stderr only when it is a terminal (never with ``--json``), redrawn on each
:class:`~genrouter.types.Progress` and four times a second so that the elapsed time
moves, and erased when the command ends (the summary follows on stdout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

    from genrouter.types import Progress

__all__ = ["LiveLine", "describe"]


def describe(model: str, progress: Progress | None, elapsed_s: float) -> str:
    """``fal · queued · queue position 3 · 12.4s`` (``flux-dev · routing · 0.1s`` before any job)."""
    if progress is None:
        return f"{model} · routing · {elapsed_s:.1f}s"
    parts = [progress.provider, progress.state.value]
    if progress.queue_position is not None:
        parts.append(f"queue position {progress.queue_position}")
    parts.append(f"{elapsed_s:.1f}s")
    return " · ".join(parts)


class LiveLine:
    """A one-line rich Live display fed by ``on_progress`` (a no-op off a terminal)."""

    def __init__(
        self,
        console: Console,
        model: str,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._console = console
        self._model = model
        self._clock = clock
        self._started = clock()
        self._last: Progress | None = None
        self._live: Live | None = None
        self.enabled = enabled and console.is_terminal

    def __rich__(self) -> Text:
        return Text(describe(self._model, self._last, self._clock() - self._started), no_wrap=True)

    def update(self, progress: Progress) -> None:
        """The on_progress callback: show ``progress`` now."""
        self._last = progress
        if self._live is not None:
            self._live.refresh()

    def __enter__(self) -> LiveLine:
        if self.enabled:
            from rich.live import Live

            self._live = Live(
                self,
                console=self._console,
                refresh_per_second=4,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
