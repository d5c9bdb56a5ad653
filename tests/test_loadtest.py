"""`genrouter loadtest`: routed requests at a concurrency or a rate, a summary, --json, and a
self-contained HTML report whose charts draw in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli_helpers import run
from genrouter import AsyncRouter, GenerationRequest
from genrouter.engine._virtual_time import LoopClock, run_virtual
from genrouter.loadtest import run_loadtest, write_report
from genrouter.loadtest.command import live_line
from genrouter.testing import FunctionBackend

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ROOT / "examples" / "offline.yaml"
SPILLOVER = ROOT / "examples" / "spillover.yaml"
CONTRACT_KEYS = {
    "requests",
    "succeeded",
    "failed",
    "latency_s",
    "throughput_rps",
    "cost_usd_by_provider",
    "errors_by_type",
}


def instant_config(tmp_path: Path, **extra: Any) -> Path:
    """One instant simulated provider at a per-image price, as a user would write it."""
    config = {
        "version": 1,
        "providers": {"sim-a": {"type": "simulated", "price": {"per_image": "0.01"}, **extra}},
    }
    path = tmp_path / "genrouter.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_json_prints_one_object_with_the_contract_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one JSON object: counts, latency quantiles, throughput, cost and errors."""
    code, out, err = run(
        ["loadtest", "-m", "flux-dev", "-c", str(instant_config(tmp_path)), "--requests", "30", "--json"],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary) >= CONTRACT_KEYS
    assert (summary["requests"], summary["succeeded"], summary["failed"]) == (30, 30, 0)
    assert set(summary["latency_s"]) >= {"p50", "p95", "p99"}
    assert summary["cost_usd_by_provider"] == {"sim-a": "0.30"}
    assert summary["errors_by_type"] == {}
    assert summary["providers"]["sim-a"]["share"] == 1.0
    assert set(summary) >= {"queue_s", "run_s", "cost_usd_total", "providers"}
    assert set(summary["latency_s"]) == {"p50", "p95", "p99", "mean", "max"}


def test_defaults_are_100_requests_at_concurrency_10(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --requests, --concurrency, --rate or --duration: 100 requests, 10 in flight."""
    code, out, err = run(
        ["loadtest", "-m", "flux-dev", "-c", str(instant_config(tmp_path)), "--json"], capsys
    )
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["requests"], summary["mode"]) == (100, {"concurrency": 10})


def test_failures_are_counted_by_type_and_all_failed_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every request failing: errors_by_type names the error, and the exit code is 1."""
    config = instant_config(tmp_path, failure_rate=1.0)
    code, out, _ = run(["loadtest", "-m", "flux-dev", "-c", str(config), "--requests", "5", "--json"], capsys)
    assert code == 1
    summary = json.loads(out)
    assert summary["failed"] == 5
    assert summary["errors_by_type"] == {"AllProvidersFailedError(ProviderUnavailableError)": 5}


def test_concurrency_and_rate_together_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--concurrency and --rate are exclusive: one line on stderr, exit 2."""
    config = str(instant_config(tmp_path))
    code, _, err = run(
        ["loadtest", "-m", "flux-dev", "-c", config, "--concurrency", "2", "--rate", "5"], capsys
    )
    assert code == 2
    assert err.count("\n") == 1
    assert "--concurrency or --rate" in err


def test_the_offline_example_prints_the_summary_and_writes_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On examples/offline.yaml: p50/p95/p99, throughput, queue vs run, per-provider share, and index.html."""
    out_dir = tmp_path / "out"
    argv = ["loadtest", "-m", "flux-dev", "-c", str(OFFLINE), "--requests", "40", "--concurrency", "20"]
    code, out, err = run([*argv, "--report", str(out_dir)], capsys)
    assert code == 0, err
    for needle in ("latency p50 / p95 / p99", "throughput", "queue vs run", "per provider", "share", "cost"):
        assert needle in out
    assert f"report: {out_dir / 'index.html'}" in out
    assert (out_dir / "index.html").is_file()


async def test_closed_loop_keeps_at_most_the_concurrency_in_flight() -> None:
    """--concurrency C: never more than C requests in flight, and exactly N sent."""
    in_flight = peak = 0

    async def generate(request: GenerationRequest) -> list[Any]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        import asyncio

        await asyncio.sleep(0.001)
        in_flight -= 1
        return []

    config = {
        "version": 1,
        "providers": {"fn": {"type": "custom", "models": {"flux-dev": {"endpoint": "x"}}}},
    }
    async with AsyncRouter.from_config(config, backends={"fn": FunctionBackend(generate)}) as router:
        state = await run_loadtest(router, "flux-dev", requests=25, concurrency=4)
    assert state.done == 25
    assert peak == 4


def test_open_loop_starts_requests_at_the_rate_on_the_routers_clock() -> None:
    """--rate R --duration S starts a request every 1/R seconds for S seconds (virtual time)."""

    async def main_(clock: LoopClock) -> list[float]:
        config = {
            "version": 1,
            "providers": {"sim": {"type": "simulated", "latency": {"median_s": 2, "p99_s": 3}}},
        }
        async with AsyncRouter.from_config(config, clock=clock) as router:
            state = await run_loadtest(router, "flux-dev", rate=10, duration_s=5)
        return sorted(s.started_s for s in state.samples)

    starts = run_virtual(main_)
    assert len(starts) == 50
    assert starts[:3] == pytest.approx([0.0, 0.1, 0.2])


def test_the_spillover_example_serves_within_the_slo_and_spills_the_rest() -> None:
    """examples/spillover.yaml at 8 req/s: the self-hosted GPU takes what fits a 4 s SLO, hosted the rest."""

    async def main_(clock: LoopClock) -> dict[str, Any]:
        async with AsyncRouter.from_config(SPILLOVER, clock=clock) as router:
            state = await run_loadtest(router, "flux-dev", rate=8, duration_s=30)
        return state.summary()

    summary = run_virtual(main_)
    assert summary["failed"] == 0
    assert summary["latency_s"]["p95"] <= 4
    assert summary["providers"]["self-hosted"]["requests"] > 90  # ~4 containers × 1 job/s once warm
    assert summary["providers"]["hosted"]["requests"] > 0


def test_the_live_line_shows_done_in_flight_errors_quantiles_and_spend() -> None:
    """The live display reads: done N/total · in flight · errors · p50 · p95 · spend."""

    async def main_(clock: LoopClock) -> str:
        config = {"version": 1, "providers": {"sim": {"type": "simulated", "price": {"per_image": "0.5"}}}}
        async with AsyncRouter.from_config(config, clock=clock) as router:
            state = await run_loadtest(router, "flux-dev", requests=4, concurrency=2)
        return live_line(state).plain

    line = run_virtual(main_)
    assert line.startswith("loadtest flux-dev: done 4/4 · in flight 0 · errors 0 · p50 0.00s · p95 0.00s")
    assert "spend $2.0" in line


# -- the HTML report -------------------------------------------------------------------------------


def report_for_spillover(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    async def main_(clock: LoopClock) -> tuple[Path, dict[str, Any]]:
        async with AsyncRouter.from_config(SPILLOVER, clock=clock) as router:
            state = await run_loadtest(router, "flux-dev", rate=8, duration_s=10)
        return write_report(state, tmp_path / "report"), state.summary()

    return run_virtual(main_)


def test_the_report_is_self_contained(tmp_path: Path) -> None:
    """index.html loads nothing from anywhere: no external scripts, styles, images or fonts."""
    path, _ = report_for_spillover(tmp_path)
    page = path.read_text()
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert "@import" not in page
    assert "url(" not in page


def test_the_reports_charts_draw_in_headless_chromium(tmp_path: Path) -> None:
    """Rendered by headless Chromium, the page's script draws every chart: a histogram bar per
    non-empty bin, a point per request coloured by provider, and a cost bar per provider."""
    if shutil.which("chromium") is None:
        # CI sets GENROUTER_REQUIRE_CHROMIUM so a missing browser fails instead of skipping.
        if os.environ.get("GENROUTER_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed (see .ci/run)")
        pytest.skip("needs Debian's chromium (see .ci/run)")
    path, summary = report_for_spillover(tmp_path)
    dom = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'data-drawn="true"' in dom
    assert dom.count('class="bar"') >= 5
    assert dom.count('class="pt"') == summary["succeeded"]
    providers = set(re.findall(r'class="pt" fill="[^"]+" data-provider="([^"]+)"', dom))
    assert providers == {"self-hosted", "hosted"}
    assert dom.count('class="cost-bar"') == len(summary["cost_usd_by_provider"]) == 2
