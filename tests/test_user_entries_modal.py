"""A user-declared Modal entry works through the router (issue 12, item 1), on the real service in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from genrouter import AsyncRouter
from genrouter.backends.modal import ModalBackend
from genrouter.testing import InProcessModalTransport

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]


@pytest.fixture
async def transport() -> AsyncIterator[InProcessModalTransport]:
    made = InProcessModalTransport.from_service_file(models=("sdxl",))
    yield made
    await made.aclose()


async def test_modal_minimal_inline_entry_sends_prompt_size_seed_and_count(
    transport: InProcessModalTransport,
) -> None:
    """The Modal class gets prompt, width, height, seed and num_outputs from {endpoint, price}."""
    section = {"app": "genrouter-diffusion", "cls": "Diffusion"}
    models = {"my-sdxl": {"endpoint": "sdxl", "price": {"per_gpu_second": "0.001097"}}}
    config = {"version": 1, "providers": {"gpu": {"type": "modal", **section, "models": models}}}
    backend = ModalBackend(name="gpu", settings={**section, "models": models}, transport=transport)
    async with AsyncRouter.from_config(config, backends={"gpu": backend}) as router:
        result = await router.generate(
            "a red fox", model="my-sdxl", width=64, height=64, seed=9, num_outputs=2
        )
    model_id, sent = transport.spawned[-1]
    assert model_id == "sdxl"
    assert {k: sent[k] for k in ("prompt", "width", "height", "seed", "num_outputs")} == {
        "prompt": "a red fox",
        "width": 64,
        "height": 64,
        "seed": 9,
        "num_outputs": 2,
    }
    assert [(a.width, a.height) for a in result.outputs] == [(64, 64), (64, 64)]
