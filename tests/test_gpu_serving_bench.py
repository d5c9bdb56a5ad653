"""bench/gpu_serving.py's smoke mode: every variant runs on the CPU with tiny random models."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_serving.py"
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _bench() -> object:
    spec = importlib.util.spec_from_file_location("genrouter_bench_gpu_serving", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", ["concurrent", "generate_many"])
def test_smoke_mode_measures_the_production_path_against_the_bare_pipeline(tmp_path: Path, path: str) -> None:
    """--tiny runs bare and served variants (pickled requests, dynamic batching) and reports the goals."""
    out = tmp_path / "bench.jsonl"
    bench = _bench()
    argv = ["--tiny", "--models", "sdxl", "--repeats", "1", "--requests", "4", "--clients", "2"]
    assert bench.main([*argv, "--requests-b1", "1", "--path", path, "--out", str(out)]) == 0  # type: ignore[attr-defined]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    variants = {r.get("variant") for r in records}
    assert {"bare b1", "service b1", "serving overhead", "goals"} <= variants
    assert records[0]["path"] == path
    assert records[0]["compile_mode"] == "max-autotune-no-cudagraphs"
    goals = next(r for r in records if r.get("variant") == "goals")
    assert goals["applies"] is False
