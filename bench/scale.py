"""10,000 queue jobs in flight in one process (BENCHMARKS.md "Scale").

A fake fal queue API (asyncio, HTTP/1.1 keep-alive, its own process so its memory and
CPU are not counted) accepts every submit and completes each job ``--job-s`` seconds
later. One router process submits ``--jobs`` generations at once through the real fal
backend and polls them to completion. Measured in the router process: peak RSS and
event-loop lag (how late a 50 ms ticker wakes), plus throughput and failures.

Each setting runs in a fresh router process, side by side in one run:

* ``python defaults``: CPython's collector as it comes;
* ``gc gen2 every 100``: ``gc.set_threshold(700, 10, 100)``, the setting the README
  recommends for a process holding thousands of jobs. A full collection walks every
  object alive, about 50 per request in flight; CPython starts one each time the
  objects that survived into the oldest generation grow by a quarter, which while ten
  thousand requests arrive is a dozen times, the last ones 0.3-0.5 s each on a slow
  core. Asking for at least 100 young collections between full ones leaves two.

    python bench/scale.py [--jobs 10000] [--job-s 20] [--ramp 2000] [--repeats 1]

Goals: peak RSS ≤ 200 MB, loop lag p99 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import resource
import statistics
import time
from typing import Any

RSS_GOAL_MB = 200.0
LAG_GOAL_MS = 50.0


# -- the fake queue server (runs in a child process) ----------------------------------


def serve(port_queue: Any, job_s: float) -> None:
    asyncio.run(_serve(port_queue, job_s))


async def _serve(port_queue: Any, job_s: float) -> None:
    jobs: dict[str, float] = {}
    counter = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal counter
        host = f"127.0.0.1:{writer.get_extra_info('sockname')[1]}"
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                if length:
                    await reader.readexactly(length)
                path = target.split("?", 1)[0]
                if method == "POST":
                    counter += 1
                    rid = f"req{counter}"
                    jobs[rid] = time.monotonic() + job_s
                    base = f"http://{host}/fal-ai/flux/requests/{rid}"
                    body: dict[str, Any] = {
                        "request_id": rid,
                        "status": "IN_QUEUE",
                        "queue_position": 0,
                        "status_url": base + "/status",
                        "response_url": base,
                        "cancel_url": base + "/cancel",
                    }
                    status = 200
                elif path.endswith("/status"):
                    rid = path.split("/")[-2]
                    done = time.monotonic() >= jobs.get(rid, 0)
                    body = (
                        {"status": "COMPLETED", "logs": None}
                        if done
                        else {"status": "IN_PROGRESS", "logs": None}
                    )
                    status = 200 if done else 202
                elif path.endswith("/cancel"):
                    body, status = {"status": "CANCELLATION_REQUESTED"}, 202
                else:
                    body = {
                        "images": [{"url": f"http://{host}/files/out.png", "width": 64, "height": 64}],
                        "seed": 1,
                    }
                    status = 200
                payload = json.dumps(body).encode()
                writer.write(
                    b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                    % (status, len(payload))
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    port_queue.put(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


# -- the router side -------------------------------------------------------------------


async def run(port: int, jobs: int, ramp: float) -> dict[str, Any]:
    from genrouter import AsyncRouter, GenRouterError

    config = {
        "version": 1,
        "providers": {"fal": {"api_key": "bench-key-not-secret", "base_url": f"http://127.0.0.1:{port}"}},
        "routing": {"default": {"strategy": "priority", "timeouts": {"attempt_s": 600, "deadline_s": 900}}},
    }
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        period = 0.05
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(period)
            lags.append(max(0.0, time.perf_counter() - t0 - period))

    ok = failed = inflight = peak_inflight = 0
    async with AsyncRouter.from_config(config) as router:
        tick = asyncio.get_running_loop().create_task(ticker())
        start = time.perf_counter()

        async def one(i: int) -> None:
            nonlocal ok, failed
            # Arrivals ramp at --ramp per second: a real application does not create ten
            # thousand requests in one loop turn (that alone is ~1 s of planning).
            await asyncio.sleep(i / ramp)
            nonlocal inflight, peak_inflight
            inflight += 1
            peak_inflight = max(peak_inflight, inflight)
            try:
                await router.generate("a fox", model="flux-dev", seed=i)
                ok += 1
            except GenRouterError:
                failed += 1
            finally:
                inflight -= 1

        await asyncio.gather(*(one(i) for i in range(jobs)))
        elapsed = time.perf_counter() - start
        stop.set()
        await tick
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ordered = sorted(lags)
    return {
        "jobs": jobs,
        "succeeded": ok,
        "failed": failed,
        "elapsed_s": round(elapsed, 1),
        "peak_in_flight": peak_inflight,
        "peak_rss_mb": round(peak_mb, 1),
        "lag_p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
        "lag_p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 1),
        "lag_max_ms": round(ordered[-1] * 1000, 1),
    }


SETTINGS: dict[str, tuple[int, int, int] | None] = {
    "python defaults": None,
    "gc gen2 every 100": (700, 10, 100),
}


def measure(port: int, jobs: int, ramp: float, threshold: tuple[int, int, int] | None, out: Any) -> None:
    """One router process: apply the GC setting, run, report the row."""
    if threshold is not None:
        gc.set_threshold(*threshold)
    out.put(asyncio.run(run(port, jobs, ramp)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--job-s", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ramp", type=float, default=2000.0, help="new requests per second")
    parser.add_argument("--setting", choices=sorted(SETTINGS), action="append", help="default: all")
    args = parser.parse_args()

    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: RSS is this run's alone
    results = []
    for _ in range(args.repeats):
        for name in args.setting or list(SETTINGS):
            ports: Any = spawn.Queue()
            server = spawn.Process(target=serve, args=(ports, args.job_s), daemon=True)
            server.start()
            try:
                port = ports.get(timeout=30)
                rows: Any = spawn.Queue()
                setting = SETTINGS[name]
                router = spawn.Process(target=measure, args=(port, args.jobs, args.ramp, setting, rows))
                router.start()
                row = rows.get(timeout=3600)
                router.join()
            finally:
                server.terminate()
                server.join()
            results.append({"setting": name, **row})
    for row in results:
        row["meets_goal"] = row["peak_rss_mb"] <= RSS_GOAL_MB and row["lag_p99_ms"] <= LAG_GOAL_MS
        print(json.dumps(row))
    print()
    print(
        f"{'setting':<18} {'jobs':>6} {'ok':>6} {'failed':>6} {'elapsed':>8} {'peak RSS':>10} "
        f"{'lag p50':>8} {'lag p99':>8} {'lag max':>8}"
    )
    for row in results:
        print(
            f"{row['setting']:<18} {row['jobs']:>6} {row['succeeded']:>6} {row['failed']:>6} "
            f"{row['elapsed_s']:>7}s {row['peak_rss_mb']:>7} MB {row['lag_p50_ms']:>6}ms "
            f"{row['lag_p99_ms']:>6}ms {row['lag_max_ms']:>6}ms"
        )
    print(f"goals: peak RSS ≤ {RSS_GOAL_MB:g} MB, loop lag p99 ≤ {LAG_GOAL_MS:g} ms")
    for name in dict.fromkeys(r["setting"] for r in results):
        rows_here = [r for r in results if r["setting"] == name]
        print(
            f"  {name}: median peak RSS {statistics.median(r['peak_rss_mb'] for r in rows_here)} MB, "
            f"median lag p99 {statistics.median(r['lag_p99_ms'] for r in rows_here)} ms, "
            f"{sum(r['meets_goal'] for r in rows_here)}/{len(rows_here)} runs meet both goals"
        )


if __name__ == "__main__":
    main()
