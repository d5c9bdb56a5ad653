"""Chaos benchmark: generations through AsyncRouter against faulty fal and Replicate fakes.

``python bench/chaos.py [--requests 5000] [--concurrency 64] [--seed 0]`` prints one JSON
line, then a table of every metric against its goal. Faults: 20 % 503, 5 % 429 with
``Retry-After: 0.2``, 2 % resets, 1 % hangs, on every request; fal is down for 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes.chaos import run_chaos

GOALS = {
    "success_rate": ">= 0.999",
    "lost": "== 0",
    "double_billed": "== 0",
    "retry_after_violations": "== 0",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = asyncio.run(run_chaos(args.requests, args.concurrency, args.seed))
    summary = report.summary()
    print(json.dumps(summary))
    for name, value in summary.items():
        goal = GOALS.get(name, "")
        ok = ""
        if goal:
            ok = "OK" if eval(f"{value} {goal}") else "MISSED"
        print(f"{name:36} {value!s:>28}  {goal:10} {ok}")


if __name__ == "__main__":
    main()
