"""The README's self-contained Python snippets run as written, from the root of a checkout
with ``GENROUTER_CONFIG=examples/offline.yaml`` (the quickstart, the async example, the
progress callback and the testing doubles)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import genrouter

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def block(starting: str) -> str:
    """The README python block whose code contains ``starting``."""
    (found,) = [b for b in BLOCKS if starting in b]
    return found


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder that looks like the checkout's root, with the offline config discovered."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENROUTER_CONFIG", str(ROOT / "examples" / "offline.yaml"))
    yield tmp_path
    if genrouter._default_sync is not None:
        genrouter._default_sync.close()
        genrouter._default_sync = None


def test_the_python_quickstart_saves_fox_png(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The quickstart writes fox.png (a 1024×1024 PNG) and prints the provider."""
    exec(block('result.outputs[0].save("fox.png")'), {})
    data = (checkout / "fox.png").read_bytes()
    assert data.startswith(b"\x89PNG")
    assert int.from_bytes(data[16:20], "big") == 1024
    assert capsys.readouterr().out.split()[0].startswith("sim-")


def test_the_async_example_runs_and_resumes_from_a_saved_handle(checkout: Path) -> None:
    """The async example (generate, explain, submit, a handle saved as JSON, result) runs to its end."""
    exec(block("asyncio.run(main())"), {"__name__": "readme"})


def test_the_progress_example_prints_states(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The ``on_progress`` example prints at least one provider and state line."""
    exec(block("on_progress=show"), {})
    assert "succeeded" in capsys.readouterr().out


def test_the_testing_doubles_example_builds_a_router() -> None:
    """The ``genrouter.testing`` example builds a router over a flaky FakeBackend that then succeeds."""
    scope: dict[str, object] = {}
    exec(block("FakeBackend(name="), scope)
    router = scope["router"]
    assert isinstance(router, genrouter.AsyncRouter)
