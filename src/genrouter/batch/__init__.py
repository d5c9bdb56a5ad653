"""Batch generation: JSONL in, files out, and a manifest that survives crashes.

``genrouter batch INPUT.jsonl --model M --out DIR`` (or :func:`run_batch`) generates
every item of a JSONL file. Each line is a JSON object with ``prompt``, an optional
``id`` and any :class:`~genrouter.types.GenerationRequest` field (a ``model`` there
overrides ``--model``). Bad lines are reported with their line numbers and the rest
still run. An item without an ``id`` is ``line-<n>``.

What lands in ``DIR``:

- ``<id>.<ext>`` per item (``<id>-<n>.<ext>``, n from 0, when it has several outputs).
  Ids are sanitised: anything but letters, digits, ``.``, ``_`` and ``-`` becomes
  ``_``, and a changed id gets a short hash of the original, so no id escapes ``DIR``
  and two ids never share a file.
- ``manifest.sqlite``: every item's state, provider request id and
  :class:`~genrouter.types.JobHandle`, committed *before* the batch waits on the job
  (see :mod:`genrouter.batch._manifest`).
- ``results.jsonl``, rewritten at the end of each run: one line per item with
  ``id``, ``status``, ``provider``, ``provider_request_id``, ``outputs`` (file names in
  ``DIR``), ``cost_usd`` (a decimal string, or null when unknown), ``latency_s``
  (submission to result), ``error``, plus ``line`` and ``attempts``.

**Resuming.** Running the same command again skips finished items, re-attaches to
submitted-but-unfinished ones by their stored handle (never resubmitting them), and
retries failed ones. A finished item whose files were deleted is re-attached to
download them again. An item cut off *while* being submitted (the process died
between "submitting" and the provider's answer) is submitted again and listed in the
report's warnings: neither fal nor Replicate can look a job up by its content, so
the first submission may exist too. A line whose id is in the manifest with a
different request is reported, not run, if that id already has a job.

**Within a run** at most ``concurrency`` items are in flight. The router retries and
falls back while submitting; a job that then fails retryably is submitted again, up
to ``max_attempts`` submissions per item per run. ``budget_usd`` caps total spend
(all runs): an item is submitted only while spend so far plus the estimated cost of
the jobs in flight and of this item stay within it (an item with no estimate only
while spend is below it); once reached, nothing new is submitted and the jobs in
flight finish. ``timeout_s`` bounds the wait for one job (default: the routing
policy's ``deadline_s``); a job that outlives it is cancelled and counts as failed.

**Ctrl-C** (with ``handle_signals``, as the CLI does): the first stops submitting
and waits for the jobs in flight; the second stops waiting and leaves them recorded
as submitted for the next run. Every state change is one committed transaction, so
the manifest is consistent whenever the process stops, SIGKILL included.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genrouter.batch._input import BatchItem, LineError, parse_items, read_items, sanitise_id
from genrouter.batch._manifest import ItemRow, ItemState, Manifest
from genrouter.batch._report import (
    MANIFEST_NAME,
    RESULTS_NAME,
    BatchProgress,
    BatchReport,
    ItemResult,
    where_jobs_are,
    write_atomically,
    write_results,
)
from genrouter.errors import (
    ConfigError,
    DeadlineExceededError,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    describe_error,
)
from genrouter.types import GenerationRequest, GenerationResult, JobHandle, JobState, Progress

if TYPE_CHECKING:
    from rich.console import Console

    from genrouter.router import AsyncRouter

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_ATTEMPTS",
    "MANIFEST_NAME",
    "RESULTS_NAME",
    "BatchItem",
    "BatchReport",
    "BatchRunner",
    "ItemResult",
    "LineError",
    "parse_items",
    "read_items",
    "run_batch",
    "sanitise_id",
]

DEFAULT_CONCURRENCY = 4
"""Items in flight at once unless told otherwise."""

DEFAULT_MAX_ATTEMPTS = 3
"""Submissions per item per run when its jobs fail retryably."""


class _Outcome(Enum):
    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"
    LEFT = "left"


# -- the runner ------------------------------------------------------------------------------------


class BatchRunner:
    """Runs items through a router into ``out_dir`` (see the module docstring).

    Build it, then ``await runner.run()``. :meth:`interrupt` is what Ctrl-C does;
    :meth:`stop` stops submitting, :meth:`abort` also stops waiting.
    """

    def __init__(
        self,
        router: AsyncRouter,
        items: Sequence[BatchItem],
        out_dir: str | Path,
        *,
        errors: Sequence[LineError] = (),
        concurrency: int = DEFAULT_CONCURRENCY,
        budget_usd: Decimal | float | str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout_s: float | None = None,
        progress: bool | None = False,
        console: Console | None = None,
        handle_signals: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        self.router = router
        self.items = list(items)
        self.out_dir = Path(out_dir)
        self.errors = list(errors)
        self.concurrency = concurrency
        try:
            self.budget = None if budget_usd is None else Decimal(str(budget_usd))
        except InvalidOperation as exc:
            raise ConfigError(f"budget_usd must be an amount of dollars, got {budget_usd!r}") from exc
        if self.budget is not None and (not self.budget.is_finite() or self.budget < 0):
            raise ConfigError(f"budget_usd must be a non-negative amount, got {self.budget}")
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.show_progress = progress
        self.console = console
        self.handle_signals = handle_signals
        self._manifest: Manifest | None = None
        self._stopped: str | None = None
        self._aborted = False
        self._waits: set[asyncio.Future[GenerationResult]] = set()
        self._status: dict[str, str] = {}
        self._tally: Counter[str] = Counter()
        self._spent = Decimal(0)
        self._run_spent = Decimal(0)
        self._reserved = Decimal(0)
        self._submissions = 0
        self._reattached = 0
        self._skipped = 0
        self._warnings: list[str] = []
        self._progress: BatchProgress | None = None
        self._jobs_at: dict[str, tuple[str, JobState]] = {}
        """Each item in flight: its provider and job state (queued or running), for the bar."""

    # -- control -------------------------------------------------------------------------------

    def stop(self, reason: str = "interrupted") -> None:
        """Submit nothing more; jobs in flight finish."""
        if self._stopped is None or reason == "interrupted":
            self._stopped = reason
        self._refresh(note=f"stopping ({reason}): waiting for jobs in flight")

    def abort(self) -> None:
        """Stop submitting and stop waiting; jobs in flight stay recorded as submitted."""
        self._aborted = True
        self._stopped = "interrupted"
        for wait in list(self._waits):
            wait.cancel()

    def interrupt(self) -> None:
        """Ctrl-C: the first stops submitting, the second stops waiting too."""
        if self._stopped == "interrupted":
            self.abort()
            return
        self.stop("interrupted")
        if self.console is not None and self._tally["inflight"]:
            self.console.print(
                f"stopping: waiting for {self._tally['inflight']} job(s) in flight "
                "(Ctrl-C again to leave them for the next run)",
                markup=False,
            )

    # -- run ---------------------------------------------------------------------------------------

    async def run(self) -> BatchReport:
        """Run (or resume) the batch and write ``results.jsonl``."""
        started = time.monotonic()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the output directory {str(self.out_dir)!r}: {exc}") from exc
        manifest = self._manifest = Manifest(self.out_dir / MANIFEST_NAME)
        loop = asyncio.get_running_loop()
        signals = False
        try:
            work = self._reconcile(manifest)
            self._spent = manifest.spend()
            if self.handle_signals:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signal.SIGINT, self.interrupt)
                    signals = True
            total = len(self.items)
            with BatchProgress(self.console, self.show_progress, total, self._tally["succeeded"]) as progress:
                self._progress = progress
                self._refresh()
                queue = deque(work)
                workers = [asyncio.ensure_future(self._worker(queue)) for _ in range(self.concurrency)]
                try:
                    await asyncio.gather(*workers)
                finally:
                    for worker in workers:
                        worker.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
                self._refresh(note="done")
            report = self._report(manifest, time.monotonic() - started)
            write_results(report)
            return report
        finally:
            if signals:
                loop.remove_signal_handler(signal.SIGINT)
            self._progress = None
            manifest.close()

    def _reconcile(self, manifest: Manifest) -> list[tuple[BatchItem, bool]]:
        """Line items up with the manifest: ``(item, reattach)`` for each item to work on."""
        reattach: list[tuple[BatchItem, bool]] = []
        submit: list[tuple[BatchItem, bool]] = []
        kept: list[BatchItem] = []
        for item in self.items:
            request = item.request.model_dump_json()
            row = manifest.get(item.id)
            if row is None:
                manifest.add(item.id, item.line, request)
                submit.append((item, False))
            elif row.request != request and row.state in (ItemState.SUCCEEDED, ItemState.SUBMITTED):
                self.errors.append(
                    LineError(
                        item.line,
                        f"id {item.id!r} is in the manifest ({row.state}) with a different request; "
                        "give the line a new id or use another --out directory",
                        item.id,
                    )
                )
                continue
            elif row.state is ItemState.SUCCEEDED:
                if all((self.out_dir / name).is_file() for name in row.outputs):
                    self._skipped += 1
                    self._set(item.id, "succeeded")
                else:
                    self._warnings.append(f"{item.id}: output files are missing; fetching them again")
                    reattach.append((item, True))
            elif row.state is ItemState.SUBMITTED:
                reattach.append((item, True))
            else:
                if row.state is ItemState.SUBMITTING:
                    self._warnings.append(
                        f"{item.id}: a crash cut off its submission; submitted again "
                        f"(the provider may also hold the first job)"
                    )
                if row.request != request or row.state is ItemState.SUBMITTING:
                    manifest.reset(item.id, item.line, request)
                submit.append((item, False))
            kept.append(item)
        self.items = kept
        return reattach + submit

    async def _worker(self, queue: deque[tuple[BatchItem, bool]]) -> None:
        while queue and self._stopped is None:
            item, reattach = queue.popleft()
            if reattach:
                await self._reattach(item)
            else:
                await self._submit_item(item)

    def _set(self, item_id: str, status: str) -> None:
        old = self._status.get(item_id)
        if old is not None:
            self._tally[old] -= 1
        self._status[item_id] = status
        self._tally[status] += 1

    def _refresh(self, note: str | None = None) -> None:
        if self._progress is not None:
            self._progress.update(
                done=self._tally["succeeded"],
                failed=self._tally["failed"],
                inflight=self._tally["inflight"],
                spend=self._spent,
                note=note,
                where=where_jobs_are(self._jobs_at),
            )

    # -- one item ----------------------------------------------------------------------------------

    async def _reattach(self, item: BatchItem) -> None:
        manifest = self._require_manifest()
        row = manifest.get(item.id)
        handle = row.job_handle() if row is not None else None
        if row is None or handle is None:
            return
        self._reattached += 1
        estimate = self._estimate(item.request)
        self._reserved += estimate or 0
        self._set(item.id, "inflight")
        self._refresh()
        try:
            outcome = await self._collect(item, handle, row.submitted_at or time.time())
        finally:
            self._reserved -= estimate or 0
            self._refresh()
        if outcome is _Outcome.RETRY:
            await self._submit_item(item)

    async def _submit_item(self, item: BatchItem) -> None:
        manifest = self._require_manifest()
        for _ in range(self.max_attempts):
            if self._stopped is not None:
                return
            estimate = self._estimate(item.request)
            if not self._within_budget(estimate):
                self.stop("budget")
                return
            self._reserved += estimate or 0
            self._set(item.id, "inflight")
            self._refresh()
            try:
                attempt = manifest.mark_submitting(item.id)
                try:
                    handle = await self.router.submit(item.request)
                except GenRouterError as exc:
                    manifest.mark_failed(item.id, describe_error(exc))
                    self._set(item.id, "failed")
                    return
                manifest.mark_submitted(item.id, attempt, handle)
                self._submissions += 1
                outcome = await self._collect(item, handle, time.time())
            finally:
                self._reserved -= estimate or 0
                self._refresh()
            if outcome is not _Outcome.RETRY:
                return

    async def _collect(self, item: BatchItem, handle: JobHandle, submitted_at: float) -> _Outcome:
        """Wait for the job, save its outputs, and record how it ended."""
        manifest = self._require_manifest()
        interrupted = "interrupted while waiting; the next run re-attaches to the job"
        if self._aborted:
            manifest.note(item.id, interrupted)
            self._set(item.id, "submitted")
            return _Outcome.LEFT
        on_progress = self._watch(item.id, handle.provider)
        wait = asyncio.ensure_future(
            self.router.result(handle, timeout=self.timeout_s, on_progress=on_progress)
        )
        self._waits.add(wait)
        try:
            result = await wait
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._aborted or (current is not None and current.cancelling()):
                raise
            manifest.note(item.id, interrupted)
            self._set(item.id, "submitted")
            return _Outcome.LEFT
        except DeadlineExceededError as exc:
            with contextlib.suppress(GenRouterError):
                await self.router.cancel(handle)
            manifest.mark_failed(item.id, f"{describe_error(exc)}; the job was cancelled")
            self._set(item.id, "failed")
            return _Outcome.RETRY
        except GenRouterError as exc:
            if await self._job_failed(handle, exc):
                manifest.mark_failed(item.id, describe_error(exc), time.time() - submitted_at)
                self._set(item.id, "failed")
                return _Outcome.RETRY if exc.retryable else _Outcome.FAILED
            manifest.note(item.id, f"{describe_error(exc)}; the next run re-attaches to the job")
            self._set(item.id, "submitted")
            return _Outcome.LEFT
        finally:
            self._waits.discard(wait)
            self._jobs_at.pop(item.id, None)
        if not result.outputs:
            manifest.mark_failed(item.id, f"{result.provider} returned no outputs (a safety filter?)")
            self._set(item.id, "failed")
            return _Outcome.FAILED
        try:
            outputs = await self._save(item, result)
        except (GenRouterError, OSError) as exc:
            manifest.note(
                item.id, f"saving outputs failed: {describe_error(exc)}; the next run fetches again"
            )
            self._set(item.id, "submitted")
            return _Outcome.LEFT
        cost = result.cost.amount_usd
        manifest.mark_succeeded(item.id, outputs, cost, time.time() - submitted_at)
        if cost is not None:
            self._spent += cost
            self._run_spent += cost
        self._set(item.id, "succeeded")
        return _Outcome.DONE

    def _watch(self, item_id: str, provider: str) -> Callable[[Progress], None]:
        """Track where an item's job is (queued until its provider says it runs) for the bar."""
        self._jobs_at[item_id] = (provider, JobState.QUEUED)

        def seen(progress: Progress) -> None:
            if progress.state.is_terminal:
                self._jobs_at.pop(item_id, None)
            else:
                self._jobs_at[item_id] = (progress.provider, progress.state)
            self._refresh()

        return seen

    async def _job_failed(self, handle: JobHandle, error: GenRouterError) -> bool:
        """Whether the job itself failed (resubmit) rather than reading it (re-attach later)."""
        if isinstance(error, InvalidRequestError):
            return True
        if isinstance(error, JobFailedError):
            return error.state in (JobState.FAILED, JobState.CANCELLED)
        try:
            status = await self.router.status(handle)
        except GenRouterError:
            return False
        return status.state in (JobState.FAILED, JobState.CANCELLED)

    async def _save(self, item: BatchItem, result: GenerationResult) -> list[str]:
        several = item.request.num_outputs > 1 or len(result.outputs) > 1
        names = []
        for index, artifact in enumerate(result.outputs):
            data = await artifact.aread()
            name = f"{item.id}-{index}.{artifact.extension}" if several else f"{item.id}.{artifact.extension}"
            await asyncio.to_thread(write_atomically, self.out_dir / name, data)
            names.append(name)
        return names

    def _estimate(self, request: GenerationRequest) -> Decimal | None:
        if self.budget is None:
            return None
        try:
            plan = self.router.explain(request)
        except GenRouterError:
            return None
        viable = plan.viable
        return viable[0].estimated_cost_usd if viable else None

    def _within_budget(self, estimate: Decimal | None) -> bool:
        if self.budget is None:
            return True
        committed = self._spent + self._reserved
        if estimate is None:
            return committed < self.budget
        return committed + estimate <= self.budget

    def _require_manifest(self) -> Manifest:
        assert self._manifest is not None, "run() opens the manifest"
        return self._manifest

    # -- report ------------------------------------------------------------------------------------

    def _report(self, manifest: Manifest, wall_s: float) -> BatchReport:
        rows = {row.id: row for row in manifest.rows()}
        results = [self._item_result(item, rows.get(item.id)) for item in self.items]
        results += [
            ItemResult(id=e.id or f"line-{e.line}", line=e.line, status="invalid", error=e.message)
            for e in self.errors
        ]
        results.sort(key=lambda r: r.line)
        return BatchReport(
            items=results,
            out_dir=self.out_dir,
            spend_usd=self._spent,
            run_spend_usd=self._run_spent,
            submissions=self._submissions,
            reattached=self._reattached,
            skipped=self._skipped,
            stopped=self._stopped,
            warnings=list(self._warnings),
            wall_s=wall_s,
        )

    def _item_result(self, item: BatchItem, row: ItemRow | None) -> ItemResult:
        if row is None:  # pragma: no cover - every kept item has a row
            return ItemResult(id=item.id, line=item.line, status="pending")
        error = row.error
        if row.state is ItemState.PENDING and self._stopped == "budget":
            error = f"not submitted: the budget of ${self.budget} was reached"
        elif row.state is ItemState.PENDING and self._stopped == "interrupted":
            error = "not submitted: the run was interrupted"
        return ItemResult(
            id=item.id,
            line=item.line,
            status=row.state.value,
            provider=row.provider,
            provider_request_id=row.provider_request_id,
            outputs=row.outputs if row.state is ItemState.SUCCEEDED else [],
            cost_usd=row.cost_usd if row.state is ItemState.SUCCEEDED else None,
            latency_s=row.latency_s,
            error=None if row.state is ItemState.SUCCEEDED else error,
            attempts=row.attempts,
        )


async def run_batch(
    router: AsyncRouter,
    items: str | Path | Iterable[BatchItem | Mapping[str, Any]],
    out_dir: str | Path,
    *,
    model: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    budget_usd: Decimal | float | str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    timeout_s: float | None = None,
    progress: bool | None = False,
    console: Console | None = None,
    handle_signals: bool = False,
) -> BatchReport:
    """Run (or resume) a batch: ``items`` is a JSONL path, or :class:`BatchItem` s and/or dicts.

    ``model`` is the default for items without one. Outputs, ``manifest.sqlite`` and
    ``results.jsonl`` go to ``out_dir``. ``progress``: True shows a rich progress bar,
    None shows it on a terminal. See the module docstring for resume, budget and
    retry rules. Bad items are reported in the result (status ``invalid``), never raised.
    """

    def kind_of(alias: str) -> str | None:
        served = router.deployments(alias)
        return served[0].kind if served else None

    if isinstance(items, str | Path):
        parsed, errors = read_items(items, model=model, kind_of=kind_of)
    else:
        given = list(items)
        ready = [i for i in given if isinstance(i, BatchItem)]
        raw = [i for i in given if not isinstance(i, BatchItem)]
        parsed, errors = parse_items(raw, model=model, kind_of=kind_of)
        parsed = ready + parsed
    runner = BatchRunner(
        router,
        parsed,
        out_dir,
        errors=errors,
        concurrency=concurrency,
        budget_usd=budget_usd,
        max_attempts=max_attempts,
        timeout_s=timeout_s,
        progress=progress,
        console=console,
        handle_signals=handle_signals,
    )
    return await runner.run()
