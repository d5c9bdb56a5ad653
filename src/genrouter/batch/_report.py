"""Batch results: :class:`ItemResult`, :class:`BatchReport`, ``results.jsonl`` and the progress bar.

Re-exported by :mod:`genrouter.batch`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from genrouter.types import JobState

__all__ = [
    "MANIFEST_NAME",
    "RESULTS_NAME",
    "BatchProgress",
    "BatchReport",
    "ItemResult",
    "where_jobs_are",
    "write_atomically",
    "write_results",
]

MANIFEST_NAME = "manifest.sqlite"
RESULTS_NAME = "results.jsonl"


@dataclass(frozen=True, slots=True)
class ItemResult:
    """How one item stands after a run (one line of ``results.jsonl``).

    ``status``: ``succeeded``, ``failed``, ``submitted`` (a job is running; the next
    run re-attaches), ``submitting`` (cut off mid-submit), ``pending`` (not submitted:
    budget reached or stopped) or ``invalid`` (the line cannot run).
    """

    id: str
    line: int
    status: str
    provider: str | None = None
    provider_request_id: str | None = None
    outputs: list[str] = field(default_factory=list)
    cost_usd: Decimal | None = None
    latency_s: float | None = None
    error: str | None = None
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``results.jsonl`` object."""
        return {
            "id": self.id,
            "status": self.status,
            "provider": self.provider,
            "provider_request_id": self.provider_request_id,
            "outputs": self.outputs,
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
            "latency_s": None if self.latency_s is None else round(self.latency_s, 3),
            "error": self.error,
            "line": self.line,
            "attempts": self.attempts,
        }


@dataclass(slots=True)
class BatchReport:
    """What a run did. ``ok`` only when every item (and every line) succeeded."""

    items: list[ItemResult]
    out_dir: Path
    spend_usd: Decimal = Decimal(0)
    """Spend of every succeeded item, all runs."""
    run_spend_usd: Decimal = Decimal(0)
    """Spend of items finished in this run."""
    submissions: int = 0
    """Jobs submitted in this run."""
    reattached: int = 0
    """Items re-attached to jobs submitted by an earlier run."""
    skipped: int = 0
    """Items already finished before this run."""
    stopped: str | None = None
    """``"budget"`` or ``"interrupted"`` when the run stopped submitting early."""
    warnings: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def counts(self) -> Counter[str]:
        """Items by status."""
        return Counter(item.status for item in self.items)

    @property
    def ok(self) -> bool:
        """True when every item succeeded."""
        return all(item.status == "succeeded" for item in self.items)

    @property
    def manifest_path(self) -> Path:
        """``DIR/manifest.sqlite``."""
        return self.out_dir / MANIFEST_NAME

    @property
    def results_path(self) -> Path:
        """``DIR/results.jsonl``."""
        return self.out_dir / RESULTS_NAME


def where_jobs_are(jobs: Mapping[str, tuple[str, JobState]]) -> str:
    """Jobs in flight per provider: ``fal 3 queued, 2 running · replicate 0 queued, 1 running``."""
    counts: dict[str, Counter[str]] = {}
    for provider, state in jobs.values():
        counts.setdefault(provider, Counter())[state.value] += 1
    return " · ".join(
        f"{provider} {counts[provider]['queued']} queued, {counts[provider]['running']} running"
        for provider in sorted(counts)
    )


class BatchProgress:
    """A rich progress bar (done, failed, in flight, spend, ETA, queued vs running per
    provider); a no-op when disabled."""

    def __init__(self, console: Console | None, enabled: bool | None, total: int, done: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = console or Console(stderr=True)
        show = console.is_terminal if enabled is None else enabled
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "done {task.fields[done]} · failed {task.fields[failed]} · "
                "in flight {task.fields[inflight]} · spend ${task.fields[spend]}",
                markup=False,
            ),
            TextColumn("{task.fields[where]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("ETA", markup=False),
            TimeRemainingColumn(),
            console=console,
            disable=not show,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task(
            "batch", total=total, completed=done, done=done, failed=0, inflight=0, spend="0", where=""
        )
        self._where = ""

    def __enter__(self) -> BatchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(
        self,
        *,
        done: int,
        failed: int,
        inflight: int,
        spend: Decimal,
        note: str | None = None,
        where: str = "",
    ) -> None:
        fields: dict[str, Any] = {"done": done, "failed": failed, "inflight": inflight, "spend": f"{spend:f}"}
        if note is not None:
            fields["description"] = note
        self._progress.update(self._task, completed=done + failed, where=where, **fields)
        if where != self._where:
            # A job changed state: show it now rather than at the next tick.
            self._where = where
            if not self._progress.disable:
                self._progress.refresh()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsynced, then renamed over it."""
    temporary = path.with_name(f".{path.name}.part")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_results(report: BatchReport) -> None:
    lines = "".join(json.dumps(item.to_json()) + "\n" for item in report.items)
    write_atomically(report.results_path, lines.encode())
