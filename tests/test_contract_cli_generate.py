"""``genrouter generate`` as a new user types it (README "The command line", "Passthrough"):
outputs land in the output folder whatever the model name, and errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from genrouter.cli import main

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ROOT / "examples" / "offline.yaml"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err


@pytest.mark.parametrize("model", ["sim-fast:my/checkpoint", "sim-gpu:flux-dev"])
def test_a_passthrough_saves_its_outputs_directly_in_the_output_folder(
    model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``<key>:<endpoint>`` model (``/`` and ``:`` included) saves one file per output inside ``-o``."""
    out_dir = tmp_path / "out"
    code, out, err = run(["generate", "a fox", "-m", model, "-c", str(OFFLINE), "-o", str(out_dir)], capsys)
    assert code == 0, err
    (saved,) = list(out_dir.iterdir())
    assert saved.is_file()
    assert ":" not in saved.name
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert f"saved {saved}" in out


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["a fox", "-m", "flux-dev", "--size", "1024"], 2),
        (["a fox", "-m", "flux-dev", "--size", "5x5"], 2),
        (["a fox", "-m", "nope:fal-ai/flux/dev"], 1),
        (["a fox", "-m", "flux-devv"], 1),
        (["a fox", "-m", "flux-dev", "--image", "missing.png"], 2),
    ],
    ids=["size-shape", "size-range", "passthrough-prefix", "unknown-model", "missing-image"],
)
def test_a_bad_generate_is_one_line_on_stderr_with_the_contract_exit_code(
    argv: list[str], code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage errors exit 2 and routing failures 1, each with exactly one stderr line and nothing on stdout."""
    got, out, err = run(["generate", *argv, "-c", str(OFFLINE), "-o", str(tmp_path / "o")], capsys)
    assert got == code
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("genrouter: error: ")
