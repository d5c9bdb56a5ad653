"""``genrouter models [--json] [--kind K] [--provider TYPE] [-c CONFIG]`` (issue 12, item 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import run
from genrouter.catalog import Catalog

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ROOT / "examples" / "offline.yaml"
REQUIRED = {"model", "kind", "provider", "endpoint", "capabilities", "price"}


@pytest.fixture(autouse=True)
def _no_config_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from an empty folder: no ./genrouter.yaml, no GENROUTER_CONFIG, no credentials."""
    monkeypatch.chdir(tmp_path)


def rows(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    code, out, err = run(["models", "--json", *argv], capsys)
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert isinstance(data, list)
    return data


def test_models_without_a_config_lists_the_shipped_catalogs(capsys: pytest.CaptureFixture[str]) -> None:
    """With no config at all, models --json lists every shipped entry of every provider type."""
    listed = rows([], capsys)
    catalog = Catalog.load()
    expected = {
        (ptype, model, each.endpoint)
        for ptype in catalog.shipped_types()
        for model, entry in catalog.entries_for(ptype).items()
        for each in entry.expanded()
    }
    assert {(r["provider"], r["model"], r["endpoint"]) for r in listed} == expected
    assert {r["provider"] for r in listed} >= {"fal", "replicate", "modal"}


def test_every_json_row_has_the_contract_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """Each row has model, kind, provider, endpoint, capabilities and price ({unit: decimal} or null)."""
    for row in rows([], capsys):
        assert row.keys() >= REQUIRED
        assert all(isinstance(c, str) for c in row["capabilities"])
        price = row["price"]
        assert price is None or (len(price) == 1 and all(isinstance(v, str) for v in price.values()))


def test_a_model_without_a_price_has_price_null(capsys: pytest.CaptureFixture[str]) -> None:
    """fal's sdxl publishes no price: its row's price is null."""
    (row,) = [r for r in rows(["--provider", "fal"], capsys) if r["model"] == "sdxl"]
    assert row["price"] is None


def test_the_table_shows_unknown_for_a_missing_price(capsys: pytest.CaptureFixture[str]) -> None:
    """The table prints "unknown" where there is no price."""
    code, out, _ = run(["models", "--provider", "fal"], capsys)
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("sdxl ")]
    assert "unknown" in line


def test_kind_filters_the_rows(capsys: pytest.CaptureFixture[str]) -> None:
    """--kind video lists video models only."""
    listed = rows(["--kind", "video"], capsys)
    assert listed
    assert {r["kind"] for r in listed} == {"video"}


@pytest.mark.parametrize("kind", ["upscale", "remove-background", "workflow"])
def test_every_contract_kind_is_accepted(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--kind takes each kind of the contract."""
    assert all(r["kind"] == kind for r in rows(["--kind", kind], capsys))


def test_an_unknown_kind_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--kind nonsense exits 2 with one line naming the kinds."""
    code, _, err = run(["models", "--kind", "nonsense"], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "image, video, upscale, remove-background, workflow" in err


def test_provider_filters_by_type(capsys: pytest.CaptureFixture[str]) -> None:
    """--provider replicate lists Replicate's shipped entries only."""
    listed = rows(["--provider", "replicate"], capsys)
    assert listed
    assert {r["provider"] for r in listed} == {"replicate"}


def test_with_a_config_provider_is_the_config_key_and_health_is_shown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With -c, rows are the config's deployments under their provider keys, with health."""
    listed = rows(["-c", str(OFFLINE)], capsys)
    assert {r["provider"] for r in listed} == {"sim-fast", "sim-cheap", "sim-gpu"}
    assert all(r["health"].startswith("closed") for r in listed)
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = run(["models", "-c", str(OFFLINE)], capsys)
    assert code == 0
    assert out.splitlines()[0].split()[-1] == "health"


def test_without_a_config_there_is_no_health(capsys: pytest.CaptureFixture[str]) -> None:
    """Health needs a config: the shipped listing has none."""
    assert all("health" not in r for r in rows([], capsys))
    code, out, _ = run(["models"], capsys)
    assert code == 0
    assert "health" not in out.splitlines()[0]


@pytest.mark.parametrize("argv", [[], ["-c", str(OFFLINE)]], ids=["no-config", "offline-config"])
def test_the_table_reads_at_80_columns(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At COLUMNS=80 every row is one line of at most 80 characters: no cell wraps."""
    monkeypatch.setenv("COLUMNS", "80")
    expected = len(rows(argv, capsys))
    code, out, _ = run(["models", *argv], capsys)
    assert code == 0
    lines = out.rstrip("\n").splitlines()
    assert len(lines) == expected + 1  # the header, then one line per row
    assert max(len(line) for line in lines) <= 80
    header = lines[0].split()
    assert header[:3] == ["model", "kind", "provider"]
    assert "price" in header


def test_provider_filters_by_config_key_with_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    """With a config, --provider also takes a provider key."""
    listed = rows(["-c", str(OFFLINE), "--provider", "sim-fast"], capsys)
    assert listed
    assert {r["provider"] for r in listed} == {"sim-fast"}
