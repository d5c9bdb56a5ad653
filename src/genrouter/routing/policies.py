"""Pure ranking of viable candidates by strategy. Lower score is better.

Every function takes :class:`CandidateStats` (estimated cost, estimated p95,
priority rank, weight) and returns them ordered best first, with scores set. No
I/O, no clocks: policies are unit-testable on plain numbers.

- ``priority``: score = rank in ``order`` (unlisted providers after, in config order).
- ``cost``: score = estimated cost in USD; unknown cost ranks after every known one;
  ties broken by priority. Candidates over ``latency_slo_s`` rank after those within it.
- ``latency``: score = estimated p95 seconds × (1 + in-flight requests / 8) for a
  deployment seen queueing (a provider-side concurrency limit), so load spreads across
  saturated providers (least-outstanding-requests weighted by latency, as Finagle's
  P2C-EWMA does); for the others, p95 × (1 + 0.5 × its share of the requests in flight
  at them), so deployments within 50 % of each other share the load instead of one
  taking it all (herding sends the whole burst to whichever of two equals has just
  gone bad) while a clearly slower one gets none; a deployment whose newest latencies
  are mostly above its p95 (it has just gone slower) scores as holding every request.
  An unobserved deployment is scored at the SLO if one is set, else at the median of
  observed p95s (0 when none are).
- ``balanced``: score = ``0.5 · cost / cheapest + 0.5 · p95 / fastest`` (each term 1.0
  for the best candidate, capped at 10⁶; 2.0 against a free or instant best), + 1.0
  when p95 exceeds the SLO. Unknown cost or latency count as the worst known value.
- ``weighted``: smooth weighted round-robin (nginx's algorithm) over ``weights``
  (default 1 each): over any window each candidate leads in proportion to its
  weight, evenly interleaved; the rest follow by weight.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

__all__ = [
    "CandidateStats",
    "Rankable",
    "SmoothWeightedRoundRobin",
    "rank",
]

T = TypeVar("T")


class Rankable(Protocol):
    """What a policy reads (and the ``score`` it writes) on each candidate."""

    key: str
    cost: float | None
    priority: int
    weight: float
    score: float
    inflight: int
    queues: bool
    changed: bool

    @property
    def p95(self) -> float | None:
        """Estimated p95 latency, seconds."""
        ...


R = TypeVar("R", bound=Rankable)

LOAD_SCALE = 8.0
"""Requests in flight that make a queueing deployment count as twice as slow in latency scores."""

SHARE_WEIGHT = 0.5
"""How much slower a deployment holding every request in flight counts in latency scores."""

BALANCED_COST_WEIGHT = 0.5
BALANCED_LATENCY_WEIGHT = 0.5
SLO_PENALTY = 1.0


@dataclass(slots=True)
class CandidateStats(Generic[T]):
    """The numbers a policy ranks by, attached to any item (usually a deployment)."""

    item: T
    key: str
    cost: float | None
    p95: float | None
    priority: int
    weight: float = 1.0
    score: float = field(default=0.0)
    inflight: int = 0
    queues: bool = False
    changed: bool = False


def _by_priority(stats: Sequence[R]) -> list[R]:
    for s in stats:
        s.score = float(s.priority)
    return sorted(stats, key=lambda s: s.priority)


def _over_slo(s: R, slo: float | None) -> bool:
    return slo is not None and s.p95 is not None and s.p95 > slo


def _by_cost(stats: Sequence[R], slo: float | None) -> list[R]:
    known = [s.cost for s in stats if s.cost is not None]
    unknown_cost = (max(known) * 2 + 1) if known else 0.0
    for s in stats:
        s.score = s.cost if s.cost is not None else unknown_cost
    return sorted(stats, key=lambda s: (_over_slo(s, slo), s.cost is None, s.score, s.priority))


def _latency_prior(stats: Sequence[R], slo: float | None) -> float:
    if slo is not None:
        return slo
    observed = [s.p95 for s in stats if s.p95 is not None]
    return statistics.median(observed) if observed else 0.0


def _by_latency(stats: Sequence[R], slo: float | None) -> list[R]:
    prior = _latency_prior(stats, slo)
    shared = sum(s.inflight for s in stats if not s.queues)
    for s in stats:
        p95 = s.p95 if s.p95 is not None else prior
        if s.queues:
            s.score = p95 * (1.0 + s.inflight / LOAD_SCALE)
        elif s.changed:
            s.score = p95 * (1.0 + SHARE_WEIGHT)  # a deployment just gone slower gets no share
        elif shared:
            s.score = p95 * (1.0 + SHARE_WEIGHT * s.inflight / shared)
        else:
            s.score = p95
    return sorted(stats, key=lambda s: (s.score, s.priority))


_RATIO_CAP = 1e6


def _ratio(value: float, best: float) -> float:
    """``value / best`` (1.0 for the best), finite even for tiny or zero ``best``."""
    if value <= best:
        return 1.0
    if best <= 0:
        return 2.0  # free (or instant) beats anything; a paid one counts as twice as bad
    return min(_RATIO_CAP, value / best)


def _by_balance(stats: Sequence[R], slo: float | None) -> list[R]:
    costs = [s.cost for s in stats if s.cost is not None]
    latencies = [s.p95 for s in stats if s.p95 is not None]
    cheapest, dearest = (min(costs), max(costs)) if costs else (0.0, 0.0)
    fastest, slowest = (min(latencies), max(latencies)) if latencies else (0.0, 0.0)
    for s in stats:
        cost = s.cost if s.cost is not None else dearest
        p95 = s.p95 if s.p95 is not None else slowest
        cost_term = _ratio(cost, cheapest)
        latency_term = _ratio(p95, fastest)
        s.score = BALANCED_COST_WEIGHT * cost_term + BALANCED_LATENCY_WEIGHT * latency_term
        if _over_slo(s, slo):
            s.score += SLO_PENALTY
    return sorted(stats, key=lambda s: (s.score, s.priority))


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round-robin, keyed by candidate key.

    Each pick adds every candidate's weight to its current value, picks the
    highest, and subtracts the total from the winner. State persists across calls,
    so the sequence interleaves evenly (weights 3:1 → A A B A A A B A …).
    """

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def pick(self, stats: Sequence[R]) -> R:
        """Choose the candidate that leads this time."""
        total = 0.0
        best: R | None = None
        best_value = float("-inf")
        for s in stats:
            value = self._current.get(s.key, 0.0) + s.weight
            self._current[s.key] = value
            total += s.weight
            if value > best_value:
                best, best_value = s, value
        assert best is not None
        self._current[best.key] -= total
        return best


def _by_weight(stats: Sequence[R], rr: SmoothWeightedRoundRobin) -> list[R]:
    leader = rr.pick(stats)
    rest = sorted((s for s in stats if s is not leader), key=lambda s: (-s.weight, s.priority))
    ordered = [leader, *rest]
    for i, s in enumerate(ordered):
        s.score = float(i)
    return ordered


def rank(
    strategy: str,
    stats: Sequence[R],
    *,
    latency_slo_s: float | None = None,
    round_robin: SmoothWeightedRoundRobin | None = None,
) -> list[R]:
    """Order ``stats`` best first under ``strategy``; each item's ``score`` is set."""
    if not stats:
        return []
    if strategy == "priority":
        return _by_priority(stats)
    if strategy == "cost":
        return _by_cost(stats, latency_slo_s)
    if strategy == "latency":
        return _by_latency(stats, latency_slo_s)
    if strategy == "balanced":
        return _by_balance(stats, latency_slo_s)
    if strategy == "weighted":
        return _by_weight(stats, round_robin or SmoothWeightedRoundRobin())
    raise ValueError(f"unknown strategy {strategy!r}")
