"""One alias, several deployments on one provider (``variants:``), and the image-taking kinds (issue 12)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fakes.fal import FakeFal
from fakes.recording import RECEIVED, RecordingBackend
from fakes.server import LoopbackServer
from genrouter import AsyncRouter, InvalidRequestError
from genrouter.testing import set_testing
from loopback import install_fal

FAL_KEY = "fal-key-variants-0123456"
IMAGE = "https://example.invalid/in.png"
PRICE = {"per_image": "0.01"}


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    fake = install_fal(fal_server, api_key=FAL_KEY)
    set_testing()
    return fake


def fal_router(server: LoopbackServer, **section: object) -> AsyncRouter:
    providers = {"fal": {"api_key": FAL_KEY, "base_url": server.url, **section}}
    return AsyncRouter.from_config({"version": 1, "providers": providers})


async def test_fal_flux_dev_with_an_image_goes_to_its_image_to_image_endpoint(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """flux-dev with an image runs on fal-ai/flux/dev/image-to-image with image_url and strength."""
    async with fal_router(fal_server) as router:
        result = await router.generate("a red fox", model="flux-dev", image=IMAGE, strength=0.6, seed=2)
    (job,) = fal.jobs.values()
    assert job.endpoint == "fal-ai/flux/dev/image-to-image"
    assert (job.input["prompt"], job.input["image_url"], job.input["strength"]) == ("a red fox", IMAGE, 0.6)
    assert result.endpoint == "fal-ai/flux/dev/image-to-image"


async def test_fal_flux_dev_without_an_image_stays_on_text_to_image(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """The same alias without an image runs on fal-ai/flux/dev."""
    async with fal_router(fal_server) as router:
        result = await router.generate("a red fox", model="flux-dev", seed=2)
    assert result.endpoint == "fal-ai/flux/dev"
    assert "image_url" not in next(iter(fal.jobs.values())).input


async def test_a_variant_is_priced_by_its_own_price(fal_server: LoopbackServer, fal: FakeFal) -> None:
    """The image-to-image variant bills $0.03 per fal megapixel (1024x1024 pixels) rounded up."""
    async with fal_router(fal_server) as router:
        result = await router.generate("a red fox", model="flux-dev", image=IMAGE, width=1024, height=1024)
    assert result.cost.amount_usd == Decimal("0.03")


def test_explain_shows_the_other_variant_excluded_for_lack_of_a_capability(
    fal_server: LoopbackServer,
) -> None:
    """For a text request, explain() lists the image-to-image endpoint as lacking text-to-image."""
    router = fal_router(fal_server)
    plan = router.explain(model="flux-dev", prompt="a red fox")
    by_endpoint = {c.endpoint: c.excluded for c in plan.candidates}
    assert by_endpoint["fal-ai/flux/dev"] is None
    assert by_endpoint["fal-ai/flux/dev/image-to-image"] == "lacks text-to-image"


async def test_user_declared_variants_inherit_and_merge_params() -> None:
    """An inline entry's variant keeps the parent's keys and merges its params over the parent's."""
    RECEIVED.clear()
    entry = {
        "endpoint": "t2i",
        "price": PRICE,
        "capabilities": ["text-to-image"],
        "params": {"prompt": "text"},
        "variants": [{"endpoint": "i2i", "capabilities": ["image-to-image"], "params": {"image": "init"}}],
    }
    config = {"version": 1, "providers": {"mine": {"type": "custom", "models": {"my-model": entry}}}}
    async with AsyncRouter.from_config(config, backends={"mine": RecordingBackend(name="mine")}) as router:
        await router.generate("a red fox", model="my-model")
        await router.generate("a red fox", model="my-model", image=IMAGE)
    assert [r["endpoint"] for r in RECEIVED] == ["t2i", "i2i"]
    assert RECEIVED[1]["input"]["text"] == "a red fox"
    assert RECEIVED[1]["input"]["init"] == IMAGE


@pytest.mark.parametrize("kind", ["upscale", "remove-background"])
async def test_image_kinds_route_a_request_with_an_image(kind: str) -> None:
    """An upscale or remove-background model serves a request that carries an image."""
    RECEIVED.clear()
    models = {"my-tool": {"endpoint": "tool", "kind": kind, "price": PRICE, "params": {"prompt": None}}}
    config = {"version": 1, "providers": {"mine": {"type": "custom", "models": models}}}
    async with AsyncRouter.from_config(config, backends={"mine": RecordingBackend(name="mine")}) as router:
        result = await router.generate("upscale this", model="my-tool", image=IMAGE)
        (deployment,) = router.deployments("my-tool")
    assert RECEIVED[0]["input"]["image"] == IMAGE
    assert "prompt" not in RECEIVED[0]["input"]
    assert [c.value for c in deployment.capabilities] == [kind]
    assert len(result.outputs) == 1


@pytest.mark.parametrize("kind", ["upscale", "remove-background"])
async def test_image_kinds_without_an_image_are_invalid(kind: str) -> None:
    """Asking an upscaler or background remover without an image is an InvalidRequestError naming image."""
    models = {"my-tool": {"endpoint": "tool", "kind": kind, "price": PRICE}}
    config = {"version": 1, "providers": {"mine": {"type": "custom", "models": models}}}
    async with AsyncRouter.from_config(config, backends={"mine": RecordingBackend(name="mine")}) as router:
        with pytest.raises(InvalidRequestError, match="needs an image") as caught:
            await router.generate("x", model="my-tool")
    assert caught.value.field == "image"


async def test_a_fal_upscaler_sends_the_image_and_no_prompt(fal_server: LoopbackServer, fal: FakeFal) -> None:
    """A fal upscale entry mapping prompt to null sends the image and no prompt, without a warning."""
    models = {
        "my-upscaler": {
            "endpoint": "fal-ai/esrgan",
            "kind": "upscale",
            "params": {"prompt": None, "image": "image_url"},
            "price": PRICE,
        }
    }
    async with fal_router(fal_server, models=models) as router:
        result = await router.generate("x", model="my-upscaler", image=IMAGE)
    (job,) = fal.jobs.values()
    assert job.input["image_url"] == IMAGE
    assert "prompt" not in job.input
    assert not any("prompt" in w for w in result.warnings)
