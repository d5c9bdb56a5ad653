"""Batch generation in process: parsing, naming, the manifest, resume, retries, budget, stopping."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from genrouter import AsyncRouter, GenerationRequest, GenerationResult, JobState, JobStatus, ProviderJob
from genrouter.batch import BatchRunner, parse_items, read_items, run_batch, sanitise_id
from genrouter.batch._manifest import ItemState, Manifest
from genrouter.cli import main
from genrouter.errors import ConfigError, JobFailedError, ProviderUnavailableError
from genrouter.types import Artifact
from genrouter.util._png import sim_url


class Bench:
    """A test provider. A job's fate is fixed at submit (from ``fates`` by prompt) and kept in its
    data, so a new instance (a restarted process) can re-attach to jobs an old one accepted."""

    def __init__(
        self,
        name: str = "p",
        *,
        hang: bool = False,
        fates: dict[str, list[str]] | None = None,
        delay_s: float = 0.0,
        unreadable: bool = False,
        on_wait: Callable[[ProviderJob], None] | None = None,
    ) -> None:
        self.name = name
        self.hang = hang
        self.fates = {k: list(v) for k, v in (fates or {}).items()}
        self.delay_s = delay_s
        self.unreadable = unreadable
        self.on_wait = on_wait
        self.submitted: Counter[str] = Counter()
        self.running: set[str] = set()
        self.peak = 0
        self._ids = itertools.count(1)
        self._forever = asyncio.Event()

    async def submit(
        self, deployment: Any, request: GenerationRequest, *, webhook_url: str | None = None
    ) -> Any:
        self.submitted[request.prompt] += 1
        queue = self.fates.get(request.prompt)
        fate = queue.pop(0) if queue else "ok"
        rid = f"{self.name}-{request.prompt[:12].replace(' ', '_')}-{next(self._ids)}-{id(self) % 10_000}"
        self.running.add(rid)
        self.peak = max(self.peak, len(self.running))
        data = {"fate": fate, "n": request.num_outputs, "w": request.width or 64, "h": request.height or 64}
        return ProviderJob(
            provider=self.name, endpoint=deployment.endpoint, provider_request_id=rid, data=data
        )

    def _status(self, job: ProviderJob) -> JobStatus:
        if self.hang:
            state = JobState.RUNNING
        else:
            state = JobState.SUCCEEDED if job.data["fate"] == "ok" else JobState.FAILED
        return JobStatus(state=state, provider=self.name, provider_request_id=job.provider_request_id)

    async def poll(self, job: ProviderJob) -> JobStatus:
        return self._status(job)

    async def wait(self, job: ProviderJob, timeout_s: float) -> JobStatus:
        if self.on_wait is not None:
            self.on_wait(job)
        if self.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._forever.wait(), timeout_s)
        elif self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self._status(job)

    async def fetch_result(self, job: ProviderJob) -> GenerationResult:
        rid = job.provider_request_id
        self.running.discard(rid)
        fate = job.data["fate"]
        if fate != "ok":
            raise JobFailedError(
                f"{self.name}: job {rid} failed ({fate})", provider=self.name, retryable=fate == "retryable"
            )
        if self.unreadable:
            raise ProviderUnavailableError(f"{self.name}: result unreadable", provider=self.name)
        width, height = job.data["w"], job.data["h"]
        outputs = [
            Artifact(url=sim_url(self.name, rid, i, width, height, i), content_type="image/png")
            for i in range(job.data["n"])
        ]
        return GenerationResult(
            id="",
            model="flux-dev",
            provider=self.name,
            endpoint=job.endpoint,
            provider_request_id=rid,
            outputs=outputs,
        )

    async def cancel(self, job: ProviderJob) -> None:
        self.running.discard(job.provider_request_id)

    async def aclose(self) -> None:
        return None


def make_router(bench: Bench, price: str = "0.01") -> AsyncRouter:
    config = {
        "version": 1,
        "providers": {
            bench.name: {
                "type": "custom",
                "models": {"flux-dev": {"endpoint": "p/flux-dev", "price": {"per_image": price}}},
            }
        },
        "routing": {
            "default": {"retry": {"max_attempts": 1}, "timeouts": {"attempt_s": 30, "deadline_s": 30}}
        },
    }
    return AsyncRouter.from_config(config, backends={bench.name: bench})


def lines(*items: dict[str, Any]) -> list[dict[str, Any]]:
    return list(items)


def prompts(n: int) -> list[dict[str, Any]]:
    return [{"id": f"item-{i}", "prompt": f"prompt {i}", "width": 32, "height": 32} for i in range(n)]


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def pngs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.png"))


def png_paths(root: Path) -> list[Path]:
    """Every PNG anywhere under ``root``, relative to it."""
    return sorted(p.resolve().relative_to(root.resolve()) for p in root.rglob("*.png"))


def manifest_states(out: Path) -> dict[str, str]:
    db = sqlite3.connect(out / "manifest.sqlite")
    try:
        return dict(db.execute("SELECT id, state FROM items"))
    finally:
        db.close()


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


# -- input -----------------------------------------------------------------------------------------------


def test_bad_lines_are_reported_with_their_line_numbers() -> None:
    """Invalid JSON, non-objects, bad fields, missing prompts and repeated ids are errors by line."""
    text = [
        '{"id": "a", "prompt": "ok"}',
        "not json",
        "",
        "[1, 2]",
        '{"id": "b"}',
        '{"id": "c", "prompt": "x", "width": 5, "height": 5}',
        '{"id": "A", "prompt": "again"}',
        '{"id": true, "prompt": "x"}',
        '{"prompt": "fine too", "model": "sdxl"}',
    ]
    items, errors = parse_items(text, model="flux-dev")
    assert [(i.id, i.line, i.request.model) for i in items] == [("a", 1, "flux-dev"), ("line-9", 9, "sdxl")]
    assert [e.line for e in errors] == [2, 4, 5, 6, 7, 8]
    assert "not JSON" in errors[0].message
    assert "JSON object" in errors[1].message
    assert "prompt" in errors[2].message
    assert "width" in errors[3].message
    assert "line 1" in errors[4].message
    assert str(errors[0]).startswith("line 2: ")


def test_a_line_without_a_model_needs_the_default() -> None:
    """Without --model, a line must name its model."""
    _, errors = parse_items(['{"prompt": "x"}'])
    assert "no model" in errors[0].message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("fox", "fox"),
        ("fox-1.v2_final", "fox-1.v2_final"),
        ("../../etc/passwd", None),
        ("a/b", None),
        (".hidden", None),
        ("CON", None),
        ("", None),
    ],
)
def test_ids_are_sanitised(raw: str, expected: str | None) -> None:
    """Safe ids pass unchanged; others become safe names with a hash of the original."""
    clean = sanitise_id(raw)
    if expected is not None:
        assert clean == expected
        return
    assert clean != raw
    assert "/" not in clean
    assert "\\" not in clean
    assert not clean.startswith((".", "-"))
    assert len(clean) <= 100


def test_distinct_unsafe_ids_stay_distinct() -> None:
    """Two ids that sanitise alike still get different names."""
    assert sanitise_id("a/b") != sanitise_id("a:b")


def test_unreadable_input_is_a_config_error(tmp_path: Path) -> None:
    """A missing input file raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"missing\.jsonl"):
        read_items(tmp_path / "missing.jsonl")


# -- outputs and files ---------------------------------------------------------------------------------


async def test_outputs_are_named_by_item_id(tmp_path: Path) -> None:
    """One output is <id>.<ext>; several are <id>-<n>.<ext>."""
    items = [
        {"id": "fox", "prompt": "a fox", "width": 32, "height": 32},
        {"id": "pot", "prompt": "a pot", "width": 32, "height": 32, "num_outputs": 2},
    ]
    report = await run_batch(make_router(Bench()), items, tmp_path, model="flux-dev")
    assert report.ok
    assert pngs(tmp_path) == ["fox.png", "pot-0.png", "pot-1.png"]
    assert (tmp_path / "fox.png").read_bytes().startswith(b"\x89PNG")


async def test_unsafe_ids_never_write_outside_the_output_directory(tmp_path: Path) -> None:
    """Ids with path separators or dots produce files inside the output directory only."""
    out = tmp_path / "deep" / "er" / "out"
    items = [{"id": raw, "prompt": f"p{i}"} for i, raw in enumerate(["../escape", "/abs/path", "..", "a\\b"])]
    report = await run_batch(make_router(Bench()), items, out, model="flux-dev")
    assert report.ok
    everywhere = png_paths(tmp_path)
    assert len(everywhere) == 4
    assert {path.parent for path in everywhere} == {Path("deep/er/out")}


async def test_results_jsonl_has_one_line_per_item_with_cost_and_latency(tmp_path: Path) -> None:
    """results.jsonl: id, status, provider, provider_request_id, outputs, cost_usd, latency_s, error."""
    items = [*prompts(2), {"id": "bad", "prompt": ""}]
    report = await run_batch(make_router(Bench()), items, tmp_path, model="flux-dev")
    rows = results(tmp_path)
    assert [r["id"] for r in rows] == ["item-0", "item-1", "bad"]
    first = rows[0]
    assert first["status"] == "succeeded"
    assert first["provider"] == "p"
    assert first["provider_request_id"].startswith("p-")
    assert first["outputs"] == ["item-0.png"]
    assert first["cost_usd"] == "0.01"
    assert first["latency_s"] >= 0
    assert first["error"] is None
    assert rows[2]["status"] == "invalid"
    assert "prompt" in rows[2]["error"]
    assert not report.ok
    assert report.spend_usd == Decimal("0.02")


# -- the manifest ------------------------------------------------------------------------------------------


async def test_handle_is_committed_before_the_job_is_waited_on(tmp_path: Path) -> None:
    """When the batch first waits on a job, another connection already sees its handle."""
    seen: dict[str, tuple[str, str, str]] = {}

    def look(job: ProviderJob) -> None:
        db = sqlite3.connect(tmp_path / "manifest.sqlite")
        try:
            row = db.execute(
                "SELECT state, provider_request_id, handle FROM items WHERE provider_request_id = ?",
                (job.provider_request_id,),
            ).fetchone()
        finally:
            db.close()
        seen.setdefault(job.provider_request_id, row)

    await run_batch(make_router(Bench(on_wait=look)), prompts(3), tmp_path, model="flux-dev")
    assert len(seen) == 3
    for rid, (state, stored_rid, handle) in seen.items():
        assert state == "submitted"
        assert stored_rid == rid
        assert json.loads(handle)["job"]["provider_request_id"] == rid


async def test_manifest_uses_write_ahead_logging(tmp_path: Path) -> None:
    """The manifest is a WAL-mode SQLite file with one row per item and one per submission."""
    await run_batch(make_router(Bench()), prompts(2), tmp_path, model="flux-dev")
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM submissions").fetchone()[0] == 2
    finally:
        db.close()


# -- resume -----------------------------------------------------------------------------------------------


async def test_rerun_skips_finished_items(tmp_path: Path) -> None:
    """A second run of a finished batch submits nothing."""
    await run_batch(make_router(Bench()), prompts(3), tmp_path, model="flux-dev")
    bench = Bench()
    report = await run_batch(make_router(bench), prompts(3), tmp_path, model="flux-dev")
    assert report.ok
    assert report.skipped == 3
    assert sum(bench.submitted.values()) == 0


async def test_rerun_reattaches_submitted_items_without_resubmitting(tmp_path: Path) -> None:
    """Jobs left in flight by a stopped run are collected by their stored handles in the next run."""
    hanging = Bench(hang=True)
    runner = BatchRunner(make_router(hanging), parse_items(prompts(3), model="flux-dev")[0], tmp_path)
    task = asyncio.ensure_future(runner.run())
    await until(lambda: len(hanging.running) == 3)
    runner.abort()
    first = await task
    assert [i.status for i in first.items] == ["submitted"] * 3
    before = {i.id: i.provider_request_id for i in first.items}

    finisher = Bench()
    report = await run_batch(make_router(finisher), prompts(3), tmp_path, model="flux-dev")
    assert report.ok
    assert report.reattached == 3
    assert sum(finisher.submitted.values()) == 0
    assert {i.id: i.provider_request_id for i in report.items} == before
    assert pngs(tmp_path) == ["item-0.png", "item-1.png", "item-2.png"]


async def test_failed_items_are_retried_on_the_next_run(tmp_path: Path) -> None:
    """An item that failed is submitted again when the batch is re-run."""
    first = await run_batch(
        make_router(Bench(fates={"prompt 1": ["fatal"]})), prompts(2), tmp_path, model="flux-dev"
    )
    assert [i.status for i in first.items] == ["succeeded", "failed"]
    bench = Bench()
    second = await run_batch(make_router(bench), prompts(2), tmp_path, model="flux-dev")
    assert second.ok
    assert bench.submitted == Counter({"prompt 1": 1})
    assert second.items[1].attempts == 2


async def test_missing_output_files_are_fetched_again_without_resubmitting(tmp_path: Path) -> None:
    """A finished item whose file was deleted is re-attached to download it, not regenerated."""
    await run_batch(make_router(Bench()), prompts(2), tmp_path, model="flux-dev")
    (tmp_path / "item-0.png").unlink()
    bench = Bench()
    report = await run_batch(make_router(bench), prompts(2), tmp_path, model="flux-dev")
    assert report.ok
    assert (tmp_path / "item-0.png").is_file()
    assert sum(bench.submitted.values()) == 0
    assert report.reattached == 1


async def test_item_cut_off_mid_submit_is_submitted_again_with_a_warning(tmp_path: Path) -> None:
    """A row left 'submitting' (a crash during submit) is sent again, and the report says so."""
    item = parse_items(prompts(1), model="flux-dev")[0][0]
    manifest = Manifest(tmp_path / "manifest.sqlite")
    manifest.add(item.id, item.line, item.request.model_dump_json())
    manifest.mark_submitting(item.id)
    manifest.close()
    report = await run_batch(make_router(Bench()), [item], tmp_path)
    assert report.ok
    assert any("cut off" in w for w in report.warnings)


async def test_changed_request_for_a_finished_id_is_reported_not_run(tmp_path: Path) -> None:
    """Re-using a finished item's id for a different request is an error on that line."""
    await run_batch(make_router(Bench()), prompts(1), tmp_path, model="flux-dev")
    bench = Bench()
    changed = [{"id": "item-0", "prompt": "something else"}]
    report = await run_batch(make_router(bench), changed, tmp_path, model="flux-dev")
    assert report.items[0].status == "invalid"
    assert "different request" in (report.items[0].error or "")
    assert sum(bench.submitted.values()) == 0


async def test_unreadable_result_leaves_the_item_submitted_for_the_next_run(tmp_path: Path) -> None:
    """A job that succeeded but whose result could not be read is re-attached later, not resubmitted."""
    first = await run_batch(make_router(Bench(unreadable=True)), prompts(1), tmp_path, model="flux-dev")
    assert first.items[0].status == "submitted"
    bench = Bench()
    second = await run_batch(make_router(bench), prompts(1), tmp_path, model="flux-dev")
    assert second.ok
    assert sum(bench.submitted.values()) == 0


# -- within a run -----------------------------------------------------------------------------------------


async def test_retryable_job_failures_are_resubmitted_up_to_max_attempts(tmp_path: Path) -> None:
    """A job failing retryably is submitted again in the same run, at most max_attempts times."""
    bench = Bench(fates={"prompt 0": ["retryable", "retryable"]})
    report = await run_batch(make_router(bench), prompts(1), tmp_path, model="flux-dev", max_attempts=3)
    assert report.ok
    assert bench.submitted["prompt 0"] == 3

    other = tmp_path / "other"
    bench = Bench(fates={"prompt 0": ["retryable", "retryable"]})
    report = await run_batch(make_router(bench), prompts(1), other, model="flux-dev", max_attempts=2)
    assert report.items[0].status == "failed"
    assert bench.submitted["prompt 0"] == 2


async def test_non_retryable_job_failure_is_not_resubmitted_in_the_run(tmp_path: Path) -> None:
    """A job that failed for good (e.g. a safety filter) is not sent again until the next run."""
    bench = Bench(fates={"prompt 0": ["fatal"]})
    report = await run_batch(make_router(bench), prompts(1), tmp_path, model="flux-dev")
    assert report.items[0].status == "failed"
    assert "fatal" in (report.items[0].error or "")
    assert bench.submitted["prompt 0"] == 1


async def test_concurrency_limits_jobs_in_flight(tmp_path: Path) -> None:
    """No more than ``concurrency`` jobs are in flight at once."""
    bench = Bench(delay_s=0.02)
    report = await run_batch(make_router(bench), prompts(6), tmp_path, model="flux-dev", concurrency=2)
    assert report.ok
    assert bench.peak == 2


async def test_budget_stops_new_submissions_when_reached(tmp_path: Path) -> None:
    """With $0.01 items and a $0.025 budget, two are generated and the rest are not submitted."""
    bench = Bench()
    report = await run_batch(
        make_router(bench), prompts(5), tmp_path, model="flux-dev", concurrency=1, budget_usd="0.025"
    )
    assert sum(bench.submitted.values()) == 2
    assert report.stopped == "budget"
    assert [i.status for i in report.items] == ["succeeded"] * 2 + ["pending"] * 3
    assert "budget" in (report.items[2].error or "")
    assert report.spend_usd == Decimal("0.02")
    assert not report.ok


async def test_budget_counts_spend_of_earlier_runs(tmp_path: Path) -> None:
    """The cap is on the batch's total spend, so a resumed run cannot exceed it either."""
    await run_batch(make_router(Bench()), prompts(2), tmp_path, model="flux-dev")
    bench = Bench()
    report = await run_batch(make_router(bench), prompts(4), tmp_path, model="flux-dev", budget_usd="0.03")
    assert sum(bench.submitted.values()) == 1
    assert report.spend_usd == Decimal("0.03")


async def test_stop_submits_nothing_more_and_lets_jobs_in_flight_finish(tmp_path: Path) -> None:
    """After stop() (first Ctrl-C) the jobs in flight finish and no new one starts."""
    items = parse_items(prompts(6), model="flux-dev")[0]
    runner: BatchRunner

    def stop_on_first_wait(job: ProviderJob) -> None:
        runner.stop()

    bench = Bench(on_wait=stop_on_first_wait, delay_s=0.01)
    runner = BatchRunner(make_router(bench), items, tmp_path, concurrency=2)
    report = await runner.run()
    assert report.stopped == "interrupted"
    statuses = Counter(i.status for i in report.items)
    assert statuses["succeeded"] == sum(bench.submitted.values()) >= 1
    assert statuses["pending"] == 6 - statuses["succeeded"]
    assert set(manifest_states(tmp_path).values()) <= {"succeeded", "pending"}


async def test_abort_leaves_jobs_in_flight_recorded_as_submitted(tmp_path: Path) -> None:
    """After abort() (second Ctrl-C) waiting stops; every job in flight keeps its handle."""
    bench = Bench(hang=True)
    runner = BatchRunner(
        make_router(bench), parse_items(prompts(4), model="flux-dev")[0], tmp_path, concurrency=2
    )
    task = asyncio.ensure_future(runner.run())
    await until(lambda: len(bench.running) == 2)
    runner.interrupt()
    runner.interrupt()
    report = await task
    assert Counter(i.status for i in report.items) == Counter({"submitted": 2, "pending": 2})
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    try:
        handles = db.execute("SELECT handle FROM items WHERE state = ?", (ItemState.SUBMITTED,)).fetchall()
    finally:
        db.close()
    assert len(handles) == 2
    assert all(h[0] for h in handles)


# -- the command ----------------------------------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err


SIM_CONFIG = """
version: 1
providers:
  sim:
    type: simulated
    latency: 0
    price: {per_image: "0.002"}
"""


def test_cli_batch_exits_0_when_every_item_succeeded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``genrouter batch`` writes outputs and results.jsonl, prints the summary, and exits 0."""
    config = tmp_path / "sim.yaml"
    config.write_text(SIM_CONFIG)
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(p) for p in prompts(3)) + "\n")
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["batch", str(source), "-m", "flux-dev", "--out", str(out), "-c", str(config)], capsys
    )
    assert code == 0, err
    assert "batch summary" in stdout
    assert "succeeded" in stdout
    assert len(results(out)) == 3


def test_cli_batch_exits_1_with_a_bad_line_and_still_runs_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad line is reported on stderr with its number; the good lines run; exit code 1."""
    config = tmp_path / "sim.yaml"
    config.write_text(SIM_CONFIG)
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "ok", "prompt": "fine"}\n{oops\n')
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["batch", str(source), "-m", "flux-dev", "--out", str(out), "-c", str(config)], capsys
    )
    assert code == 1
    assert "line 2: not JSON" in err
    assert (out / "ok.png").is_file()


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["--budget-usd", "lots"], id="bad-budget"),
        pytest.param(["--concurrency", "0"], id="bad-concurrency"),
    ],
)
def test_cli_batch_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    """Bad options are usage errors: one line on stderr, exit code 2."""
    config = tmp_path / "sim.yaml"
    config.write_text(SIM_CONFIG)
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "x"}\n')
    code, _, err = run_cli(
        ["batch", str(source), "-m", "flux-dev", "--out", str(tmp_path / "o"), "-c", str(config), *extra],
        capsys,
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1


def test_cli_batch_missing_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An input file that does not exist is a one-line error with exit code 2."""
    config = tmp_path / "sim.yaml"
    config.write_text(SIM_CONFIG)
    code, _, err = run_cli(
        ["batch", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"), "-c", str(config)], capsys
    )
    assert code == 2
    assert "nope.jsonl" in err


def test_budget_that_is_not_an_amount_is_a_config_error(tmp_path: Path) -> None:
    """run_batch's budget must be a non-negative amount of dollars."""
    router = make_router(Bench())
    for bad in ("lots", "-1", "NaN"):
        with pytest.raises(ConfigError, match="budget_usd"):
            BatchRunner(router, [], tmp_path, budget_usd=bad)
