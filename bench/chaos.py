"""Chaos benchmark: generations through AsyncRouter against faulty fal and Replicate fakes.

``python bench/chaos.py [--requests 5000] [--concurrency 64] [--repeats 3] [--seed 0]``

Faults on every request to either fake: 20 % 503, 5 % 429 with ``Retry-After: 0.2``,
2 % connection resets, 1 % hangs (3 s, past the client's 1 s timeout), half of resets
and hangs *after* the fake acted (a lost answer); fal is down entirely from 1 s to 3 s.
The fakes serve from their own process. Two variants run side by side, each repeated:

- ``retry+fallback``: the reliability policy (retries, fallback, breaker, one deadline);
- ``+hedge``: the same with hedging after the deployment's p95 (5 % extra at most).

Each repeat prints one JSON line; then a table gives each metric's median (min–max) per
variant and checks the goals (BENCHMARKS.md) on every repeat. Hedging buys tail latency
and, inherently, a risk: a loser that finishes before its cancel lands is billed too.
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

from fakes.chaos import run_chaos

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
VARIANTS = {"retry+fallback": False, "+hedge": True}


def meets(value: float, goal: tuple[str, float]) -> bool:
    op, target = goal
    return value >= target if op == ">=" else value == target


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        for name, hedge in VARIANTS.items():
            seed = args.seed + repeat
            report = asyncio.run(run_chaos(args.requests, args.concurrency, seed, hedge=hedge))
            summary = report.summary()
            runs[name].append(summary)
            print(json.dumps({"variant": name, "repeat": repeat, "seed": seed, **summary}), flush=True)
    print()
    print(f"{'metric':26}" + "".join(f"{name:>34}" for name in VARIANTS) + "   goal (every repeat)")
    for metric in SHOWN:
        cells = []
        for name in VARIANTS:
            values = [run[metric] for run in runs[name]]
            median = statistics.median(values)
            cell = f"{median:g} ({min(values):g}–{max(values):g})"
            goal = GOALS.get(metric)
            if goal is not None:
                cell += " OK" if all(meets(v, goal) for v in values) else " MISSED"
            cells.append(f"{cell:>34}")
        goal_text = " ".join(str(part) for part in GOALS[metric]) if metric in GOALS else ""
        print(f"{metric:26}" + "".join(cells) + f"   {goal_text}")


if __name__ == "__main__":
    main()
