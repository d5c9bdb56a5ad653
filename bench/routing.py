"""Tail latency under degraded, failing and saturated providers (BENCHMARKS.md "Tail latency").

Two simulated providers, open-loop arrivals at a fixed rate, N measured requests per
variant after a warm-up. In each scenario the variants run side by side, at the same
time, in one process:

- ``oracle``: the best single healthy provider alone (an even split for ``capacity``);
- ``priority``: static priority with fallback (A first, B on failure);
- ``latency``: the latency strategy;
- ``latency+hedge``: the latency strategy with hedging at the primary's p95.

Prints one JSON line per variant and scenario (median of the repeats, with min–max of
the p99 ratio to the oracle), then a table. Goals (BENCHMARKS.md), for latency+hedge:
degraded p99 ≤ 1.10× oracle with ≤ 5 % extra requests; incident ≤ 1.25× and 100 %
success; heavy tails ≤ 0.5× with ≤ 5 % extra; capacity ≤ 1.25× of the even split.

    python bench/routing.py [--requests 2000] [--rate 100] [--repeats 3] [--scenario degraded]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from genrouter import AsyncRouter, GenerationResult, GenRouterError

A_LATENCY = {"median_s": 0.2, "p99_s": 0.6}
PRICES = {"a": "0.03", "b": "0.02"}

# The two providers together take 16 jobs at once; at 60/s × ~0.22 s mean latency the
# load needs ~13 in flight, so an even split keeps both queues short, and piling onto
# one provider (8 slots for ~13 jobs) makes its queue grow.
RATE_SCALE = {"capacity": 0.6}

GOALS: dict[str, dict[str, float]] = {
    "degraded": {"p99_ratio": 1.10, "extra_pct": 5.0},
    "incident": {"p99_ratio": 1.25, "success_pct": 100.0},
    "heavy_tails": {"p99_ratio": 0.5, "extra_pct": 5.0},
    "capacity": {"p99_ratio": 1.25},
}


def sim(name: str, seed: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "simulated",
        "latency": A_LATENCY,
        "seed": seed,
        "models": {"flux-dev": {"endpoint": f"{name}-flux", "price": {"per_image": PRICES[name]}}},
        **extra,
    }


def scenario_providers(scenario: str, seed: int) -> dict[str, dict[str, Any]]:
    """Provider sections for a scenario (seeded per repeat)."""
    if scenario == "degraded":
        return {"a": sim("a", seed), "b": sim("b", seed + 1, slow_rate=0.10, slow_multiplier=10)}
    if scenario == "incident":
        incident = {"start_s": 5, "end_s": 15, "latency_multiplier": 10, "failure_rate": 0.5}
        return {"a": sim("a", seed), "b": sim("b", seed + 1, incidents=[incident])}
    if scenario == "heavy_tails":
        return {
            "a": sim("a", seed, slow_rate=0.05, slow_multiplier=10),
            "b": sim("b", seed + 1, slow_rate=0.05, slow_multiplier=10),
        }
    if scenario == "capacity":
        return {"a": sim("a", seed, max_concurrency=8), "b": sim("b", seed + 1, max_concurrency=8)}
    raise ValueError(scenario)


# Which provider is "bad" in each scenario: the priority variant puts it first, as a
# static configuration written before the problem started would.
BAD_FIRST = {
    "degraded": ["b", "a"],
    "incident": ["b", "a"],
    "heavy_tails": ["a", "b"],
    "capacity": ["a", "b"],
}


def variant_config(scenario: str, variant: str, seed: int) -> dict[str, Any]:
    providers = scenario_providers(scenario, seed)
    policy: dict[str, Any] = {
        "retry": {"max_attempts": 2, "initial_backoff_s": 0.05, "max_backoff_s": 0.5},
        "fallback": {"enabled": True, "max_providers": 2},
        "timeouts": {"attempt_s": 10, "deadline_s": 20},
        "circuit_breaker": {"failure_threshold": 5, "cooldown_s": 2, "minimum_requests": 20},
    }
    if variant == "oracle":
        if scenario == "capacity":
            policy.update(strategy="weighted", weights={"a": 1, "b": 1})
        else:
            providers = {"a": providers["a"]}  # A is healthy (or no worse) in every scenario
            policy.update(strategy="priority")
    elif variant == "priority":
        policy.update(strategy="priority", order=BAD_FIRST[scenario])
    elif variant == "latency":
        policy.update(strategy="latency")
    elif variant == "latency+hedge":
        policy.update(strategy="latency", hedge={"enabled": True, "delay": "p95", "max_extra_fraction": 0.05})
    return {"version": 1, "providers": providers, "routing": {"default": policy}}


VARIANTS = ("oracle", "priority", "latency", "latency+hedge")


@dataclass
class Run:
    """What one variant measured in one repeat."""

    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    submissions: int = 0
    requests: int = 0
    spend: Decimal = Decimal(0)
    images: int = 0


async def run_variant(config: dict[str, Any], requests: int, warmup: int, rate: float) -> Run:
    run = Run()
    async with AsyncRouter.from_config(config) as router:
        start = time.perf_counter()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            t0 = time.perf_counter()
            try:
                result: GenerationResult = await router.generate("a red fox", model="flux-dev", seed=i)
            except GenRouterError as exc:
                if i >= warmup:
                    run.failures += 1
                    run.requests += 1
                    run.submissions += len(getattr(exc, "attempts", []) or [1])
                return
            if i >= warmup:
                run.requests += 1
                run.latencies.append(time.perf_counter() - t0)
                run.submissions += len(result.attempts)
                run.images += len(result.outputs)
                if result.cost.amount_usd is not None:
                    run.spend += result.cost.amount_usd

        await asyncio.gather(*(one(i) for i in range(warmup + requests)))
    return run


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarise(run: Run) -> dict[str, float]:
    return {
        "p50_ms": quantile(run.latencies, 0.50) * 1000,
        "p95_ms": quantile(run.latencies, 0.95) * 1000,
        "p99_ms": quantile(run.latencies, 0.99) * 1000,
        "success_pct": 100.0 * (run.requests - run.failures) / max(run.requests, 1),
        "extra_pct": 100.0 * (run.submissions - run.requests) / max(run.requests, 1),
        "usd_per_image": float(run.spend / run.images) if run.images else float("nan"),
    }


async def run_scenario(scenario: str, requests: int, rate: float, seed: int) -> dict[str, dict[str, float]]:
    warmup = max(requests // 10, 20)
    rate = rate * RATE_SCALE.get(scenario, 1.0)
    runs = await asyncio.gather(
        *(run_variant(variant_config(scenario, v, seed), requests, warmup, rate) for v in VARIANTS)
    )
    return {v: summarise(r) for v, r in zip(VARIANTS, runs, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="arrivals per second")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenario", action="append", choices=list(GOALS))
    args = parser.parse_args()

    table: list[tuple[str, str, dict[str, Any]]] = []
    for scenario in args.scenario or list(GOALS):
        repeats = [
            asyncio.run(run_scenario(scenario, args.requests, args.rate, 100 * r))
            for r in range(args.repeats)
        ]
        for variant in VARIANTS:
            rows = [rep[variant] for rep in repeats]
            ratios = [rep[variant]["p99_ms"] / rep["oracle"]["p99_ms"] for rep in repeats]
            row: dict[str, Any] = {
                "scenario": scenario,
                "variant": variant,
                "requests": args.requests,
                "repeats": args.repeats,
                **{k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]},
                "p99_ratio_median": round(statistics.median(ratios), 3),
                "p99_ratio_min": round(min(ratios), 3),
                "p99_ratio_max": round(max(ratios), 3),
            }
            if variant == "latency+hedge":
                goal = GOALS[scenario]
                row["goal"] = goal
                row["meets_goal_every_repeat"] = all(ratio <= goal["p99_ratio"] for ratio in ratios) and all(
                    (("extra_pct" not in goal) or r["extra_pct"] <= goal["extra_pct"])
                    and (("success_pct" not in goal) or r["success_pct"] >= goal["success_pct"])
                    for r in rows
                )
            print(json.dumps(row), flush=True)
            table.append((scenario, variant, row))

    print()
    header = (
        f"{'scenario':<12} {'variant':<14} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'p99/oracle (min–max)':>22} {'ok %':>7} {'extra %':>8} {'$/img':>7}"
    )
    print(header)
    for scenario, variant, row in table:
        ratio = f"{row['p99_ratio_median']:.2f} ({row['p99_ratio_min']:.2f}–{row['p99_ratio_max']:.2f})"
        mark = ""
        if "meets_goal_every_repeat" in row:
            mark = "  goal met" if row["meets_goal_every_repeat"] else "  GOAL MISSED"
        print(
            f"{scenario:<12} {variant:<14} {row['p50_ms']:>6.0f}ms {row['p95_ms']:>6.0f}ms "
            f"{row['p99_ms']:>6.0f}ms {ratio:>22} {row['success_pct']:>7.1f} "
            f"{row['extra_pct']:>8.1f} {row['usd_per_image']:>7.3f}{mark}"
        )


if __name__ == "__main__":
    main()
