"""One completion path: a job's latency means the same whether a lane or result() collects it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from genrouter import AsyncRouter, GenerationRequest, GenerationResult, Timings
from genrouter.testing import FakeClock, FunctionBackend

CONFIG = {
    "version": 1,
    "providers": {
        "a": {
            "type": "custom",
            "models": {"flux-dev": {"endpoint": "a/flux-dev", "price": {"per_image": "0.01"}}},
        },
    },
}


def _reported(
    running_s: float | None,
) -> Callable[[GenerationRequest], Coroutine[Any, Any, GenerationResult]]:
    async def run(request: GenerationRequest) -> GenerationResult:
        return GenerationResult(
            id="",
            model=request.model,
            provider="a",
            endpoint="a/flux-dev",
            outputs=[],
            timings=Timings(running_s=running_s),
        )

    return run


def _p95(router: AsyncRouter) -> float | None:
    return router.explain(model="flux-dev", prompt="a fox").candidates[0].estimated_p95_s


async def test_a_job_collected_late_records_the_providers_own_time_not_the_wait() -> None:
    """result() an hour after submit records the provider's running time (2 s), not the hour."""
    clock = FakeClock()
    async with AsyncRouter.from_config(
        CONFIG, backends={"a": FunctionBackend(_reported(2.0), name="a", eager=True)}, clock=clock
    ) as router:
        handle = await router.submit(model="flux-dev", prompt="a fox")
        clock.advance(3600)
        result = await router.result(handle)
        assert result.provider == "a"
        assert _p95(router) == 2.0


async def test_a_job_collected_late_without_provider_timings_records_the_time_watched() -> None:
    """With no provider timings, result() records how long it watched (here no time at all)."""
    clock = FakeClock()
    async with AsyncRouter.from_config(
        CONFIG, backends={"a": FunctionBackend(_reported(None), name="a", eager=True)}, clock=clock
    ) as router:
        handle = await router.submit(model="flux-dev", prompt="a fox")
        clock.advance(3600)
        await router.result(handle)
        assert _p95(router) == 0.0


async def test_a_lane_records_the_time_from_submit_to_result_queue_included() -> None:
    """generate() records the time it watched the job (5 s on the clock), not the provider's 2 s."""
    clock = FakeClock()

    async def slow(request: GenerationRequest) -> GenerationResult:
        await clock.sleep(5.0)
        return await _reported(2.0)(request)

    async with AsyncRouter.from_config(
        CONFIG, backends={"a": FunctionBackend(slow, name="a", eager=True)}, clock=clock
    ) as router:
        await router.generate(model="flux-dev", prompt="a fox")
        assert _p95(router) == 5.0
