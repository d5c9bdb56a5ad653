"""The routed result is a complete, valid ``GenerationResult`` built from the backend's."""

from __future__ import annotations

from genrouter import Artifact, AsyncRouter, GenerationRequest, GenerationResult
from genrouter.testing import FunctionBackend

CONFIG = {
    "version": 1,
    "providers": {
        "a": {
            "type": "custom",
            "models": {"flux-dev": {"endpoint": "a/flux-dev", "price": {"per_image": "0.01"}}},
        }
    },
}
ARTIFACT = Artifact(url="https://example.invalid/out.png", content_type="image/png")


async def test_routed_result_keeps_backend_fields_and_validates() -> None:
    """Fields the backend set survive routing, and the result round-trips through validation."""

    async def fn(request: GenerationRequest) -> GenerationResult:
        return GenerationResult(
            id="", model="x", provider="a", endpoint="a/flux-dev", outputs=[ARTIFACT], seed=7, warnings=["w"]
        )

    async with AsyncRouter.from_config(CONFIG, backends={"a": FunctionBackend(fn, name="a")}) as router:
        result = await router.generate(model="flux-dev", prompt="a fox")
    assert (result.seed, result.outputs, result.provider, result.model) == (7, [ARTIFACT], "a", "flux-dev")
    assert "w" in result.warnings
    assert result.id
    assert GenerationResult.model_validate(result.model_dump()) == result
    assert {"seed", "id", "attempts", "cost"} <= result.model_fields_set
