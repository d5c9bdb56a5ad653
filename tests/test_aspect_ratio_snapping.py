"""``aspect_ratio`` snaps to an entry's allowed list, with a warning, on every provider type (issue 12)."""

from __future__ import annotations

from typing import Any

import pytest

from fakes.fal import FakeFal
from fakes.recording import RecordingTransport
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer
from genrouter import AsyncRouter
from genrouter.backends.modal import ModalBackend
from genrouter.testing import set_testing

ALLOWED = {"aspect_ratio": {"to": "aspect_ratio", "allowed": ["1:1", "16:9"]}}
PRICE = {"per_image": "0.01"}
FAL_KEY = "fal-key-ratio-012345678"


def snapped(warnings: list[str]) -> bool:
    return any("aspect_ratio 21:9 became 16:9" in w or "21:9 became 16:9" in w for w in warnings)


async def test_fal_snaps_an_aspect_ratio_to_the_allowed_list(fal_server: LoopbackServer) -> None:
    """fal: 21:9 on an entry allowing 1:1 and 16:9 is sent as 16:9, warned."""
    fake = FakeFal(api_key=FAL_KEY)
    fal_server.handler = fake
    set_testing()
    entry = {"endpoint": "my-org/video-app", "kind": "video", "price": PRICE, "params": ALLOWED}
    providers = {"fal": {"api_key": FAL_KEY, "base_url": fal_server.url, "models": {"my-video": entry}}}
    async with AsyncRouter.from_config({"version": 1, "providers": providers}) as router:
        result = await router.generate("waves", model="my-video", aspect_ratio="21:9")
    (job,) = fake.jobs.values()
    assert job.input["aspect_ratio"] == "16:9"
    assert snapped(result.warnings)


async def test_replicate_snaps_an_aspect_ratio_to_the_allowed_list(replicate_server: LoopbackServer) -> None:
    """Replicate: the entry's allowed list replaces FLUX's, 21:9 is sent as 16:9, warned."""
    fake = FakeReplicate()
    replicate_server.handler = fake
    set_testing()
    entry = {"endpoint": "acme/model", "price": PRICE, "params": ALLOWED}
    section = {"api_token": TOKEN, "base_url": replicate_server.url, "models": {"my-model": entry}}
    async with AsyncRouter.from_config({"version": 1, "providers": {"replicate": section}}) as router:
        result = await router.generate("waves", model="my-model", aspect_ratio="21:9")
    assert fake.creates[0].json()["input"]["aspect_ratio"] == "16:9"
    assert any("nearest, 16:9" in w or "became 16:9" in w for w in result.warnings)


async def test_modal_sizes_a_snapped_aspect_ratio() -> None:
    """Modal: 21:9 on an entry allowing 1:1 and 16:9 is made at 16:9 (as width and height), warned."""
    transport = RecordingTransport()
    section = {"app": "a", "cls": "C"}
    entry = {
        "endpoint": "sdxl",
        "price": {"per_gpu_second": "0.001"},
        "limits": {"default_size": [1024, 1024], "max_outputs_per_call": 1},
        "params": ALLOWED,
    }
    backend = ModalBackend(name="gpu", settings=section, transport=transport)  # type: ignore[arg-type]
    config: dict[str, Any] = {
        "version": 1,
        "providers": {"gpu": {"type": "modal", **section, "models": {"m": entry}}},
    }
    async with AsyncRouter.from_config(config, backends={"gpu": backend}) as router:
        result = await router.generate("waves", model="m", aspect_ratio="21:9")
    _, payload = transport.spawned[0]
    assert payload["width"] / payload["height"] == pytest.approx(16 / 9, rel=0.01)
    assert snapped(result.warnings)


async def test_simulated_sizes_a_snapped_aspect_ratio() -> None:
    """simulated: 21:9 on an entry allowing 1:1 and 16:9 makes a 16:9 output, warned."""
    entry = {"endpoint": "x", "price": PRICE, "params": ALLOWED, "limits": {"default_size": [160, 90]}}
    config = {"version": 1, "providers": {"sim": {"type": "simulated", "latency": 0, "models": {"m": entry}}}}
    async with AsyncRouter.from_config(config) as router:
        result = await router.generate("waves", model="m", aspect_ratio="21:9")
    (image,) = result.outputs
    assert (image.width, image.height) == (160, 90)
    assert snapped(result.warnings)
