"""GPU serving benchmark: deploy/modal/service.py against the bare diffusers pipeline, side by side.

Run on a GPU machine: ``python bench/gpu_serving.py`` (about 7 minutes on one H100 with
the defaults; ``--quick`` about half). ``--tiny`` smoke-runs every variant on the CPU in
seconds with tiny random models (its numbers mean nothing).

Models are random-weight pipelines at the real architectures' sizes
(``deploy/modal/random_models.py``: the SDXL UNet's 2.57 B parameters and the FLUX.1
transformer's 11.9 B, the configs of ``shared/reference/diffusion_anchor.py``), bfloat16
with SDPA, 1024x1024, SDXL 30 steps with CFG 5.0, FLUX 28 steps. Images are noise; FLOPs
and memory traffic are real. Text encoders keep their widths with 2 layers each (under
1 % of a generation).

Variants, each measured ``--repeats`` times (median, min–max; warm-up excluded):

- ``bare b1`` / ``bare bN``: ``pipe(...)`` called directly, batch 1 and batch N.
- ``service b1``: requests through the deployed class's production path with batching
  off, two clients in flight so encoding overlaps the next generation: the serving
  overhead is ``1 - service b1 / bare b1``.
- ``service b1 latency``: one client at a time (encoding on the critical path).
- ``service dynamic``: ``--clients`` concurrent clients, dynamic batching up to N within
  ``--wait-ms``; reports images/s and the mean batch formed.

The production path (``--path concurrent``, the default) is what ``app.py``'s
``Diffusion.generate`` does under ``@modal.concurrent``: each request is pickled and
unpickled (as Modal sends it), awaited as its own coroutine through
``DiffusionService.agenerate`` (the in-process batcher groups concurrent ones), and its
result pickled back. ``--path generate_many`` instead hands each group of ``--clients``
pickled requests to ``generate_many`` at once (a ``@modal.batched``-style call).

Each runs eager, then with ``torch.compile`` of the denoiser in the deployment's own mode
(``ServiceConfig.compile_mode``, ``max-autotune-no-cudagraphs``; ``--compile-mode`` picks
another; ``--no-compile`` skips; FLUX compiles only with ``--flux-compile``). Prints one
JSON line per variant and a table; ``--out`` also writes them to a file.

Goals (shared/BENCHMARKS.md, one H100): SDXL ≥ 1.0 img/s with compile + batching;
overhead ≤ 3 %; FLUX within 5 % of the eager anchor (0.196 img/s, transformer only:
this measures the whole pipeline, so expect the VAE decode and text encoders on top).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genrouter.testing._modal import SERVICE_PATH, load_service_module  # noqa: E402

ANCHORS = {
    # shared/reference/h100-diffusion-anchor.jsonl (one H100, random weights, 1024², bf16)
    ("sdxl", "eager", 1): 0.458,
    ("sdxl", "eager", 4): 0.834,
    ("sdxl", "compiled", 1): 0.805,
    ("sdxl", "compiled", 4): 1.001,
    ("flux-dev", "eager", 1): 0.196,
}
GOALS = {"sdxl_compiled_batched_ips": 1.0, "overhead_pct": 3.0, "flux_vs_anchor_pct": 5.0}
FAMILIES = {"sdxl": ("sdxl", 30, 5.0), "flux": ("flux-dev", 28, 3.5)}

_records: list[dict[str, Any]] = []
_out: Path | None = None


def emit(**record: Any) -> None:
    """Print one JSON line (and append it to ``--out``)."""
    _records.append(record)
    line = json.dumps(record)
    print(line, flush=True)
    if _out is not None:
        with _out.open("a") as fh:
            fh.write(line + "\n")


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 4),
        "min": round(min(samples), 4),
        "max": round(max(samples), 4),
    }


class Bench:
    """One model's service and its bare pipeline, measured the same way."""

    def __init__(
        self, svc: Any, service: Any, model: str, args: argparse.Namespace, steps: int, guidance: float
    ):
        self.svc = svc
        self.service = service
        self.model = model
        self.args = args
        self.steps = steps
        self.guidance = guidance
        self.loaded = service.models[model]
        self.size = args.size
        self._seed = 0

    def sync(self) -> None:
        import torch

        if torch.cuda.is_available() and self.service.device.startswith("cuda"):
            torch.cuda.synchronize()

    def request(self) -> dict[str, Any]:
        self._seed += 1
        return {
            "model": self.model,
            "prompt": f"a photograph of a red fox in the snow, number {self._seed}",
            "width": self.size,
            "height": self.size,
            "steps": self.steps,
            "guidance": self.guidance,
            "seed": self._seed,
        }

    def bare(self, batch: int) -> float:
        """Seconds for one direct pipeline call of ``batch`` images."""
        import torch

        requests = [self.request() for _ in range(batch)]
        kwargs: dict[str, Any] = {
            "prompt": [r["prompt"] for r in requests],
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "width": self.size,
            "height": self.size,
            "generator": [torch.Generator().manual_seed(r["seed"]) for r in requests],
            "output_type": "np",
        }
        if self.loaded.spec.max_sequence_length:
            tiny = self.args.tiny
            kwargs["max_sequence_length"] = 32 if tiny else self.loaded.spec.max_sequence_length
        started = time.perf_counter()
        with torch.inference_mode():
            self.loaded.pipe(**kwargs)
        self.sync()
        return time.perf_counter() - started

    def through_service(self, total: int, clients: int) -> tuple[float, list[int]]:
        """Seconds to serve ``total`` requests with ``clients`` in flight; the batches formed."""
        before = len(self.service.batch_sizes)
        requests = [pickle.dumps(self.request()) for _ in range(total)]
        started = time.perf_counter()
        if self.args.path == "generate_many":
            for start in range(0, total, clients):
                chunk = [pickle.loads(r) for r in requests[start : start + clients]]
                _check(pickle.loads(pickle.dumps(self.service.generate_many(chunk))))
        else:
            asyncio.run(self._concurrent(requests, clients))
        elapsed = time.perf_counter() - started
        return elapsed, self.service.batch_sizes[before:]

    async def _concurrent(self, requests: list[bytes], clients: int) -> None:
        """``clients`` callers, each awaiting its requests as app.py's ``generate`` does."""
        queue = list(reversed(requests))

        async def caller() -> None:
            while queue:
                request = pickle.loads(queue.pop())
                result = await self.service.agenerate(request)
                _check([pickle.loads(pickle.dumps(result))])

        await asyncio.gather(*(caller() for _ in range(clients)))

    def measure(self, variant: str, mode: str, batch: int, run: Callable[[], tuple[float, int]]) -> float:
        """Warm up once, then ``repeats`` runs of ``run() -> (seconds, images)``; emits images/s."""
        run()
        rates = []
        for _ in range(self.args.repeats):
            seconds, images = run()
            rates.append(images / seconds)
        stats = summary(rates)
        anchor = ANCHORS.get((self.model, mode, batch)) if variant.startswith("bare") else None
        emit(
            model=self.model,
            variant=variant,
            mode=mode,
            batch=batch,
            images_per_s=stats["median"],
            images_per_s_min=stats["min"],
            images_per_s_max=stats["max"],
            s_per_image=round(1 / stats["median"], 3),
            repeats=self.args.repeats,
            anchor_images_per_s=anchor,
        )
        return stats["median"]

    def suite(self, mode: str, *, dynamic: bool) -> dict[str, float]:
        n = self.args.batch
        out: dict[str, float] = {}
        out["bare_b1"] = self.measure("bare b1", mode, 1, lambda: (self.bare(1), 1))
        if dynamic:
            out["bare_bn"] = self.measure(f"bare b{n}", mode, n, lambda: (self.bare(n), n))
        self.service.set_batching(max_batch_size=1, wait_ms=0)
        k = self.args.requests_b1
        out["service_b1"] = self.measure("service b1", mode, 1, lambda: (self.through_service(k, 2)[0], k))
        out["service_b1_latency"] = self.measure(
            "service b1 latency", mode, 1, lambda: (self.through_service(k, 1)[0], k)
        )
        overhead = 100 * (1 - out["service_b1"] / out["bare_b1"])
        emit(model=self.model, variant="serving overhead", mode=mode, overhead_pct=round(overhead, 2))
        out["overhead_pct"] = overhead
        if dynamic:
            self.service.set_batching(max_batch_size=n, wait_ms=self.args.wait_ms)
            m, clients = self.args.requests, self.args.clients
            batches: list[int] = []

            def loaded_run() -> tuple[float, int]:
                seconds, formed = self.through_service(m, clients)
                batches.extend(formed)
                return seconds, m

            out["service_dynamic"] = self.measure(f"service dynamic (<= {n})", mode, n, loaded_run)
            emit(
                model=self.model,
                variant="dynamic batches formed",
                mode=mode,
                mean_batch=round(statistics.mean(batches), 2) if batches else None,
                clients=clients,
                wait_ms=self.args.wait_ms,
            )
        return out


def _check(results: list[dict[str, Any]]) -> None:
    for result in results:
        if "error" in result:
            raise RuntimeError(f"the service failed a request: {result['error']}")


def run_family(svc: Any, family: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    model, steps, guidance = FAMILIES[family]
    steps = args.steps or (2 if args.tiny else steps)
    config = svc.ServiceConfig(
        models=(model,),
        random_weights="tiny" if args.tiny else "full",
        device="cpu" if args.tiny else "auto",
        cpu_threads=1 if args.tiny else None,
        max_batch_size=args.batch,
        wait_ms=args.wait_ms,
        warmup=False,
        encode_threads=4,
        compile_mode=args.compile_mode or svc.ServiceConfig().compile_mode,
    )
    started = time.perf_counter()
    service = svc.DiffusionService(config).setup()
    emit(model=model, event="loaded", seconds=round(time.perf_counter() - started, 1), device=service.device)
    bench = Bench(svc, service, model, args, steps, guidance)
    results: dict[str, dict[str, float]] = {}
    dynamic = family == "sdxl" or args.flux_dynamic
    try:
        results["eager"] = bench.suite("eager", dynamic=dynamic)
        compile_it = not args.no_compile and (family == "sdxl" or args.flux_compile) and not args.tiny
        if compile_it:
            service.set_batching(max_batch_size=args.batch)
            started = time.perf_counter()
            service.compile_models()
            emit(model=model, event="compiled", seconds=round(time.perf_counter() - started, 1))
            results["compiled"] = bench.suite("compiled", dynamic=dynamic)
    finally:
        service.close()
        del bench, service
        _free_memory()
    return results


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def table(results: dict[str, dict[str, dict[str, float]]], *, tiny: bool) -> None:
    print("\nimages/s (median of repeats)")
    header = f"{'model':<10} {'mode':<9} {'bare b1':>8} {'bare bN':>8} {'svc b1':>8} {'svc lat':>8} "
    print(header + f"{'svc dyn':>8} {'overhead':>9}")
    for family, modes in results.items():
        for mode, r in modes.items():

            def cell(key: str, r: dict[str, float] = r) -> str:
                return f"{r[key]:>8.3f}" if key in r else f"{'-':>8}"

            cells = " ".join(
                cell(k) for k in ("bare_b1", "bare_bn", "service_b1", "service_b1_latency", "service_dynamic")
            )
            print(f"{family:<10} {mode:<9} {cells} {r['overhead_pct']:>8.2f}%")
    sdxl = results.get("sdxl", {})
    best = sdxl.get("compiled", sdxl.get("eager", {})).get("service_dynamic")
    worst_overhead = max((r["overhead_pct"] for m in results.values() for r in m.values()), default=None)
    flux = results.get("flux", {}).get("eager", {}).get("bare_b1")
    goals = {
        "sdxl_compiled_batched_ips": best,
        "sdxl_goal_met": None if best is None else best >= GOALS["sdxl_compiled_batched_ips"],
        "max_overhead_pct": None if worst_overhead is None else round(worst_overhead, 2),
        "overhead_goal_met": None if worst_overhead is None else worst_overhead <= GOALS["overhead_pct"],
        "flux_vs_anchor_pct": None
        if flux is None
        else round(100 * (flux / ANCHORS[("flux-dev", "eager", 1)] - 1), 1),
    }
    print()
    emit(variant="goals", applies=not tiny, **goals)


def main(argv: list[str] | None = None) -> int:
    global _out
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (a smoke run)")
    parser.add_argument("--models", default="sdxl,flux", help="comma-separated: sdxl, flux")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=None, help="width = height (default 1024; tiny 32)")
    parser.add_argument("--steps", type=int, default=None, help="default: SDXL 30, FLUX 28; tiny 2")
    parser.add_argument("--batch", type=int, default=4, help="max batch size N")
    parser.add_argument("--wait-ms", type=float, default=100.0)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for dynamic batching")
    parser.add_argument("--requests", type=int, default=8, help="requests per dynamic-batching repeat")
    parser.add_argument("--requests-b1", type=int, default=3, help="requests per service-b1 repeat")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--flux-compile", action="store_true", help="also compile FLUX (long)")
    parser.add_argument("--flux-dynamic", action="store_true", help="also batch FLUX (adds nothing on H100)")
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode (default: the deployment's, max-autotune-no-cudagraphs; "
        "'default' compiles in ~2 min as the anchor did)",
    )
    parser.add_argument(
        "--path",
        choices=("concurrent", "generate_many"),
        default="concurrent",
        help="the deployed class's path (concurrent agenerate) or a batched generate_many call",
    )
    parser.add_argument("--quick", action="store_true", help="2 repeats, fewer requests")
    parser.add_argument("--out", type=Path, default=None, help="also append JSON lines here")
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = 32 if args.tiny else 1024
    if args.quick:
        args.repeats, args.requests, args.requests_b1 = 2, 8, 2
    _out = args.out
    svc = load_service_module(SERVICE_PATH)
    import torch

    emit(
        event="start",
        torch=torch.__version__,
        device=torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny else "cpu",
        size=args.size,
        batch=args.batch,
        repeats=args.repeats,
        tiny=args.tiny,
        path=args.path,
        compile_mode=args.compile_mode or svc.ServiceConfig().compile_mode,
    )
    results = {}
    for family in [f.strip() for f in args.models.split(",") if f.strip()]:
        results[family] = run_family(svc, family, args)
    table(results, tiny=args.tiny)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
