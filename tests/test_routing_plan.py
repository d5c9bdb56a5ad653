"""Planning: filtering deployments (each exclusion reason), panic mode, and explain()."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from genrouter import AsyncRouter, GenerationRequest, LoRA, RoutePlan
from genrouter.catalog import Capability, CatalogEntry, Deployment, Limits, build_deployment
from genrouter.config import RoutePolicy
from genrouter.routing.plan import Plan, build_plan, required_capabilities
from genrouter.routing.policies import SmoothWeightedRoundRobin
from genrouter.routing.store import MemoryStateStore
from genrouter.testing import FakeBackend, FakeClock

NOW = 1000.0


def deployment(
    provider: str,
    *,
    price: str | None = "0.01",
    capabilities: list[str] | None = None,
    limits: dict[str, Any] | None = None,
    kind: str = "image",
) -> Deployment:
    entry = CatalogEntry.model_validate(
        {
            "endpoint": f"{provider}/flux-dev",
            "kind": kind,
            "capabilities": capabilities or ["text-to-image", "image-to-image", "lora"],
            **({"price": {"per_image": price}} if price is not None else {}),
            **({"limits": limits} if limits is not None else {}),
        }
    )
    return build_deployment(
        provider=provider, provider_type="custom", model="flux-dev", entry=entry, spec=None
    )


def request(**fields: Any) -> GenerationRequest:
    return GenerationRequest.model_validate({"model": "flux-dev", "prompt": "a fox", **fields})


def policy(**fields: Any) -> RoutePolicy:
    """A routing policy as a user writes it; exploration off, as these specs rank only."""
    return RoutePolicy.model_validate({"explore": {"enabled": False}, **fields})


def plan(
    deployments: list[Deployment],
    req: GenerationRequest | None = None,
    *,
    store: MemoryStateStore | None = None,
    strategy: str = "priority",
    max_cost_usd: Decimal | None = None,
    unavailable: dict[str, str] | None = None,
    now: float = NOW,
) -> Plan:
    return build_plan(
        req or request(),
        policy(strategy=strategy, max_cost_usd=max_cost_usd),
        model="flux-dev",
        kind=deployments[0].kind,
        deployments=deployments,
        provider_rank={d.provider: i for i, d in enumerate(deployments)},
        latency_hints={},
        unavailable=unavailable or {},
        store=store or MemoryStateStore(),
        now=now,
        round_robin=SmoothWeightedRoundRobin(),
    )


def viable(p: Plan) -> list[str]:
    return [c.deployment.provider for c in p.viable]


def excluded(p: Plan) -> dict[str, str | None]:
    return {c.deployment.provider: c.excluded for c in p.excluded}


def open_circuit(store: MemoryStateStore, d: Deployment, *, at: float, cooldown: float) -> None:
    store.health(d.key).record_failure(at, failure_threshold=1, cooldown_s=cooldown)


# -- required capabilities --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "kind", "needed"),
    [
        ({}, "image", {Capability.TEXT_TO_IMAGE}),
        ({"image": "https://x/y.png"}, "image", {Capability.IMAGE_TO_IMAGE}),
        (
            {"image": "https://x/y.png", "mask": "https://x/m.png"},
            "image",
            {Capability.IMAGE_TO_IMAGE, Capability.INPAINTING},
        ),
        ({"loras": [{"source": "owner/lora"}]}, "image", {Capability.TEXT_TO_IMAGE, Capability.LORA}),
        ({}, "video", {Capability.TEXT_TO_VIDEO}),
        ({"image": "https://x/y.png"}, "video", {Capability.IMAGE_TO_VIDEO}),
    ],
)
def test_required_capabilities_follow_the_request(
    fields: dict[str, Any], kind: str, needed: set[Capability]
) -> None:
    """The capabilities a request needs come from its inputs and the model's kind."""
    assert required_capabilities(request(**fields), kind) == frozenset(needed)


# -- each exclusion reason ----------------------------------------------------------------


def test_allow_list_excludes_other_providers() -> None:
    """A request's providers allow-list excludes every provider not on it."""
    p = plan([deployment("a"), deployment("b")], request(providers=["b"]))
    assert viable(p) == ["b"]
    assert excluded(p) == {"a": "not in the request's providers allow-list"}


def test_lora_request_excludes_a_deployment_without_lora() -> None:
    """A request with LoRAs excludes deployments that lack the lora capability."""
    p = plan(
        [deployment("plain", capabilities=["text-to-image"]), deployment("loras")],
        request(loras=[LoRA(source="owner/style")]),
    )
    assert viable(p) == ["loras"]
    assert excluded(p) == {"plain": "lacks lora"}


def test_image_input_excludes_a_text_only_deployment() -> None:
    """An image-to-image request excludes a deployment without image-to-image."""
    p = plan(
        [deployment("t2i", capabilities=["text-to-image"]), deployment("both")],
        request(image="https://example.com/in.png"),
    )
    assert excluded(p) == {"t2i": "lacks image-to-image"}


def test_size_outside_limits_excludes_a_deployment() -> None:
    """A width outside a deployment's range excludes it, naming the field and range."""
    p = plan(
        [deployment("small", limits={"width": [256, 1024], "height": [256, 1024]}), deployment("any")],
        request(width=2048, height=512),
    )
    assert viable(p) == ["any"]
    assert excluded(p) == {"small": "width 2048 outside this endpoint's range 256-1024"}


def test_too_many_loras_excludes_a_deployment() -> None:
    """More LoRAs than a deployment's max_loras excludes it."""
    p = plan(
        [deployment("one", limits={"max_loras": 1}), deployment("many")],
        request(loras=[LoRA(source="a/one"), LoRA(source="b/two")]),
    )
    assert excluded(p) == {"one": "2 LoRAs requested, at most 1 supported"}


def test_max_cost_excludes_deployments_estimated_over_the_cap() -> None:
    """max_cost_usd excludes a deployment whose estimate exceeds it, with both numbers."""
    p = plan(
        [deployment("dear", price="0.05"), deployment("cheap", price="0.01")],
        max_cost_usd=Decimal("0.02"),
    )
    assert viable(p) == ["cheap"]
    assert excluded(p) == {"dear": "estimated cost 0.05 > max_cost_usd 0.02"}


def test_max_cost_is_checked_on_the_estimate_for_all_requested_outputs() -> None:
    """The cap applies to price × num_outputs, not one output."""
    p = plan([deployment("a", price="0.01")], request(num_outputs=3), max_cost_usd=Decimal("0.02"))
    assert excluded(p) == {"a": "estimated cost 0.03 > max_cost_usd 0.02"}


def test_unknown_cost_cannot_pass_a_cost_cap() -> None:
    """A deployment without a price is excluded when max_cost_usd is set."""
    p = plan([deployment("unpriced", price=None), deployment("priced")], max_cost_usd=Decimal("1"))
    assert excluded(p) == {"unpriced": "cost unknown, cannot honour max_cost_usd 1"}


def test_unknown_cost_is_viable_without_a_cap() -> None:
    """Without max_cost_usd an unpriced deployment stays viable, its estimate None."""
    p = plan([deployment("unpriced", price=None)])
    assert viable(p) == ["unpriced"]
    assert p.viable[0].estimated_cost is None


def test_open_circuit_excludes_a_deployment() -> None:
    """A deployment whose circuit is open is excluded with the time left."""
    store = MemoryStateStore()
    a, b = deployment("a"), deployment("b")
    open_circuit(store, a, at=NOW, cooldown=30)
    p = plan([a, b], store=store)
    assert viable(p) == ["b"]
    assert excluded(p) == {"a": "circuit open for another 30.0s"}


def test_half_open_circuit_with_a_probe_in_flight_excludes_a_deployment() -> None:
    """After the cooldown one probe is admitted; while it runs the deployment is excluded."""
    store = MemoryStateStore()
    a, b = deployment("a"), deployment("b")
    open_circuit(store, a, at=NOW - 60, cooldown=30)
    assert viable(plan([a, b], store=store)) == ["a", "b"]
    store.health(a.key).begin_request(NOW)
    assert excluded(plan([a, b], store=store)) == {"a": "circuit half-open, a probe is already in flight"}


def test_disabled_provider_is_excluded_with_the_reason() -> None:
    """A provider disabled by an authentication failure is excluded, saying why."""
    store = MemoryStateStore()
    store.disable("a", "AuthenticationError: invalid key")
    p = plan([deployment("a"), deployment("b")], store=store)
    assert excluded(p) == {"a": "provider disabled: AuthenticationError: invalid key"}


def test_unusable_provider_is_excluded_with_its_reason() -> None:
    """A provider its backend reports unusable (e.g. no credentials) is excluded with that reason."""
    p = plan([deployment("a"), deployment("b")], unavailable={"a": "no FAL_KEY set"})
    assert excluded(p) == {"a": "no FAL_KEY set"}


def test_allow_list_is_the_first_filter() -> None:
    """A provider both off the allow-list and over budget is reported as off the allow-list."""
    p = plan(
        [deployment("a", price="9"), deployment("b")],
        request(providers=["b"]),
        max_cost_usd=Decimal("1"),
    )
    assert excluded(p)["a"] == "not in the request's providers allow-list"


# -- panic mode ----------------------------------------------------------------------------


def test_panic_mode_tries_the_circuit_whose_cooldown_ends_first() -> None:
    """When every circuit is open, the one whose cooldown ends first is tried, and a note says so."""
    store = MemoryStateStore()
    a, b = deployment("a"), deployment("b")
    open_circuit(store, a, at=NOW, cooldown=30)
    open_circuit(store, b, at=NOW, cooldown=10)
    p = plan([a, b], store=store)
    assert viable(p) == ["b"]
    assert excluded(p) == {"a": "circuit open for another 30.0s"}
    assert any("panic mode" in note and "b" in note for note in p.notes)


def test_panic_mode_is_not_used_while_another_deployment_is_healthy() -> None:
    """An open circuit stays excluded when another deployment is viable."""
    store = MemoryStateStore()
    a, b = deployment("a"), deployment("b")
    open_circuit(store, a, at=NOW, cooldown=30)
    p = plan([a, b], store=store)
    assert viable(p) == ["b"]
    assert p.notes == []


def test_panic_mode_ignores_deployments_excluded_for_other_reasons() -> None:
    """Panic mode only revives open circuits, never a deployment excluded by a filter."""
    store = MemoryStateStore()
    a, b = deployment("a", capabilities=["text-to-image"]), deployment("b")
    open_circuit(store, b, at=NOW, cooldown=30)
    p = plan([a, b], request(loras=[LoRA(source="x/y")]), store=store)
    assert viable(p) == ["b"]
    assert excluded(p) == {"a": "lacks lora"}


# -- ranking inside the plan --------------------------------------------------------------


def test_plan_ranks_viable_candidates_by_the_strategy() -> None:
    """Viable candidates are ordered by the strategy, each with its score set."""
    p = plan([deployment("dear", price="0.05"), deployment("cheap", price="0.01")], strategy="cost")
    assert viable(p) == ["cheap", "dear"]
    assert [c.score for c in p.viable] == [pytest.approx(0.01), pytest.approx(0.05)]


def test_plan_uses_latency_hints_before_observations() -> None:
    """A latency hint stands in for the p95 until the deployment has observations."""
    a, b = deployment("a"), deployment("b")
    p = build_plan(
        request(),
        policy(strategy="latency"),
        model="flux-dev",
        kind="image",
        deployments=[a, b],
        provider_rank={"a": 0, "b": 1},
        latency_hints={a.key: 5.0, b.key: 1.0},
        unavailable={},
        store=MemoryStateStore(),
        now=NOW,
    )
    assert viable(p) == ["b", "a"]
    assert [c.estimated_p95 for c in p.viable] == [1.0, 5.0]


def _latency_plan(store: MemoryStateStore, a: Any, hint: float) -> Any:
    return build_plan(
        request(),
        policy(strategy="latency"),
        model="flux-dev",
        kind="image",
        deployments=[a],
        provider_rank={"a": 0},
        latency_hints={a.key: hint},
        unavailable={},
        store=store,
        now=NOW,
    )


def test_plan_shrinks_a_few_observations_toward_the_hint() -> None:
    """A few observations move the estimate from the hint toward them (the hint weighs 10)."""
    store = MemoryStateStore()
    a = deployment("a")
    for _ in range(5):
        store.health(a.key).record_success(0.5)
    assert _latency_plan(store, a, 5.0).viable[0].estimated_p95 == pytest.approx((5 * 0.5 + 10 * 5.0) / 15)


def test_plan_follows_observed_latency_once_there_is_data() -> None:
    """With many observations the estimate is essentially the observed p95."""
    store = MemoryStateStore()
    a = deployment("a")
    for _ in range(250):
        store.health(a.key).record_success(0.5)
    assert _latency_plan(store, a, 5.0).viable[0].estimated_p95 == pytest.approx(0.5, abs=0.2)


def test_three_requests_in_flight_longer_than_the_estimate_raise_it() -> None:
    """Overdue requests in flight show an incident before they complete (by the youngest's age)."""
    store = MemoryStateStore()
    a = deployment("a")
    for _ in range(50):
        store.health(a.key).record_success(0.5)
    for age in (9.0, 8.0, 7.0):
        store.health(a.key).begin_request(NOW - age)
    assert _latency_plan(store, a, 0.5).viable[0].estimated_p95 == pytest.approx(7.0)


def test_two_stragglers_in_flight_leave_the_estimate_alone() -> None:
    """Two overdue requests are the usual tail, not an incident: the estimate stays."""
    store = MemoryStateStore()
    a = deployment("a")
    for _ in range(250):
        store.health(a.key).record_success(0.5)
    store.health(a.key).begin_request(NOW - 7.0)
    store.health(a.key).begin_request(NOW - 6.0)
    assert _latency_plan(store, a, 5.0).viable[0].estimated_p95 == pytest.approx(0.5, abs=0.2)


def test_route_plan_lists_viable_first_then_excluded() -> None:
    """The public RoutePlan lists viable candidates best first and excluded ones last."""
    p = plan(
        [deployment("dear", price="0.05"), deployment("mid", price="0.02"), deployment("cheap")],
        strategy="cost",
        max_cost_usd=Decimal("0.03"),
    )
    route_plan = p.to_route_plan(MemoryStateStore(), NOW)
    assert [c.provider for c in route_plan.candidates] == ["cheap", "mid", "dear"]
    assert [c.excluded is None for c in route_plan.candidates] == [True, True, False]
    assert [c.provider for c in route_plan.viable] == ["cheap", "mid"]


# -- explain() -------------------------------------------------------------------------------


def router_config(**routing: Any) -> dict[str, Any]:
    def section(name: str, price: str, capabilities: list[str]) -> dict[str, Any]:
        return {
            "type": "custom",
            "models": {
                "flux-dev": {
                    "endpoint": f"{name}/flux-dev",
                    "price": {"per_image": price},
                    "capabilities": capabilities,
                }
            },
        }

    return {
        "version": 1,
        "providers": {
            "a": section("a", "0.05", ["text-to-image"]),
            "b": section("b", "0.02", ["text-to-image", "lora"]),
            "c": section("c", "0.01", ["text-to-image", "lora"]),
        },
        "routing": {"default": routing},
    }


def make_router(**routing: Any) -> tuple[AsyncRouter, dict[str, FakeBackend]]:
    backends = {name: FakeBackend(name=name) for name in "abc"}
    return (
        AsyncRouter.from_config(router_config(**routing), backends=backends, clock=FakeClock()),
        backends,
    )


def test_explain_lists_excluded_candidates_last_with_the_reason() -> None:
    """explain() ranks viable candidates first and lists excluded ones last, each with why."""
    router, _ = make_router(strategy="cost", max_cost_usd="0.03")
    route_plan = router.explain("a fox", model="flux-dev", loras=[{"source": "x/y"}])
    assert isinstance(route_plan, RoutePlan)
    assert route_plan.strategy == "cost"
    assert [(c.provider, c.excluded) for c in route_plan.candidates] == [
        ("c", None),
        ("b", None),
        ("a", "lacks lora"),
    ]


def test_explain_reports_estimates_and_health() -> None:
    """Each candidate carries its estimated cost, estimated p95 and a health summary."""
    router, _ = make_router(strategy="cost")
    route_plan = router.explain("a fox", model="flux-dev", num_outputs=2)
    first = route_plan.candidates[0]
    assert first.estimated_cost_usd == Decimal("0.02")
    assert first.estimated_p95_s is None
    assert first.health.startswith("closed")


def test_explain_excludes_by_the_request_cost_cap() -> None:
    """A request's max_cost_usd shows in explain() as the exclusion reason."""
    router, _ = make_router(strategy="cost")
    route_plan = router.explain("a fox", model="flux-dev", max_cost_usd="0.03")
    assert route_plan.candidates[-1].excluded == "estimated cost 0.05 > max_cost_usd 0.03"


def test_explain_is_side_effect_free() -> None:
    """explain() submits nothing and returns the same plan when called again."""
    router, backends = make_router(strategy="weighted", weights={"a": 3, "b": 1, "c": 1})
    first = router.explain("a fox", model="flux-dev")
    second = router.explain("a fox", model="flux-dev")
    assert first == second
    assert all(b.submit_count == 0 for b in backends.values())


async def test_explain_does_not_advance_the_weighted_round_robin() -> None:
    """Calling explain() between requests leaves the weighted sequence unchanged."""
    router, _ = make_router(strategy="weighted", weights={"a": 3, "b": 1}, fallback={"enabled": False})
    leaders = []
    for _ in range(4):
        router.explain("a fox", model="flux-dev", providers=["a", "b"])
        result = await router.generate("a fox", model="flux-dev", providers=["a", "b"])
        leaders.append(result.provider)
    assert leaders == ["a", "a", "b", "a"]


async def test_explain_predicts_the_next_weighted_pick() -> None:
    """explain() shows the provider the next weighted request will lead with."""
    router, _ = make_router(strategy="weighted", weights={"a": 3, "b": 1}, fallback={"enabled": False})
    only_ab = {"model": "flux-dev", "providers": ["a", "b"]}
    await router.generate("a fox", **only_ab)
    await router.generate("a fox", **only_ab)
    predicted = router.explain("a fox", **only_ab).candidates[0].provider
    actual = (await router.generate("a fox", **only_ab)).provider
    assert predicted == actual == "b"


def test_explain_says_when_panic_mode_applies() -> None:
    """With every circuit open explain() names the provider tried in panic mode."""
    router, _ = make_router()
    now = router.clock.now()
    for i, d in enumerate(router.deployments("flux-dev")):
        router.state.health(d.key).record_failure(now, failure_threshold=1, cooldown_s=30 + i)
    route_plan = router.explain("a fox", model="flux-dev")
    assert [c.provider for c in route_plan.viable] == ["a"]
    assert any("panic mode" in note for note in route_plan.notes)


def test_explain_accepts_a_request_object() -> None:
    """explain() takes a GenerationRequest as well as keyword fields."""
    router, _ = make_router()
    by_object = router.explain(GenerationRequest(model="flux-dev", prompt="a fox"))
    by_kwargs = router.explain(model="flux-dev", prompt="a fox")
    assert by_object == by_kwargs


def test_deployments_lists_each_provider_serving_a_model() -> None:
    """router.deployments(model) lists one deployment per configured provider, in config order."""
    router, _ = make_router()
    assert [d.provider for d in router.deployments("flux-dev")] == ["a", "b", "c"]
    assert router.deployments("flux-dev")[0].limits == Limits()
