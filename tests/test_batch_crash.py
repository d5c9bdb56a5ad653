"""SIGKILL ``genrouter batch`` midway against a loopback fake fal, re-run it, and check that every
item has exactly one output and that no item was submitted twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.fal import DEFAULT_KEY, FakeFal, start_server
from fakes.server import LoopbackServer, Request, Response

ITEMS = 12
FAST = 3
"""Items 0-2 finish at once; later items' jobs stay in progress until the first run is killed."""
ACCEPTED_BEFORE_KILL = 6
"""Submits the fake accepts in the first run; the next one is held until the kill."""


def prompt(i: int) -> str:
    return f"prompt number {i}"


class Gate:
    """Sits in front of the fake fal: holds submits past a count, and keeps slow jobs in progress.

    A held submit never reaches the fake (so it is neither counted nor enqueued): it stands
    for a submit the killed process had sent but fal had not accepted yet.
    """

    def __init__(self, fake: FakeFal) -> None:
        self.fake = fake
        self.lock = threading.Lock()
        self.holding = threading.Event()
        self.open = threading.Event()
        self.slow_released = threading.Event()

    def __call__(self, request: Request) -> Response:
        _, sep, tail = request.path.strip("/").partition("/requests/")
        if request.method == "POST" and not sep:
            with self.lock:
                if self.open.is_set() or self.fake.submit_count() < ACCEPTED_BEFORE_KILL:
                    return self.fake(request)
            self.holding.set()
            self.open.wait(timeout=60)
            return Response(drop=True)
        if sep and tail.endswith("/status") and not self.slow_released.is_set():
            job = self.fake.jobs.get(tail.partition("/")[0])
            if job is not None and job.input.get("prompt") not in {prompt(i) for i in range(FAST)}:
                return Response.json({"status": "IN_PROGRESS", "logs": []}, status=202)
        return self.fake(request)


@pytest.fixture
def fal() -> Iterator[tuple[FakeFal, Gate, LoopbackServer]]:
    fake = FakeFal()
    gate = Gate(fake)
    server = start_server()
    server.handler = gate
    try:
        yield fake, gate, server
    finally:
        gate.open.set()
        gate.slow_released.set()
        server.stop()


def manifest(out: Path) -> dict[str, tuple[str, str | None]]:
    """``{item id: (state, provider request id)}``, read by a second connection."""
    path = out / "manifest.sqlite"
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return {
                row[0]: (row[1], row[2])
                for row in db.execute("SELECT id, state, provider_request_id FROM items")
            }
        finally:
            db.close()
    except sqlite3.OperationalError:
        return {}


def batch_command(source: Path, out: Path, config: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "genrouter.cli",
        "batch",
        str(source),
        "-m",
        "flux-dev",
        "--out",
        str(out),
        "-c",
        str(config),
        "--concurrency",
        "4",
        "--no-progress",
    ]


def test_sigkill_midway_then_rerun_gives_one_output_per_item_and_no_double_submission(
    tmp_path: Path, fal: tuple[FakeFal, Gate, LoopbackServer]
) -> None:
    """Kill with some items done, some in flight and one mid-submit; the re-run finishes all, paying once."""
    fake, gate, server = fal
    config = tmp_path / "fal.yaml"
    config.write_text(
        "version: 1\n"
        "providers:\n"
        f"  fal: {{api_key: {DEFAULT_KEY}, base_url: '{server.url}', timeout_s: 10}}\n"
        "routing:\n"
        "  default:\n"
        "    retry: {max_attempts: 1}\n"
        "    timeouts: {attempt_s: 60, deadline_s: 60}\n"
    )
    source = tmp_path / "items.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"item-{i:02d}", "prompt": prompt(i)}) + "\n" for i in range(ITEMS))
    )
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "REPLICATE_", "GENROUTER_"))}

    first = subprocess.Popen(
        batch_command(source, out, config), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            states = manifest(out)
            counts = [s for s, _ in states.values()]
            if gate.holding.is_set() and counts.count("succeeded") == 3 and counts.count("submitted") == 3:
                break
            assert first.poll() is None, first.communicate()[0].decode()
            assert time.monotonic() < deadline, f"batch never reached mid-way: {states}"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        if first.stdout is not None:
            first.stdout.close()
    before = manifest(out)
    in_flight = {k for k, (s, _) in before.items() if s == "submitted"}
    assert len(in_flight) == 3
    assert [s for s, _ in before.values()].count("submitting") == 1
    assert not (out / "results.jsonl").exists()

    gate.slow_released.set()
    gate.open.set()
    second = subprocess.run(
        batch_command(source, out, config), env=env, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stdout + second.stderr

    for i in range(ITEMS):
        outputs = list(out.glob(f"item-{i:02d}.*"))
        assert len(outputs) == 1, (i, outputs)
    assert fake.submissions == {prompt(i): 1 for i in range(ITEMS)}
    after = manifest(out)
    assert all(state == "succeeded" for state, _ in after.values())
    for item in in_flight:
        assert after[item][1] == before[item][1], "an in-flight job was re-attached by its request id"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == ITEMS
    assert {r["status"] for r in rows} == {"succeeded"}
    assert "cut off" in second.stderr
