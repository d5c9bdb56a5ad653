"""The live line of ``genrouter generate`` and the batch bar's queued/running counts."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

import genrouter.cli
from fakes.fal import Behaviour, FakeFal
from fakes.server import LoopbackServer
from genrouter import AsyncRouter
from genrouter.batch import run_batch
from genrouter.cli import main
from genrouter.testing import FakeClock
from loopback import install_fal

KEY = "fal-key-live-0123456789"


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    return install_fal(fal_server, api_key=KEY, behaviour=Behaviour(queue_polls=2, progress_polls=2))


@pytest.fixture
def config_file(tmp_path: Path, fal_server: LoopbackServer) -> Path:
    path = tmp_path / "genrouter.yaml"
    path.write_text(f"version: 1\nproviders:\n  fal:\n    api_key: {KEY}\n    base_url: {fal_server.url}\n")
    return path


def terminal(monkeypatch: pytest.MonkeyPatch, *, is_terminal: bool = True) -> io.StringIO:
    """Point the live line at a buffer that says it is (or is not) a terminal."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=is_terminal, width=120, color_system=None)
    monkeypatch.setattr(genrouter.cli, "_status_console", lambda: console)
    return buffer


def generate(config_file: Path, tmp_path: Path, *extra: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(["generate", "a fox", "-m", "flux-dev", "-c", str(config_file), "-o", str(tmp_path), *extra])
    code = exited.value.code
    return code if isinstance(code, int) else 0


def test_generate_shows_provider_state_queue_position_and_elapsed_time_on_a_terminal(
    fal: FakeFal, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, stderr shows `fal · queued · queue position N · T s`, then running."""
    screen = terminal(monkeypatch)
    assert generate(config_file, tmp_path) == 0
    shown = screen.getvalue()
    assert "fal · queued · queue position 1 · " in shown
    assert "fal · queued · queue position 0 · " in shown
    assert "fal · running · " in shown
    assert "s" in shown.split("fal · running · ", 1)[1].split()[0]


def test_generate_shows_no_live_line_with_json(
    fal: FakeFal, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json output stays machine-readable: no live line, even on a terminal."""
    screen = terminal(monkeypatch)
    assert generate(config_file, tmp_path, "--json") == 0
    assert screen.getvalue() == ""


def test_generate_shows_no_live_line_off_a_terminal(
    fal: FakeFal, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piped stderr gets no live line."""
    screen = terminal(monkeypatch, is_terminal=False)
    assert generate(config_file, tmp_path) == 0
    assert screen.getvalue() == ""


async def test_the_batch_bar_counts_queued_and_running_jobs_per_provider(
    fal: FakeFal, fal_server: LoopbackServer, tmp_path: Path
) -> None:
    """The batch progress bar shows `fal N queued, M running` while jobs wait."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=220, color_system=None)
    config = {"version": 1, "providers": {"fal": {"api_key": KEY, "base_url": fal_server.url}}}
    items = [{"id": f"fox-{i}", "prompt": "a fox"} for i in range(2)]
    async with AsyncRouter.from_config(config, clock=FakeClock()) as router:
        report = await run_batch(
            router, items, tmp_path / "out", model="flux-dev", concurrency=2, progress=True, console=console
        )
    assert report.ok
    shown = buffer.getvalue()
    assert re.search(r"fal [12] queued, [01] running", shown)
    assert re.search(r"fal [01] queued, [12] running", shown)
