"""Passthrough with media inputs (README "Passthrough": ``fal:fal-ai/flux-pro/kontext``, an
editing endpoint): the image reaches the endpoint under the provider's usual input name."""

from __future__ import annotations

from typing import Any

import pytest

from fakes.fal import FakeFal
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer
from genrouter import AsyncRouter
from genrouter.testing import set_testing
from genrouter.util._png import placeholder_png

FAL_KEY = "fal-key-passthrough-media-01"
PNG = placeholder_png(8, 8, 4)
URL = "https://example.test/cat.png"


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    fake = FakeFal(api_key=FAL_KEY)
    fal_server.handler = fake
    set_testing()
    return fake


@pytest.fixture
def replicate(replicate_server: LoopbackServer) -> FakeReplicate:
    fake = FakeReplicate()
    replicate_server.handler = fake
    set_testing()
    return fake


def config(fal_server: LoopbackServer, replicate_server: LoopbackServer) -> dict[str, Any]:
    return {
        "version": 1,
        "providers": {
            "fal": {"api_key": FAL_KEY, "base_url": fal_server.url},
            "replicate": {"api_token": TOKEN, "base_url": replicate_server.url},
        },
    }


async def test_a_fal_passthrough_sends_image_as_image_url(
    fal_server: LoopbackServer, replicate_server: LoopbackServer, fal: FakeFal, replicate: FakeReplicate
) -> None:
    """``fal:fal-ai/flux-pro/kontext`` with an image sends it as ``image_url``, with no warning about it."""
    async with AsyncRouter.from_config(config(fal_server, replicate_server)) as router:
        result = await router.generate("make the cat blue", model="fal:fal-ai/flux-pro/kontext", image=URL)
    (job,) = fal.jobs.values()
    assert job.input["image_url"] == URL
    assert not [w for w in result.warnings if "image" in w]


async def test_a_fal_passthrough_sends_images_as_image_urls_and_bytes_as_data_urls(
    fal_server: LoopbackServer, replicate_server: LoopbackServer, fal: FakeFal, replicate: FakeReplicate
) -> None:
    """``images`` go to fal as the ``image_urls`` list; small bytes are inlined as ``data:`` URLs."""
    async with AsyncRouter.from_config(config(fal_server, replicate_server)) as router:
        await router.generate("merge them", model="fal:fal-ai/flux-2/edit", images=[URL, PNG])
    (job,) = fal.jobs.values()
    first, second = job.input["image_urls"]
    assert first == URL
    assert second.startswith("data:image/png;base64,")


async def test_a_replicate_passthrough_sends_image_and_mask_under_their_names(
    fal_server: LoopbackServer, replicate_server: LoopbackServer, fal: FakeFal, replicate: FakeReplicate
) -> None:
    """``replicate:<model>`` with an image and a mask creates the prediction with ``image`` and ``mask``."""
    async with AsyncRouter.from_config(config(fal_server, replicate_server)) as router:
        await router.generate(
            "fill it", model="replicate:stability-ai/stable-diffusion-inpainting", image=URL, mask=URL
        )
    (create,) = replicate.creates
    sent = create.json()["input"]
    assert (sent["image"], sent["mask"]) == (URL, URL)
