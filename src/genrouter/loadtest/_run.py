"""Drive routed requests at a fixed concurrency or arrival rate and record each one.

Every request is a real ``router.generate`` (plan, retries, fallback, the providers'
wire calls), timed on the router's clock, so a load test on the simulated providers
runs the same code as one on fal, Replicate or Modal.

- **Closed loop** (``concurrency=C``, the default 10): C workers, each sending its next
  request when the last one ends.
- **Open loop** (``rate=R``): a request starts every ``1/R`` seconds whatever is in
  flight (how a traffic spike behaves).

The run stops issuing requests after ``requests`` (default 100 unless ``duration_s``
is given) or ``duration_s``, whichever comes first, and waits for those in flight.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from genrouter.errors import AllProvidersFailedError, GenRouterError

if TYPE_CHECKING:
    from genrouter.router import AsyncRouter

__all__ = ["LoadTest", "Sample", "percentile", "run_loadtest"]

DEFAULT_REQUESTS = 100
DEFAULT_CONCURRENCY = 10


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: when it started (seconds after the run began), how it ended."""

    started_s: float
    latency_s: float
    provider: str | None
    error: str | None = None
    cost_usd: Decimal | None = None
    queued_s: float | None = None
    running_s: float | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """True when the request succeeded."""
        return self.error is None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class LoadTest:
    """A load test's samples so far and its live counters."""

    model: str
    concurrency: int | None
    rate: float | None
    samples: list[Sample] = field(default_factory=list)
    in_flight: int = 0
    started: int = 0
    elapsed_s: float = 0.0
    planned: int | None = None

    @property
    def done(self) -> int:
        """Requests finished (succeeded or failed)."""
        return len(self.samples)

    @property
    def errors(self) -> int:
        """Requests that failed."""
        return sum(1 for s in self.samples if not s.ok)

    @property
    def spend_usd(self) -> Decimal:
        """Known cost of the finished requests."""
        return sum((s.cost_usd for s in self.samples if s.cost_usd is not None), Decimal(0))

    def latency(self, q: float) -> float | None:
        """The ``q`` quantile of successful requests' latency so far."""
        return percentile([s.latency_s for s in self.samples if s.ok], q)

    def summary(self) -> dict[str, Any]:
        """The run as one JSON-ready object (the ``--json`` output).

        Keys: ``model``, ``mode``, ``requests``, ``succeeded``, ``failed``, ``duration_s``,
        ``throughput_rps`` (finished requests ÷ duration), ``latency_s`` (``p50``, ``p95``,
        ``p99``, ``mean``, ``max`` of successful requests), ``queue_s`` and ``run_s`` (mean
        and p95 of provider-reported queue and run time), ``errors_by_type``,
        ``cost_usd_by_provider`` and ``cost_usd_total`` (decimal strings), and
        ``providers`` (per provider: ``requests``, ``share``, ``succeeded``, ``p50_s``,
        ``p95_s``, ``cost_usd``).
        """
        ok = [s for s in self.samples if s.ok]
        latencies = [s.latency_s for s in ok]
        costs: dict[str, Decimal] = {}
        for s in ok:
            if s.provider is not None and s.cost_usd is not None:
                costs[s.provider] = costs.get(s.provider, Decimal(0)) + s.cost_usd
        by_provider: dict[str, list[Sample]] = {}
        for s in self.samples:
            by_provider.setdefault(s.provider or "(none)", []).append(s)
        total = len(self.samples)
        providers = {
            name: {
                "requests": len(rows),
                "share": len(rows) / total if total else 0.0,
                "succeeded": sum(1 for s in rows if s.ok),
                "p50_s": percentile([s.latency_s for s in rows if s.ok], 0.50),
                "p95_s": percentile([s.latency_s for s in rows if s.ok], 0.95),
                "cost_usd": str(costs.get(name, Decimal(0))),
            }
            for name, rows in sorted(by_provider.items())
        }
        return {
            "model": self.model,
            "mode": {"concurrency": self.concurrency} if self.rate is None else {"rate_rps": self.rate},
            "requests": total,
            "succeeded": len(ok),
            "failed": total - len(ok),
            "duration_s": self.elapsed_s,
            "throughput_rps": total / self.elapsed_s if self.elapsed_s > 0 else None,
            "latency_s": {
                "p50": percentile(latencies, 0.50),
                "p95": percentile(latencies, 0.95),
                "p99": percentile(latencies, 0.99),
                "mean": sum(latencies) / len(latencies) if latencies else None,
                "max": max(latencies, default=None),
            },
            "queue_s": _mean_p95([s.queued_s for s in ok if s.queued_s is not None]),
            "run_s": _mean_p95([s.running_s for s in ok if s.running_s is not None]),
            "errors_by_type": dict(Counter(s.error for s in self.samples if s.error is not None)),
            "cost_usd_by_provider": {name: str(amount) for name, amount in sorted(costs.items())},
            "cost_usd_total": str(sum(costs.values(), Decimal(0))),
            "providers": providers,
        }


def _mean_p95(values: Sequence[float]) -> dict[str, float | None]:
    return {"mean": sum(values) / len(values) if values else None, "p95": percentile(values, 0.95)}


def _error_name(exc: GenRouterError) -> str:
    """The error's type; for every-route-failed, the last underlying error's type too."""
    if isinstance(exc, AllProvidersFailedError) and exc.errors:
        return f"{type(exc).__name__}({type(exc.errors[-1]).__name__})"
    return type(exc).__name__


async def run_loadtest(
    router: AsyncRouter,
    model: str,
    *,
    requests: int | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    duration_s: float | None = None,
    fields: Mapping[str, Any] | None = None,
    on_sample: Callable[[LoadTest], None] | None = None,
) -> LoadTest:
    """Send ``model`` requests through ``router`` (see the module docstring); return the samples.

    ``fields`` are request fields besides ``model`` (default: a fixed prompt).
    ``on_sample(state)`` is called after each request ends. ``concurrency`` and ``rate``
    are exclusive; ``ValueError`` names a bad combination.
    """
    if concurrency is not None and rate is not None:
        raise ValueError("give --concurrency or --rate, not both")
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {concurrency}")
    if rate is not None and not rate > 0:
        raise ValueError(f"--rate must be above 0 requests/s, got {rate}")
    if requests is not None and requests < 1:
        raise ValueError(f"--requests must be at least 1, got {requests}")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"--duration must be above 0 s, got {duration_s}")
    if requests is None and duration_s is None:
        requests = DEFAULT_REQUESTS
    if rate is None and concurrency is None:
        concurrency = DEFAULT_CONCURRENCY
    request_fields = dict(fields or {"prompt": "a red fox in snow"})
    clock = router.clock
    state = LoadTest(model=model, concurrency=concurrency, rate=rate, planned=requests)
    begin = clock.now()
    stop_at = math.inf if duration_s is None else begin + duration_s

    def may_start() -> bool:
        return (requests is None or state.started < requests) and clock.now() < stop_at

    async def one() -> None:
        state.started += 1
        state.in_flight += 1
        started = clock.now()
        try:
            result = await router.generate(model=model, **request_fields)
        except GenRouterError as exc:
            sample = Sample(
                started - begin,
                clock.now() - started,
                getattr(exc, "provider", None),
                error=_error_name(exc),
                attempts=len(getattr(exc, "attempts", []) or []) or 1,
            )
        else:
            sample = Sample(
                started - begin,
                clock.now() - started,
                result.provider,
                cost_usd=result.cost.amount_usd,
                queued_s=result.timings.queued_s,
                running_s=result.timings.running_s,
                attempts=len(result.attempts),
            )
        state.in_flight -= 1
        state.samples.append(sample)
        state.elapsed_s = clock.now() - begin
        if on_sample is not None:
            on_sample(state)

    if rate is None:
        assert concurrency is not None

        async def worker() -> None:
            while may_start():
                await one()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    else:
        tasks: set[asyncio.Task[None]] = set()
        issued = 0
        while may_start():
            task = asyncio.ensure_future(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            issued += 1
            delay = begin + issued / rate - clock.now()
            await (clock.sleep(delay) if delay > 0 else asyncio.sleep(0))
        if tasks:
            await asyncio.gather(*tasks)
    state.elapsed_s = clock.now() - begin
    return state
