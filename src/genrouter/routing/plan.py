"""Planning: filter the deployments of a model, then rank the survivors by strategy.

Filters, in order, each recording why a deployment was excluded:

1. the request's ``providers`` allow-list;
2. provider disabled (authentication or payment failure) or unusable (no credentials);
3. capabilities the request needs (image-to-image, inpainting, LoRA, video);
4. input limits (size, LoRA count, video length);
5. ``max_cost_usd`` on the estimated cost (an unknown cost cannot pass a cap);
6. an open circuit.

When every deployment that passed 1-5 has an open circuit, the one whose cooldown
ends first is tried anyway ("panic mode", as Envoy does) and the plan says so.
Otherwise deployments with open circuits are the plan's ``last_resort``: tried (soonest
cooldown end first) only once every viable candidate has failed and time is left, so
that a circuit tripped by a burst of bad luck never costs a request that it could save.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from genrouter.catalog import Capability, Deployment
from genrouter.routing.health import CircuitState, DeploymentHealth
from genrouter.routing.policies import SmoothWeightedRoundRobin, rank
from genrouter.routing.spillover import CapacitySource, apply_spillover
from genrouter.routing.store import StateStore

if TYPE_CHECKING:
    from genrouter.config import ExplorePolicy, RoutePolicy
    from genrouter.routing.budgets import BudgetGuard
from genrouter.types import Candidate, GenerationRequest, RoutePlan, Strategy

__all__ = ["ExploreRule", "Plan", "PlannedCandidate", "build_plan", "required_capabilities"]


@dataclass(slots=True)
class PlannedCandidate:
    """A deployment with its estimates, score, and exclusion reason (None if viable).

    It carries the numbers the policies rank by (:class:`~genrouter.routing.policies.Rankable`).
    """

    deployment: Deployment
    estimated_cost: Decimal | None
    estimated_p95: float | None
    key: str = ""
    cost: float | None = None
    priority: int = 0
    weight: float = 1.0
    score: float = 0.0
    excluded: str | None = None
    over_budget: bool = False
    inflight: int = 0
    queues: bool = False
    changed: bool = False
    completed_p95: float | None = None
    """p95 of finished requests (and the hint), without the in-flight age: the hedge delay."""

    @property
    def p95(self) -> float | None:
        """The estimated p95 the latency policies rank by."""
        return self.estimated_p95


@dataclass(slots=True)
class Plan:
    """The router's internal plan: viable candidates best first, then excluded ones."""

    model: str
    strategy: Strategy
    viable: list[PlannedCandidate]
    excluded: list[PlannedCandidate]
    notes: list[str] = field(default_factory=list)
    exploring: PlannedCandidate | None = None
    last_resort: list[PlannedCandidate] = field(default_factory=list)
    """Excluded only for an open circuit: tried after every viable candidate failed."""

    @property
    def over_budget(self) -> bool:
        """True when nothing is viable and a budget excluded at least one deployment."""
        return not self.viable and any(c.over_budget for c in self.excluded)

    def to_route_plan(self, store: StateStore, now: float) -> RoutePlan:
        """The public :class:`RoutePlan` (with health summaries) for ``explain()``."""
        return RoutePlan(
            model=self.model,
            strategy=self.strategy,
            candidates=[
                Candidate(
                    provider=c.deployment.provider,
                    endpoint=c.deployment.endpoint,
                    estimated_cost_usd=c.estimated_cost,
                    estimated_p95_s=c.estimated_p95,
                    health=store.health(c.deployment.key).describe(now),
                    score=None if c.excluded else c.score,
                    excluded=c.excluded,
                )
                for c in (*self.viable, *self.excluded)
            ],
            notes=list(self.notes),
        )


def required_capabilities(request: GenerationRequest, kind: str) -> frozenset[Capability]:
    """The capabilities a deployment of a ``kind`` model needs to serve ``request``."""
    image = request.image is not None or bool(request.images)
    return _capabilities(kind, image, request.mask is not None, bool(request.loras))


@functools.lru_cache(maxsize=64)
def _capabilities(kind: str, image: bool, mask: bool, loras: bool) -> frozenset[Capability]:
    needed: set[Capability] = set()
    if kind == "upscale":
        needed.add(Capability.UPSCALE)
    elif kind == "remove-background":
        needed.add(Capability.REMOVE_BACKGROUND)
    elif kind == "workflow":
        pass
    elif kind == "video":
        needed.add(Capability.IMAGE_TO_VIDEO if image else Capability.TEXT_TO_VIDEO)
    else:
        needed.add(Capability.IMAGE_TO_IMAGE if image else Capability.TEXT_TO_IMAGE)
    if mask:
        needed.add(Capability.INPAINTING)
    if loras:
        needed.add(Capability.LORA)
    return frozenset(needed)


def _limit_problem(request: GenerationRequest, deployment: Deployment) -> str | None:
    limits = deployment.limits
    for name, value, bounds in (
        ("width", request.width, limits.width),
        ("height", request.height, limits.height),
    ):
        if value is not None and bounds is not None and not bounds[0] <= value <= bounds[1]:
            return f"{name} {value} outside this endpoint's range {bounds[0]}-{bounds[1]}"
    if limits.max_loras is not None and len(request.loras) > limits.max_loras:
        return f"{len(request.loras)} LoRAs requested, at most {limits.max_loras} supported"
    if request.duration_s is not None:
        low_high = limits.duration_range_s
        if low_high is None and limits.durations_s:
            low_high = (min(limits.durations_s), max(limits.durations_s))
        if low_high is not None and not low_high[0] <= request.duration_s <= low_high[1]:
            return (
                f"duration_s {request.duration_s} outside this endpoint's range "
                f"{low_high[0]:g}-{low_high[1]:g}"
            )
    return None


def _exclusion(
    request: GenerationRequest,
    deployment: Deployment,
    needed: frozenset[Capability],
    unavailable: Mapping[str, str],
    store: StateStore,
    estimated_cost: Decimal | None,
    max_cost: Decimal | None,
) -> str | None:
    provider = deployment.provider
    if request.providers is not None and provider not in request.providers:
        return "not in the request's providers allow-list"
    disabled = store.disabled_reason(provider)
    if disabled is not None:
        return f"provider disabled: {disabled}"
    reason = unavailable.get(provider)
    if reason is not None:
        return reason
    missing = needed - deployment.capabilities
    if missing:
        return "lacks " + ", ".join(sorted(c.value for c in missing))
    problem = _limit_problem(request, deployment)
    if problem is not None:
        return problem
    if max_cost is not None:
        if estimated_cost is None:
            return f"cost unknown, cannot honour max_cost_usd {max_cost}"
        if estimated_cost > max_cost:
            return f"estimated cost {estimated_cost} > max_cost_usd {max_cost}"
    return None


HINT_WEIGHT = 10
"""A backend's latency hint counts as this many observations (a prior, shrunk toward data)."""


def _blend_with_hint(health: DeploymentHealth, hint: float | None) -> float | None:
    """Observed p95 shrunk toward the backend's hint: a few lucky samples cannot outrank a
    deployment the backend knows to be slow, and data wins as it accumulates."""
    observed = health.estimated_p95
    if observed is None or hint is None:
        return hint if observed is None else observed
    n = health.samples + health.remote_samples
    return (n * observed + HINT_WEIGHT * hint) / (n + HINT_WEIGHT)


def build_plan(
    request: GenerationRequest,
    policy: RoutePolicy,
    *,
    model: str,
    kind: str,
    deployments: Sequence[Deployment],
    provider_rank: Mapping[str, int],
    latency_hints: Mapping[str, float],
    unavailable: Mapping[str, str],
    store: StateStore,
    now: float,
    round_robin: SmoothWeightedRoundRobin | None = None,
    estimate_costs: bool = True,
    budget: BudgetGuard | None = None,
    capacity: Mapping[str, CapacitySource] | None = None,
) -> Plan:
    """Filter and rank ``deployments`` for ``request`` under ``policy``. Pure apart from
    reading ``store``.

    From ``policy``: the strategy and ``max_cost_usd`` (each unless the request sets its
    own), ``weights``, ``latency_slo_s``, the breaker's ``half_open_probes``, ``explore``
    and ``spillover``. ``estimate_costs=False`` skips cost estimates when neither the
    strategy nor a cost cap needs them (the hot path of ``priority``/``latency``/``weighted``
    routing). ``capacity`` (deployment key → its backend's capacity facts) turns on
    spillover predictions for ``cost`` with a ``latency_slo_s`` when ``policy.spillover``
    is enabled (:mod:`genrouter.routing.spillover`).
    """
    strategy: Strategy = request.strategy or policy.strategy
    max_cost_usd = request.max_cost_usd if request.max_cost_usd is not None else policy.max_cost_usd
    weights = policy.weights
    latency_slo_s = policy.latency_slo_s
    half_open_probes = policy.circuit_breaker.half_open_probes
    explore = policy.explore if policy.explore.enabled else None
    if not policy.spillover.enabled:
        capacity = None
    estimate_costs = (
        estimate_costs or max_cost_usd is not None or strategy in ("cost", "balanced") or bool(budget)
    )
    needed = required_capabilities(request, kind)
    passed: list[PlannedCandidate] = []
    open_circuits: list[tuple[float, PlannedCandidate]] = []
    excluded: list[PlannedCandidate] = []
    for deployment in deployments:
        estimated_cost = deployment.estimate_cost(request) if estimate_costs else None
        health = store.health(deployment.key)
        completed_p95 = _blend_with_hint(health, latency_hints.get(deployment.key))
        p95 = health.expected_p95(now, completed_p95)
        provider = deployment.provider
        candidate = PlannedCandidate(
            deployment,
            estimated_cost,
            p95,
            key=deployment.key,
            cost=float(estimated_cost) if estimated_cost is not None else None,
            priority=provider_rank.get(provider, len(provider_rank)),
            weight=weights.get(provider, 1.0) if weights else 1.0,
            inflight=health.inflight,
            queues=health.queues,
            changed=health.changed,
            completed_p95=completed_p95,
        )
        reason = _exclusion(request, deployment, needed, unavailable, store, estimated_cost, max_cost_usd)
        if reason is None and budget:
            reason = budget.exclusion(provider, estimated_cost)
            candidate.over_budget = reason is not None
        if reason is None and not health.admits(now, half_open_probes):
            if health.state(now) is CircuitState.OPEN:
                reason = f"circuit open for another {health.open_until - now:.1f}s"
            else:
                reason = "circuit half-open, a probe is already in flight"
            open_circuits.append((health.open_until, candidate))
        candidate.excluded = reason
        (excluded if reason else passed).append(candidate)

    notes: list[str] = []
    if capacity and strategy == "cost" and latency_slo_s is not None:
        notes += apply_spillover(passed, capacity, store, latency_slo_s)
    open_circuits.sort(key=lambda pair: pair[0])
    last_resort = [candidate for _, candidate in open_circuits]
    if not passed and last_resort:
        soonest = last_resort.pop(0)
        notes.append(
            f"every circuit is open; trying {soonest.deployment.provider} "
            "(its cooldown ends first) in panic mode"
        )
        soonest.excluded = None
        excluded.remove(soonest)
        passed.append(soonest)

    viable = rank(strategy, passed, latency_slo_s=latency_slo_s, round_robin=round_robin)
    exploring = None
    if explore is not None and strategy in _EXPLORING_STRATEGIES and len(viable) > 1:
        exploring = _pick_exploration(viable, explore, store, now)
        if exploring is not None:
            viable.remove(exploring)
            viable.insert(0, exploring)
            explored = store.health(exploring.deployment.key)
            if explored.samples < explore.min_samples:
                why = f"{explored.samples} recent latency sample(s), fewer than {explore.min_samples}"
            else:
                assert explored.last_request_at is not None
                why = f"no request for {now - explored.last_request_at:.0f}s; it may have changed"
            notes.append(f"exploring {exploring.deployment.provider}: {why}")
    return Plan(
        model=model,
        strategy=strategy,
        viable=viable,
        excluded=excluded,
        notes=notes,
        exploring=exploring,
        last_resort=last_resort,
    )


_EXPLORING_STRATEGIES = frozenset({"latency", "balanced", "cost"})


@dataclass(frozen=True, slots=True)
class ExploreRule:
    """Lead with a deployment that has fewer than ``min_samples`` latency observations, or
    that no request has gone to for ``interval_s`` (a benched deployment may have
    recovered; its numbers are frozen until something goes there), at most once per
    ``interval_s`` per deployment, once the leader itself is measured."""

    min_samples: int
    interval_s: float


def _pick_exploration(
    viable: list[PlannedCandidate], rule: ExploreRule | ExplorePolicy, store: StateStore, now: float
) -> PlannedCandidate | None:
    # Only once the leader is measured: a fresh router follows its ranking first.
    if store.health(viable[0].deployment.key).samples < rule.min_samples:
        return None
    for candidate in viable[1:]:
        health = store.health(candidate.deployment.key)
        last = health.last_request_at
        if last is not None and now - last < rule.interval_s:
            continue
        if last is not None or health.samples < rule.min_samples:
            return candidate
    return None
