"""The genrouter command line, driven through its entry point."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from cli_helpers import run

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ROOT / "examples" / "offline.yaml"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_generate_on_the_offline_example_writes_pngs_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's first command: PNGs of the requested size, provider, cost, latency, attempts."""
    code, out, err = run(
        [
            "generate",
            "a red fox in snow",
            "-m",
            "flux-dev",
            "-c",
            str(OFFLINE),
            "-o",
            str(tmp_path),
            "--size",
            "256x128",
            "-n",
            "2",
            "--seed",
            "7",
        ],
        capsys,
    )
    assert code == 0, err
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 2
    assert all(png_size(f) == (256, 128) for f in files)
    assert "provider sim-" in out
    assert "cost $" in out
    assert "latency" in out
    assert "attempt(s)" in out


def test_generate_json_prints_the_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the GenerationResult as JSON."""
    code, out, _ = run(
        ["generate", "a fox", "-m", "sdxl", "-c", str(OFFLINE), "-o", str(tmp_path), "--json"], capsys
    )
    assert code == 0
    result = json.loads(out)
    assert result["model"] == "sdxl"
    assert result["provider"].startswith("sim-")
    assert result["attempts"]


def test_unknown_model_is_one_line_and_exit_code_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A generation failure prints one line on stderr and exits 1."""
    code, _, err = run(["generate", "x", "-m", "no-such-model", "-c", str(OFFLINE)], capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert "no-such-model" in err


def test_bad_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed --size is a usage error: one line, exit 2, naming the value."""
    code, _, err = run(["generate", "x", "-m", "flux-dev", "-c", str(OFFLINE), "--size", "big"], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "'big'" in err


def test_missing_config_says_how_to_configure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no config anywhere, the error explains every way to configure, in one line."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["generate", "x", "-m", "flux-dev"], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "GENROUTER_CONFIG" in err
    assert "examples/offline.yaml" in err


def test_genrouter_config_env_is_honoured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GENROUTER_CONFIG stands in for -c."""
    monkeypatch.setenv("GENROUTER_CONFIG", str(OFFLINE))
    code, out, _ = run(["route", "a fox", "-m", "flux-dev"], capsys)
    assert code == 0
    assert "sim-" in out


def test_config_errors_are_joined_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Several config problems print as one line joined with '; ', exit 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nproviders:\n  sim: {type: simulated, failure_rate: 2}\n"
        "routing:\n  default: {stratgy: cost}\n"
    )
    code, _, err = run(["config", "check", str(bad)], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "providers.sim.failure_rate" in err
    assert "routing.default.stratgy" in err
    assert "; " in err


def test_config_check_accepts_the_offline_example(capsys: pytest.CaptureFixture[str]) -> None:
    """config check reports the providers and models of a valid config."""
    code, out, _ = run(["config", "check", str(OFFLINE)], capsys)
    assert code == 0
    assert out.startswith("ok: 3 provider(s)")


def test_config_schema_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    """config schema prints a JSON Schema document."""
    code, out, _ = run(["config", "schema"], capsys)
    assert code == 0
    schema = json.loads(out)
    assert "providers" in schema["properties"]


def test_route_explain_lists_excluded_candidates_with_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    """route --explain --json shows excluded deployments last, each with its reason."""
    code, out, _ = run(
        [
            "route",
            "a fox",
            "-m",
            "flux-dev",
            "-c",
            str(OFFLINE),
            "--size",
            "5000x5000",
            "--explain",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    plan = json.loads(out)
    excluded = [c for c in plan["candidates"] if c["excluded"]]
    assert excluded
    assert all("width 5000" in c["excluded"] for c in excluded)
    assert plan["candidates"][-1]["excluded"]


def test_models_lists_every_deployment(capsys: pytest.CaptureFixture[str]) -> None:
    """models prints a table naming each configured provider."""
    code, out, _ = run(["models", "-c", str(OFFLINE)], capsys)
    assert code == 0
    for provider in ("sim-fast", "sim-cheap", "sim-gpu"):
        assert provider in out


def test_unknown_command_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt command exits 2 with one line suggesting the right one."""
    code, _, err = run(["generat", "x"], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "generate" in err
