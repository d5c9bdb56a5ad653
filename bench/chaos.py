"""Chaos benchmark: generations through AsyncRouter on product defaults, in bad weather.

``python bench/chaos.py [--requests 5000] [--concurrency 64] [--repeats 3] [--seed 0]
[--outage-s 10] [--down-s 15] [--hedge]``

Three providers in order: loopback fakes of fal and Replicate (serving from their own
process) and a simulated third. Two scenarios, each repeated, on the product's defaults
(the scenario sets only the providers, their order, ``retry.max_attempts: 3`` and the
timeouts; retry budget, backoff, breaker and fallback are the defaults):

- ``chaos``: on every request to a fake, 20 % 503, 5 % 429 with ``Retry-After: 0.2``,
  2 % connection resets, 1 % hangs (3 s, past the client's 1 s timeout), half of resets
  and hangs *after* the fake acted (a lost answer); the simulated third fails, throttles
  and hangs at the same rates; fal is down entirely for ``--outage-s`` from 1 s on.
  Goals: >= 99.9 % success, 0 lost, 0 double-billed, 0 Retry-After violations.
- ``total outage``: every provider fails everything for ``--down-s``; requests keep
  coming at the same concurrency. Goals: every request ends in a typed error within
  its deadline; submissions per provider per request begun after the first 5 s <= 1.1.

``--hedge`` adds a chaos variant with hedging after the deployment's p95 (5 % extra at
most): hedging buys tail latency and, inherently, a risk: a loser that finishes before
its cancel lands is billed too. Each repeat prints one JSON line; then a table gives
each metric's median (min–max) and checks the goals (BENCHMARKS.md) on every repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes.chaos import run_chaos, run_outage

GOALS = {
    "success_rate": (">=", 0.999),
    "lost": ("==", 0),
    "double_billed": ("==", 0),
    "retry_after_violations": ("==", 0),
}
SHOWN = (
    "success_rate",
    "p50_s",
    "p95_s",
    "p99_s",
    "lost",
    "double_billed",
    "orphans",
    "lost_submits_found",
    "retry_after_violations",
    "extra_submissions_ratio",
    "faults_injected",
    "wall_s",
)
OUTAGE_GOALS = {
    "typed_error_rate": ("==", 1.0),
    "untyped": ("==", 0),
    "over_deadline": ("==", 0),
    "submissions_per_provider_per_request_after_5s": ("<=", 1.1),
}
OUTAGE_SHOWN = (
    "requests",
    "typed_error_rate",
    "untyped",
    "over_deadline",
    "max_latency_s",
    "requests_after_5s",
    "submissions_per_provider_per_request_after_5s",
    "wall_s",
)


def meets(value: float, goal: tuple[str, float]) -> bool:
    op, target = goal
    if op == ">=":
        return value >= target
    if op == "<=":
        return value <= target
    return value == target


def table(title: str, runs: dict[str, list[dict[str, Any]]], shown: tuple[str, ...], goals: Any) -> None:
    print()
    print(f"{title:46}" + "".join(f"{name:>34}" for name in runs) + "   goal (every repeat)")
    for metric in shown:
        cells = []
        for name in runs:
            values = [run[metric] for run in runs[name]]
            median = statistics.median(values)
            cell = f"{median:g} ({min(values):g}–{max(values):g})"
            goal = goals.get(metric)
            if goal is not None:
                cell += " OK" if all(meets(v, goal) for v in values) else " MISSED"
            cells.append(f"{cell:>34}")
        goal_text = " ".join(str(part) for part in goals[metric]) if metric in goals else ""
        print(f"{metric:46}" + "".join(cells) + f"   {goal_text}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outage-s", type=float, default=10.0, help="fal's outage in the chaos run")
    parser.add_argument("--down-s", type=float, default=15.0, help="length of the total outage run")
    parser.add_argument("--hedge", action="store_true", help="also run chaos with hedging on")
    args = parser.parse_args()
    variants = {"chaos (defaults)": False, **({"chaos +hedge": True} if args.hedge else {})}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    outages: dict[str, list[dict[str, Any]]] = {"total outage (defaults)": []}
    outage = (1.0, 1.0 + args.outage_s)
    for repeat in range(args.repeats):
        seed = args.seed + repeat
        for name, hedge in variants.items():
            report = asyncio.run(run_chaos(args.requests, args.concurrency, seed, outage=outage, hedge=hedge))
            summary = report.summary()
            runs[name].append(summary)
            print(json.dumps({"variant": name, "repeat": repeat, "seed": seed, **summary}), flush=True)
        down = asyncio.run(run_outage(args.down_s, args.concurrency, seed)).summary()
        outages["total outage (defaults)"].append(down)
        print(json.dumps({"variant": "total outage", "repeat": repeat, "seed": seed, **down}), flush=True)
    table("chaos", runs, SHOWN, GOALS)
    table("total outage", outages, OUTAGE_SHOWN, OUTAGE_GOALS)


if __name__ == "__main__":
    main()
