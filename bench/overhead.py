"""Router CPU overhead per routed call (BENCHMARKS.md: "Router overhead").

The call users make, ``router.generate(model=..., prompt=..., width=1024, height=1024)``
(the kwargs path), over an instant backend (a ``FunctionBackend`` whose function returns
one ``Artifact`` at once) with a per-image price, against the same function called
directly; beside it the pre-built request path, ``router.generate(request)``. Each
strategy gets its own router (``balanced`` is the product default). N sequential calls
per repeat, several repeats, warm-up excluded; CPU time. ``--lazy`` adds the
``FunctionBackend`` without ``eager=True`` (its function runs as a task: two loop turns
more per call on Python 3.11). Also times ``import genrouter`` in a fresh interpreter.
Prints one JSON line per variant, then a table (median, min–max).

    python bench/overhead.py [--n 20000] [--repeats 3] [--lazy]

Goal: ≤ 50 µs per call on the kwargs path (LiteLLM's anchor on this machine class: 2,659 µs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from genrouter import Artifact, AsyncRouter, GenerationRequest
from genrouter.testing import FunctionBackend

GOAL_US = 50.0
LITELLM_ANCHOR_US = 2659.0

ARTIFACT = Artifact(url="https://example.invalid/out.png", content_type="image/png", width=1024, height=1024)


async def instant(request: GenerationRequest) -> list[Artifact]:
    return [ARTIFACT]


CONFIG = {
    "version": 1,
    "providers": {
        "a": {
            "type": "custom",
            "models": {"flux-dev": {"endpoint": "a/flux-dev", "price": {"per_image": "0.01"}}},
        },
        "b": {
            "type": "custom",
            "models": {"flux-dev": {"endpoint": "b/flux-dev", "price": {"per_image": "0.02"}}},
        },
    },
    "routing": {"default": {"strategy": "priority", "order": ["a", "b"]}},
}


async def timed(n: int, call: Callable[[], Awaitable[object]]) -> float:
    """CPU seconds (process time) per call over n sequential calls."""
    start = time.process_time()
    for _ in range(n):
        await call()
    return (time.process_time() - start) / n


async def measure(n: int, repeats: int, *, lazy: bool = False) -> dict[str, list[float]]:
    request = GenerationRequest(model="flux-dev", prompt="a red fox in snow", width=1024, height=1024)
    results: dict[str, list[float]] = {}
    eagerness = {"": True, **({"lazy ": False} if lazy else {})}
    for strategy in ("balanced", "priority", "latency"):
        for tag, eager in eagerness.items():
            policy = {**CONFIG["routing"]["default"], "strategy": strategy}
            if strategy != "priority":
                del policy["order"]
            config = {**CONFIG, "routing": {"default": policy}}
            async with AsyncRouter.from_config(
                config,
                # eager: the function is instant and opens no cancel scope (see FunctionBackend).
                backends={
                    "a": FunctionBackend(instant, name="a", eager=eager),
                    "b": FunctionBackend(instant, name="b", eager=eager),
                },
            ) as router:
                variants: dict[str, Callable[[], Awaitable[object]]] = {
                    "direct": lambda: instant(request),
                    f"{tag}router[{strategy}] kwargs": lambda r=router: r.generate(
                        model="flux-dev", prompt="a red fox in snow", width=1024, height=1024
                    ),
                    f"{tag}router[{strategy}] request": lambda r=router: r.generate(request),
                }
                for name, call in variants.items():
                    if name == "direct" and name in results:
                        continue
                    await timed(min(n, 2000), call)  # warm-up
                    results[name] = [await timed(n, call) for _ in range(repeats)]
    return results


def import_time(repeats: int) -> list[float]:
    code = "import time; t = time.perf_counter(); import genrouter; print(time.perf_counter() - t)"
    return [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lazy", action="store_true", help="also a FunctionBackend without eager=True")
    args = parser.parse_args()

    results = asyncio.run(measure(args.n, args.repeats, lazy=args.lazy))
    direct = statistics.median(results["direct"])
    rows = []
    for name, samples in results.items():
        median = statistics.median(samples)
        overhead = median - direct if name != "direct" else 0.0
        row = {
            "variant": name,
            "n": args.n,
            "repeats": args.repeats,
            "us_per_call_median": round(median * 1e6, 2),
            "us_per_call_min": round(min(samples) * 1e6, 2),
            "us_per_call_max": round(max(samples) * 1e6, 2),
            "overhead_us": round(overhead * 1e6, 2),
            "goal_us": GOAL_US,
            "meets_goal": overhead * 1e6 <= GOAL_US,
            "vs_litellm_anchor": round(LITELLM_ANCHOR_US / max(overhead * 1e6, 1e-9), 1)
            if overhead
            else None,
        }
        rows.append(row)
        print(json.dumps(row))
    imports = import_time(args.repeats)
    import_row = {
        "variant": "import genrouter",
        "s_median": round(statistics.median(imports), 3),
        "s_min": round(min(imports), 3),
        "s_max": round(max(imports), 3),
        "goal_s": 0.3,
        "meets_goal": statistics.median(imports) <= 0.3,
    }
    print(json.dumps(import_row))

    print()
    print(f"{'variant':<34} {'µs/call (median, min–max)':>30} {'overhead µs':>12} {'goal':>6}")
    for row in rows:
        spread = (
            f"{row['us_per_call_median']:.1f} ({row['us_per_call_min']:.1f}–{row['us_per_call_max']:.1f})"
        )
        verdict = "ok" if row["meets_goal"] else "MISS"
        print(f"{row['variant']:<34} {spread:>30} {row['overhead_us']:>12.1f} {verdict:>6}")
    print(
        f"{'import genrouter':<34} {import_row['s_median']:>27.3f} s "
        f"{'':>12} {'ok' if import_row['meets_goal'] else 'MISS':>6}"
    )


if __name__ == "__main__":
    main()
