"""Estimated vs actual cost: fal's x-fal-billable-units, Replicate's metrics.predict_time for
per-second prices, fal's per-megapixel rounding, and both figures on results and hooks.
Through AsyncRouter against the loopback fakes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from fakes.fal import Behaviour, FakeFal
from fakes.replicate import SDXL_VERSION, TOKEN, FakeReplicate, Plan
from fakes.server import LoopbackServer
from genrouter import Artifact, AsyncRouter, Cost, GenerationRequest, GenerationResult
from genrouter.observability import MetricsHook
from genrouter.testing import FakeClock, FunctionBackend, set_testing
from loopback import Routers, fal_section

Build = Callable[..., AsyncRouter]


class Recorder:
    """A metrics hook that keeps every result it is shown."""

    def __init__(self) -> None:
        self.results: list[GenerationResult] = []

    def on_attempt(self, attempt: Any, *, model: str, request: GenerationRequest) -> None:
        return None

    def on_result(
        self,
        result: GenerationResult | None,
        error: BaseException | None,
        *,
        model: str,
        request: GenerationRequest,
        latency_s: float,
    ) -> None:
        if result is not None:
            self.results.append(result)


@pytest.fixture
def make(routers: Routers) -> Build:
    set_testing()

    def build(providers: dict[str, Any], hooks: list[MetricsHook] | None = None) -> AsyncRouter:
        return routers({"version": 1, "providers": providers}, clock=FakeClock(), hooks=hooks or [])

    return build


def fal_only(server: LoopbackServer) -> dict[str, Any]:
    return {"fal": fal_section(server)}


async def test_fal_billable_units_set_the_actual_cost(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """x-fal-billable-units × the unit price is the cost, not estimated, and the basis names the units."""
    fal.behaviour = Behaviour(queue_polls=0, progress_polls=0, billable_units="3")
    result = await make(fal_only(fal_server)).generate("a fox", model="flux-dev", width=1024, height=1024)
    assert result.cost.amount_usd == Decimal("0.075")
    assert result.cost.estimated is False
    assert "x-fal-billable-units" in (result.cost.basis or "")
    assert result.actual_cost_usd == Decimal("0.075")
    assert result.estimated_cost_usd == Decimal("0.025")


async def test_without_billable_units_fal_cost_is_estimated_from_outputs(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """No header: the router prices the outputs, and says the cost is an estimate."""
    result = await make(fal_only(fal_server)).generate("a fox", model="flux-dev", width=1024, height=1024)
    assert (result.cost.amount_usd, result.cost.estimated) == (Decimal("0.025"), True)
    assert result.actual_cost_usd is None


async def test_fal_per_megapixel_estimate_follows_fals_rounding(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """A fal megapixel is 1024×1024, rounded up per image: 1024² is $0.025, 1536×1024 is $0.05."""
    router = make(fal_only(fal_server))
    square = router.explain("a fox", model="flux-dev", width=1024, height=1024)
    wide = router.explain("a fox", model="flux-dev", width=1536, height=1024)
    assert square.candidates[0].estimated_cost_usd == Decimal("0.025")
    assert wide.candidates[0].estimated_cost_usd == Decimal("0.05")


async def test_replicate_per_second_models_cost_predict_time(
    replicate: FakeReplicate, replicate_server: LoopbackServer, make: Build
) -> None:
    """A per-second price: metrics.predict_time × price is the actual cost."""
    entry = {
        "endpoint": f"stability-ai/sdxl:{SDXL_VERSION}",
        "price": {"per_gpu_second": "0.001"},
        "params": {"prompt": "prompt"},
    }
    replicate.default_plan = Plan(predict_time=2.5)
    section = {"replicate": {"api_token": TOKEN, "base_url": replicate_server.url, "models": {"sdxl": entry}}}
    result = await make(section).generate("a fox", model="sdxl")
    assert (result.cost.amount_usd, result.cost.estimated) == (Decimal("0.0025"), False)
    assert "metrics.predict_time" in (result.cost.basis or "")


async def test_replicate_per_output_models_are_priced_from_outputs(
    replicate: FakeReplicate, replicate_server: LoopbackServer, make: Build
) -> None:
    """flux-dev is billed per output: the router prices the outputs (an estimate of the bill)."""
    section = {"replicate": {"api_token": TOKEN, "base_url": replicate_server.url}}
    result = await make(section).generate("a fox", model="flux-dev", num_outputs=2)
    assert (result.cost.amount_usd, result.cost.estimated) == (Decimal("0.05"), True)
    assert result.estimated_cost_usd == Decimal("0.05")


async def test_metrics_hooks_see_estimated_and_actual_cost(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """A hook's result carries the routing estimate and the billed cost side by side."""
    fal.behaviour = Behaviour(queue_polls=0, progress_polls=0, billable_units="2")
    hook = Recorder()
    await make(fal_only(fal_server), hooks=[hook]).generate(
        "a fox", model="flux-dev", width=1024, height=1024
    )
    (seen,) = hook.results
    assert (seen.estimated_cost_usd, seen.actual_cost_usd) == (Decimal("0.025"), Decimal("0.05"))


async def test_a_backend_of_your_own_reports_an_actual_cost() -> None:
    """A custom backend returning Cost(estimated=False) keeps that cost; the estimate sits beside it."""

    async def billed(request: GenerationRequest) -> GenerationResult:
        cost = Cost(amount_usd=Decimal("0.0042"), estimated=False, basis="3.5 GPU-s × $0.0012")
        return GenerationResult(
            id="",
            model="",
            provider="",
            endpoint="",
            outputs=[Artifact(url="https://example.test/a.png")],
            cost=cost,
        )

    source = {
        "version": 1,
        "providers": {
            "gpu": {
                "type": "custom",
                "models": {"flux-dev": {"endpoint": "flux", "price": {"per_image": "0.01"}}},
            }
        },
    }
    async with AsyncRouter.from_config(source, backends={"gpu": FunctionBackend(billed)}) as router:
        result = await router.generate("a fox", model="flux-dev")
    assert (result.cost.amount_usd, result.cost.estimated) == (Decimal("0.0042"), False)
    assert result.estimated_cost_usd == Decimal("0.01")


async def test_the_result_log_line_carries_both_costs(
    fal: FakeFal, fal_server: LoopbackServer, make: Build, caplog: pytest.LogCaptureFixture
) -> None:
    """The INFO "result" record has cost_usd, cost_estimated, estimated_cost_usd and actual_cost_usd."""
    fal.behaviour = Behaviour(queue_polls=0, progress_polls=0, billable_units="1")
    caplog.set_level(logging.INFO, logger="genrouter")
    await make(fal_only(fal_server)).generate("a fox", model="flux-dev", width=1024, height=1024)
    (record,) = [r for r in caplog.records if r.getMessage() == "result"]
    fields = record.genrouter  # type: ignore[attr-defined]
    assert (fields["cost_usd"], fields["cost_estimated"]) == (0.025, False)
    assert (fields["estimated_cost_usd"], fields["actual_cost_usd"]) == (0.025, 0.025)
