"""Spillover under a 10x spike (BENCHMARKS.md "Spillover").

A self-hosted deployment (simulated, autoscaling 1-8 containers, concurrency 1, 2 s
service, 20 s cold start, billed per container-second at Modal's H100 rate) and a hosted
one (simulated, always warm, 3 s, $0.025 an image). Poisson arrivals: a 60 s warm-up
(not measured: the first cold starts), then ``before`` 120 s at 2 req/s, ``spike`` 60 s
at 20 req/s, ``after`` 180 s at 2 req/s (the return to steady state: the extra
containers idle out after Modal's default 60 s window). SLO 10 s (p95). Variants, each
through ``AsyncRouter.generate`` on product defaults apart from what the scenario is about:

- ``self-hosted only`` / ``hosted only``: one provider configured;
- ``cost, no spillover``: both, ``strategy: cost`` and ``latency_slo_s: 10``, with
  ``spillover: {enabled: false}`` (ranking by observed p95);
- ``spillover``: both, ``strategy: cost`` and ``latency_slo_s: 10`` (spillover is on by default);
- ``oracle`` (the reference): knows the spike, pre-warms 8 containers one cold start
  before it, and sends each request to the self-hosted deployment exactly when the
  queue there lets it start in time (SLO minus the service p95), else to the hosted one
  (through the request's ``providers`` allow-list, so the same router paths).

Everything runs on a virtual-time event loop (:mod:`genrouter.engine._virtual_time`): the same
router code, timers and simulated providers, with idle waits skipped, so minutes of
traffic take seconds. Costs: hosted requests at the price the router reports; the
self-hosted deployment at container-seconds (booting and idle ones included, as Modal
bills) × its per-GPU-second price, over each phase's time window. A request that
failed counts as over the SLO and as an infinite latency in the percentiles.

Per phase and variant: p95, p99, share over the SLO, cost, cost / oracle. Goal:
spillover keeps p95 within the SLO in every phase at <= 1.15x the oracle's cost;
self-hosted only breaks the SLO in the spike; hosted only costs >= 1.5x more.

    python bench/spillover.py [--repeats 3] [--seed 0] [--json-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from genrouter import AsyncRouter, GenRouterError
from genrouter.backends.simulated import SimulatedBackend
from genrouter.engine._virtual_time import LoopClock, run_virtual

SLO_S = 10.0
GPU_PRICE = "0.001097"  # per GPU-second: Modal H100 (providers/modal.yaml)
HOSTED_PRICE = "0.025"  # per image
COLD_START_S = 20.0
MAX_CONTAINERS = 8
PHASES: list[tuple[str, float, float]] = [  # name, seconds, requests per second
    ("warm-up", 60.0, 2.0),
    ("before", 120.0, 2.0),
    ("spike", 60.0, 20.0),
    ("after", 180.0, 2.0),
]
MEASURED = ("before", "spike", "after")
VARIANTS = ("self-hosted only", "hosted only", "cost, no spillover", "spillover", "oracle")
GOAL_COST_RATIO = 1.15
GOAL_HOSTED_RATIO = 1.5


def providers(variant: str, seed: int) -> dict[str, Any]:
    gpu = {
        "type": "simulated",
        "latency": {"median_s": 2.0, "p99_s": 2.6},
        "seed": seed,
        "autoscale": {
            "min_containers": 1,
            "max_containers": MAX_CONTAINERS,
            "concurrency_per_container": 1,
            "cold_start_s": COLD_START_S,
        },
        "models": {
            "flux-dev": {
                "endpoint": "flux-dev",
                "gpu_seconds_per_output": 2.0,
                "price": {"per_gpu_second": GPU_PRICE},
            }
        },
    }
    hosted = {
        "type": "simulated",
        "latency": {"median_s": 3.0, "p99_s": 4.0},
        "seed": seed + 1,
        "models": {"flux-dev": {"endpoint": "flux-dev", "price": {"per_image": HOSTED_PRICE}}},
    }
    if variant == "self-hosted only":
        return {"gpu": gpu}
    if variant == "hosted only":
        return {"hosted": hosted}
    return {"gpu": gpu, "hosted": hosted}


def config(variant: str, seed: int) -> dict[str, Any]:
    policy: dict[str, Any] = {"strategy": "cost", "latency_slo_s": SLO_S}
    if variant == "cost, no spillover":
        policy["spillover"] = {"enabled": False}
    return {"version": 1, "providers": providers(variant, seed), "routing": {"default": policy}}


def arrivals(seed: int) -> list[tuple[float, str]]:
    """Poisson arrival times (seconds from the start) with each one's phase."""
    rng = random.Random(f"arrivals:{seed}")
    out: list[tuple[float, str]] = []
    start = 0.0
    for name, length, rate in PHASES:
        t = start + rng.expovariate(rate)
        while t < start + length:
            out.append((t, name))
            t += rng.expovariate(rate)
        start += length
    return out


def phase_windows() -> dict[str, tuple[float, float]]:
    windows: dict[str, tuple[float, float]] = {}
    start = 0.0
    for name, length, _ in PHASES:
        windows[name] = (start, start + length)
        start += length
    return windows


@dataclass
class Outcome:
    phase: str
    latency_s: float  # inf when the request failed
    provider: str | None
    cost: Decimal
    error: str | None = None


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    gpu_container_s: dict[str, float] = field(default_factory=dict)


async def run_variant(variant: str, seed: int, clock: LoopClock) -> Run:
    router = AsyncRouter.from_config(config(variant, seed), clock=clock)
    origin = clock.now()
    gpu = router.backends.get("gpu")
    model = gpu.autoscaler if isinstance(gpu, SimulatedBackend) else None
    service_p95 = (
        gpu.latency_hint(router.deployments("flux-dev")[0]) if isinstance(gpu, SimulatedBackend) else 0.0
    )
    run = Run()
    windows = phase_windows()

    async def one(phase: str, allow: list[str] | None) -> None:
        started = clock.now()
        try:
            result = await router.generate(model="flux-dev", prompt="a red fox in snow", providers=allow)
        except GenRouterError as exc:
            run.outcomes.append(Outcome(phase, math.inf, None, Decimal(0), type(exc).__name__))
            return
        charged = Decimal(0)
        if result.provider == "hosted" and result.cost.amount_usd is not None:
            charged = result.cost.amount_usd
        run.outcomes.append(Outcome(phase, clock.now() - started, result.provider, charged))

    async def prewarm() -> None:
        await clock.sleep(windows["spike"][0] - COLD_START_S)
        assert model is not None
        model.reserve(MAX_CONTAINERS, gpu._now())  # type: ignore[union-attr]

    tasks: list[asyncio.Task[None]] = []
    if variant == "oracle":
        tasks.append(asyncio.create_task(prewarm()))
    for at, phase in arrivals(seed):
        await clock.sleep(origin + at - clock.now())
        allow: list[str] | None = None
        if variant == "oracle":
            assert model is not None
            assert isinstance(gpu, SimulatedBackend)
            wait = model.next_start(gpu._now()) - gpu._now()
            allow = ["gpu"] if wait + (service_p95 or 0.0) <= SLO_S else ["hosted"]
        tasks.append(asyncio.create_task(one(phase, allow)))
    await asyncio.gather(*tasks)
    if model is not None:
        anchor = gpu._now() - (clock.now() - origin)  # type: ignore[union-attr]
        for name in MEASURED:
            start, end = windows[name]
            run.gpu_container_s[name] = model.container_seconds(anchor + start, anchor + end)
    await router.aclose()
    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def phase_figures(run: Run) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for name in MEASURED:
        rows = [o for o in run.outcomes if o.phase == name]
        latencies = [o.latency_s for o in rows]
        hosted_cost = sum((o.cost for o in rows), Decimal(0))
        gpu_cost = Decimal(repr(run.gpu_container_s.get(name, 0.0))) * Decimal(GPU_PRICE)
        figures[name] = {
            "requests": len(rows),
            "p95_s": percentile(latencies, 0.95),
            "p99_s": percentile(latencies, 0.99),
            "over_slo_pct": 100.0 * sum(1 for x in latencies if x > SLO_S) / len(rows),
            "failed": sum(1 for o in rows if o.error),
            "hosted_share_pct": 100.0 * sum(1 for o in rows if o.provider == "hosted") / len(rows),
            "cost_usd": float(hosted_cost + gpu_cost),
        }
    return figures


def repeat(seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for variant in VARIANTS:
        run = run_virtual(lambda clock, v=variant: run_variant(v, seed, clock))  # type: ignore[misc]
        out[variant] = phase_figures(run)
    for variant in VARIANTS:
        for name in MEASURED:
            cell = out[variant][name]
            cell["cost_vs_oracle"] = cell["cost_usd"] / out["oracle"][name]["cost_usd"]
    return out


def _fmt(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.1f}"


def _summary(values: list[float]) -> dict[str, float | None]:
    finite = [v for v in values if not math.isinf(v)]
    med = statistics.median(values)
    return {
        "median": None if math.isinf(med) else med,
        "min": min(finite) if finite else None,
        "max": None if any(math.isinf(v) for v in values) else max(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    repeats = [repeat(args.seed + i) for i in range(args.repeats)]
    metrics = ("p95_s", "p99_s", "over_slo_pct", "cost_usd", "cost_vs_oracle", "hosted_share_pct", "failed")
    table: dict[str, dict[str, dict[str, float]]] = {}
    for variant in VARIANTS:
        table[variant] = {}
        for name in MEASURED:
            values = {m: [r[variant][name][m] for r in repeats] for m in metrics}
            table[variant][name] = {m: statistics.median(v) for m, v in values.items()}
            line = {
                "bench": "spillover",
                "variant": variant,
                "phase": name,
                "requests": statistics.median(r[variant][name]["requests"] for r in repeats),
                **{m: _summary([float(x) for x in v]) for m, v in values.items()},
            }
            print(json.dumps(line))
    if args.json_only:
        return
    print()
    print(f"SLO {SLO_S:g}s (p95). Median of {args.repeats} repeats; cost in USD per phase.")
    header = f"{'variant':<20}" + "".join(f"| {name:^44}" for name in MEASURED)
    print(header)
    print(f"{'':<20}" + "| p95    p99  >SLO%     cost  ×oracle hosted% " * len(MEASURED))
    for variant in VARIANTS:
        row = f"{variant:<20}"
        for name in MEASURED:
            c = table[variant][name]
            row += (
                f"| {_fmt(c['p95_s']):>5} {_fmt(c['p99_s']):>5} {c['over_slo_pct']:5.1f} "
                f"{c['cost_usd']:8.3f} {c['cost_vs_oracle']:6.2f}× {c['hosted_share_pct']:6.1f} "
            )
        print(row)
    print()
    spill = table["spillover"]
    worst_ratio = max(max(r["spillover"][n]["cost_vs_oracle"] for r in repeats) for n in MEASURED)
    for name in MEASURED:
        ok = all(r["spillover"][name]["p95_s"] <= SLO_S for r in repeats)
        ratio = max(r["spillover"][name]["cost_vs_oracle"] for r in repeats)
        print(
            f"goal [{name}]: spillover p95 {_fmt(spill[name]['p95_s'])}s within {SLO_S:g}s in every repeat: "
            f"{'met' if ok else 'MISSED'}; cost {ratio:.2f}× oracle (worst repeat) ≤ {GOAL_COST_RATIO}: "
            f"{'met' if ratio <= GOAL_COST_RATIO else 'MISSED'}"
        )
    broke = all(r["self-hosted only"]["spike"]["p95_s"] > SLO_S for r in repeats)
    alone = _fmt(table["self-hosted only"]["spike"]["p95_s"])
    print(
        f"goal: self-hosted only breaks the SLO in the spike (p95 {alone}s): {'met' if broke else 'MISSED'}"
    )
    totals = [
        sum(r["hosted only"][n]["cost_usd"] for n in MEASURED)
        / sum(r["spillover"][n]["cost_usd"] for n in MEASURED)
        for r in repeats
    ]
    print(
        f"goal: hosted only costs {min(totals):.2f}-{max(totals):.2f}× spillover over the run "
        f"≥ {GOAL_HOSTED_RATIO}: {'met' if min(totals) >= GOAL_HOSTED_RATIO else 'MISSED'}"
    )
    print(f"spillover's worst cost ratio to the oracle in any phase and repeat: {worst_ratio:.2f}×")


if __name__ == "__main__":
    main()
