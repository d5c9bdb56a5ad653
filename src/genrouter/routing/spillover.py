"""Spillover: predict when a request sent to a busy deployment would finish.

With ``strategy: cost`` and ``latency_slo_s`` (and ``spillover.enabled``, the default),
every deployment whose backend reports :class:`~genrouter.routing.capacity.CapacityFacts`
is estimated by :func:`predict_completion` instead of by its observed p95. The cost
ranking then keeps the cheapest deployment first while its prediction fits the SLO,
and ranks it after the next one (which takes the overflow) once it does not: traffic
spills from a self-hosted deployment to a hosted one only for what the self-hosted one
cannot finish in time, and comes back as soon as its queue and containers allow.

**The prediction** (pure; seconds). With ``c`` jobs per container, ``W`` warm and ``S``
starting containers, ``R`` running jobs, backlog ``B``, mean service time ``T`` and
service p95 ``T95``, cold start ``C``, ceiling ``M``:

- slots now ``s = W·c``; completions needed before this request starts
  ``n = R + B + 1 − s`` (≤ 0: a slot is free, the wait is 0);
- the warm slots drain the queue at ``s / T`` jobs a second; if they clear ``n`` within
  ``C`` the wait is ``n·T / s``;
- otherwise, at ``C`` the starting containers and the ones the autoscaler adds for
  this queue (up to ``M``: it wants ``ceil((R + B + 1) / c)``) join with ``a`` new
  slots, which take the next ``a`` queued jobs at once; the rest drain at the total
  ``s' / T``: wait ``= C + max(0, n − s·C/T − a)·T / s'``;
- with no warm slot and an unknown cold start (or no slot ever), the wait is infinite.

The completion time is ``wait + T95``. The drain is a fluid approximation that counts
each running job as just started (so it errs late, by at most one service time).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from genrouter.routing.capacity import CapacityFacts

if TYPE_CHECKING:
    from genrouter.routing.plan import PlannedCandidate
    from genrouter.routing.store import StateStore

__all__ = ["CapacitySource", "Prediction", "apply_spillover", "predict_completion", "service_times"]

CapacitySource = Callable[[], CapacityFacts | None]
"""A deployment's capacity facts now (its backend's ``capacity`` bound to it)."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """When a request sent now would finish: ``wait_s`` for a slot, then ``service_p95_s``."""

    wait_s: float
    service_s: float
    service_p95_s: float

    @property
    def completion_s(self) -> float:
        """``wait_s + service_p95_s``."""
        return self.wait_s + self.service_p95_s


def predict_completion(facts: CapacityFacts, service_s: float, service_p95_s: float) -> Prediction:
    """Predict a new request's completion time at a deployment (formula in the module docstring).

    ``service_s`` is the mean run time of one job, ``service_p95_s`` its p95 (both > 0
    for a meaningful queue; 0 means instant jobs and no wait).
    """
    c = max(1, facts.concurrency_per_container)
    t = max(0.0, service_s)
    t95 = max(t, service_p95_s)
    ahead = max(0, facts.running) + max(0, facts.backlog)
    warm = max(0, facts.containers_warm)
    starting = max(0, facts.containers_starting)
    slots = warm * c
    needed = ahead + 1 - slots
    if needed <= 0 or t == 0.0:
        return Prediction(0.0, t, t95)
    cold = facts.cold_start_s
    if cold is not None and slots > 0 and needed * t / slots <= cold:
        return Prediction(needed * t / slots, t, t95)
    if cold is None:
        wait = needed * t / slots if slots > 0 else math.inf
        return Prediction(wait, t, t95)
    ceiling = facts.max_containers if facts.max_containers is not None else warm + starting
    wanted = min(max(ceiling, warm + starting), math.ceil((ahead + 1) / c))
    joining = max(starting, wanted - warm)
    added = joining * c
    total = slots + added
    if total == 0:
        return Prediction(math.inf, t, t95)
    left = needed - slots * cold / t - added
    wait = cold + max(0.0, left) * t / total
    return Prediction(wait, t, t95)


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def service_times(
    run_times: Sequence[float], facts: CapacityFacts, fallback_p95: float | None
) -> tuple[float, float] | None:
    """(mean, p95) of one job's run time: observed run times, else the backend's, else the hint."""
    if run_times:
        return statistics.fmean(run_times), _quantile(run_times, 0.95)
    if facts.service_s is not None:
        return facts.service_s, facts.service_s
    if fallback_p95 is not None:
        return fallback_p95, fallback_p95
    return None


def apply_spillover(
    candidates: Sequence[PlannedCandidate],
    sources: Mapping[str, CapacitySource],
    store: StateStore,
    slo_s: float,
) -> list[str]:
    """Replace each capacity-reporting candidate's p95 estimate by its predicted completion.

    Returns one note per prediction for ``explain()``.
    """
    notes: list[str] = []
    for candidate in candidates:
        source = sources.get(candidate.key)
        if source is None:
            continue
        facts = source()
        if facts is None:
            continue
        health = store.health(candidate.key)
        service = service_times(list(health.run_times), facts, candidate.completed_p95)
        if service is None:
            continue
        prediction = predict_completion(facts, *service)
        candidate.estimated_p95 = prediction.completion_s
        fits = prediction.completion_s <= slo_s
        cold = "unknown" if facts.cold_start_s is None else f"{facts.cold_start_s:g}s"
        notes.append(
            f"{candidate.deployment.provider}: predicted completion {prediction.completion_s:.1f}s "
            f"(wait {prediction.wait_s:.1f}s + service p95 {prediction.service_p95_s:.1f}s; "
            f"{facts.describe()}; service {prediction.service_s:.1f}s, cold start {cold}) "
            + (f"fits the SLO {slo_s:g}s" if fits else f"over the SLO {slo_s:g}s: spills to the next")
        )
    return notes
