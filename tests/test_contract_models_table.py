"""``genrouter models`` as a person reads it (README "genrouter models": at 80 columns each row
stays on one line; ``--json`` has every field): a wider terminal never shows less."""

from __future__ import annotations

from pathlib import Path

import pytest

from genrouter.cli import main

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ROOT / "examples" / "offline.yaml"


@pytest.fixture(autouse=True)
def _no_config_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from an empty folder: no ./genrouter.yaml, no GENROUTER_CONFIG, no credentials."""
    monkeypatch.chdir(tmp_path)


def header_at(
    columns: int, argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit) as exited:
        main(["models", *argv])
    out, _ = capsys.readouterr()
    assert exited.value.code in (0, None)
    lines = out.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= columns
    return lines[0].split()


@pytest.mark.parametrize("argv", [[], ["-c", str(OFFLINE)]], ids=["no-config", "offline-config"])
def test_a_wider_terminal_never_drops_a_column_a_narrower_one_shows(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every column shown at some width is shown at every larger width (80 to 200 columns)."""
    previous: set[str] = set()
    for columns in range(80, 201, 10):
        shown = set(header_at(columns, argv, capsys, monkeypatch))
        assert previous <= shown, (
            f"{sorted(previous - shown)} shown below {columns} columns but not at {columns}"
        )
        previous = shown


def test_capabilities_are_shown_from_100_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 100 and 120 columns the shipped listing has its capabilities column."""
    for columns in (100, 120):
        assert "capabilities" in header_at(columns, [], capsys, monkeypatch)


def test_at_80_columns_the_shipped_listing_shows_model_kind_provider_endpoint_price(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's 80-column promise: those five columns, each row on one line."""
    assert header_at(80, [], capsys, monkeypatch) == ["model", "kind", "provider", "endpoint", "price"]


def test_an_unknown_provider_filter_is_one_line_naming_the_providers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``genrouter models --provider nope`` exits 2 with one line listing fal, modal and replicate."""
    with pytest.raises(SystemExit) as exited:
        main(["models", "--provider", "nope"])
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert all(name in err for name in ("fal", "modal", "replicate"))
