"""User-declared catalog entries work on every provider type (issue 12, item 1).

The contract: an inline ``models:`` entry or a ``catalogs:`` file entry is merged over the
shipped entry for its provider type and model, else over the type's standard mapping, so
the minimal ``{endpoint, price}`` under an alias the shipped catalog does not know still
sends prompt, size, seed and output count under the provider's own input names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fakes.fal import FakeFal
from fakes.recording import RECEIVED, RecordingBackend
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer
from genrouter import AsyncRouter, ConfigError
from genrouter.testing import set_testing
from loopback import install_fal

FAL_KEY = "fal-key-user-entries-0123"
PRICE = {"per_image": "0.025"}


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    fake = install_fal(fal_server, api_key=FAL_KEY)
    set_testing()
    return fake


@pytest.fixture
def replicate(replicate: FakeReplicate) -> FakeReplicate:
    set_testing()
    return replicate


def fal_config(server: LoopbackServer, **section: Any) -> dict[str, Any]:
    return {"version": 1, "providers": {"fal": {"api_key": FAL_KEY, "base_url": server.url, **section}}}


def fal_inputs(fake: FakeFal) -> list[dict[str, Any]]:
    return [job.input for job in fake.jobs.values()]


async def test_fal_minimal_inline_entry_sends_prompt_size_seed_and_count(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """fal gets prompt, image_size, seed and num_images from {endpoint, price} under a new alias."""
    models = {"my-flux": {"endpoint": "fal-ai/flux/dev", "price": PRICE}}
    async with AsyncRouter.from_config(fal_config(fal_server, models=models)) as router:
        result = await router.generate("a red fox", model="my-flux", width=1024, height=768, seed=7)
    (sent,) = fal_inputs(fal)
    assert sent == {"prompt": "a red fox", "image_size": "landscape_4_3", "seed": 7, "num_images": 1}
    assert len(result.outputs) == 1
    assert result.outputs[0].width == 1024


async def test_fal_minimal_entry_sends_the_output_count(fal_server: LoopbackServer, fal: FakeFal) -> None:
    """Two outputs from a minimal fal entry arrive, the count sent as num_images."""
    models = {"my-flux": {"endpoint": "fal-ai/flux/dev", "price": PRICE}}
    async with AsyncRouter.from_config(fal_config(fal_server, models=models)) as router:
        result = await router.generate("a red fox", model="my-flux", num_outputs=2, seed=1)
    assert len(result.outputs) == 2
    assert sum(job["num_images"] for job in fal_inputs(fal)) == 2


async def test_fal_catalog_file_entry_sends_the_standard_mapping(
    fal_server: LoopbackServer, fal: FakeFal, tmp_path: Path
) -> None:
    """A catalogs: file entry for fal gets fal's standard mapping too."""
    path = tmp_path / "mine.yaml"
    catalog = {
        "version": 1,
        "provider": "fal",
        "models": {"my-schnell": {"endpoint": "fal-ai/flux/schnell", "price": PRICE}},
    }
    path.write_text(yaml.safe_dump(catalog))
    config = {**fal_config(fal_server), "catalogs": [str(path)]}
    async with AsyncRouter.from_config(config) as router:
        await router.generate("a red fox", model="my-schnell", width=512, height=512, seed=3)
    (sent,) = fal_inputs(fal)
    assert sent == {"prompt": "a red fox", "image_size": "square", "seed": 3, "num_images": 1}


async def test_fal_catalog_file_for_a_provider_key_inherits_by_type(
    fal_server: LoopbackServer, fal: FakeFal, tmp_path: Path
) -> None:
    """A catalogs: file naming a provider key (fal-eu, type fal) inherits fal's mapping."""
    path = tmp_path / "eu.yaml"
    catalog = {
        "version": 1,
        "provider": "fal-eu",
        "models": {"eu-flux": {"endpoint": "fal-ai/flux/dev", "price": PRICE}},
    }
    path.write_text(yaml.safe_dump(catalog))
    config = {
        "version": 1,
        "providers": {"fal-eu": {"type": "fal", "api_key": FAL_KEY, "base_url": fal_server.url}},
        "catalogs": [str(path)],
    }
    async with AsyncRouter.from_config(config) as router:
        await router.generate("a red fox", model="eu-flux", seed=5)
    (sent,) = fal_inputs(fal)
    assert (sent["prompt"], sent["seed"], sent["num_images"]) == ("a red fox", 5, 1)


async def test_inline_entry_over_a_shipped_model_keeps_its_mapping(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """An inline flux-dev on fal with only a new price keeps the shipped endpoint and mapping."""
    models = {"flux-dev": {"endpoint": "fal-ai/flux/dev", "price": {"per_image": "0.01"}}}
    async with AsyncRouter.from_config(fal_config(fal_server, models=models)) as router:
        result = await router.generate("a red fox", model="flux-dev", steps=20, num_outputs=2)
    (sent,) = fal_inputs(fal)
    assert (sent["num_inference_steps"], sent["num_images"]) == (20, 2)  # shipped limits: 4 per call
    assert str(result.cost.amount_usd) == "0.02"


async def test_replicate_minimal_inline_entry_sends_prompt_size_seed_and_count(
    replicate_server: LoopbackServer, replicate: FakeReplicate
) -> None:
    """Replicate gets prompt, aspect_ratio (its size input), seed and num_outputs."""
    config = {
        "version": 1,
        "providers": {
            "replicate": {
                "api_token": TOKEN,
                "base_url": replicate_server.url,
                "models": {"my-flux": {"endpoint": "acme/my-flux", "price": PRICE}},
            }
        },
    }
    async with AsyncRouter.from_config(config) as router:
        result = await router.generate("a red fox", model="my-flux", width=1344, height=768, seed=7)
    (create,) = replicate.creates
    assert create.path == "/v1/models/acme/my-flux/predictions"
    sent = create.json()["input"]
    assert sent == {"prompt": "a red fox", "aspect_ratio": "16:9", "seed": 7, "num_outputs": 1}
    assert len(result.outputs) == 1


async def test_simulated_minimal_inline_entry_makes_the_requested_outputs() -> None:
    """A simulated provider's {endpoint, price} entry makes outputs of the requested size and seed."""
    config = {
        "version": 1,
        "providers": {
            "sim": {
                "type": "simulated",
                "latency": 0,
                "models": {"my-model": {"endpoint": "x", "price": PRICE}},
            }
        },
    }
    async with AsyncRouter.from_config(config) as router:
        result = await router.generate(
            "a red fox", model="my-model", width=64, height=48, seed=9, num_outputs=2
        )
        (deployment,) = router.deployments("my-model")
    assert [(a.width, a.height) for a in result.outputs] == [(64, 48), (64, 48)]
    assert result.seed == 9
    assert deployment.params["prompt"] == "prompt"


@pytest.mark.parametrize("ptype", ["custom", "fakes.recording:RecordingBackend"])
async def test_custom_and_import_path_entries_get_the_standard_mapping(ptype: str) -> None:
    """custom and import-path providers get genrouter's own names for prompt, size, seed, count."""
    RECEIVED.clear()
    section = {"type": ptype, "models": {"my-model": {"endpoint": "my-endpoint", "price": PRICE}}}
    backends = {"mine": RecordingBackend(name="mine")} if ptype == "custom" else None
    config = {"version": 1, "providers": {"mine": section}}
    async with AsyncRouter.from_config(config, backends=backends) as router:
        result = await router.generate("a red fox", model="my-model", width=64, height=48, seed=9)
    assert RECEIVED == [
        {
            "endpoint": "my-endpoint",
            "input": {"prompt": "a red fox", "width": 64, "height": 48, "seed": 9, "num_outputs": 1},
        }
    ]
    assert len(result.outputs) == 1


async def test_a_custom_entry_params_rename_over_the_standard_mapping() -> None:
    """params on a custom entry rename fields; the rest keep the standard mapping."""
    RECEIVED.clear()
    models = {"my-model": {"endpoint": "e", "price": PRICE, "params": {"prompt": "text"}}}
    config = {"version": 1, "providers": {"mine": {"type": "custom", "models": models}}}
    async with AsyncRouter.from_config(config, backends={"mine": RecordingBackend(name="mine")}) as router:
        await router.generate("a red fox", model="my-model", seed=2)
    assert RECEIVED[0]["input"] == {"text": "a red fox", "seed": 2, "num_outputs": 1}


def test_an_entry_that_cannot_place_the_prompt_is_a_config_error(fal_server: LoopbackServer) -> None:
    """An image model whose mapping sends the prompt nowhere fails at load, naming the entry."""
    models = {"my-flux": {"endpoint": "fal-ai/flux/dev", "price": PRICE, "params": {"prompt": None}}}
    with pytest.raises(ConfigError, match=r"providers\.fal\.models\.my-flux.*takes a prompt"):
        AsyncRouter.from_config(fal_config(fal_server, models=models))


def test_a_catalog_file_entry_that_cannot_place_the_prompt_names_the_file(tmp_path: Path) -> None:
    """The same mistake in a catalogs: file names the file and the model."""
    path = tmp_path / "bad.yaml"
    entry = {"endpoint": "e", "price": PRICE, "params": {"prompt": None}}
    path.write_text(yaml.safe_dump({"version": 1, "provider": "sim", "models": {"bad-model": entry}}))
    config = {
        "version": 1,
        "providers": {"sim": {"type": "simulated", "latency": 0}},
        "catalogs": [str(path)],
    }
    with pytest.raises(ConfigError, match=r"bad\.yaml: models\.bad-model"):
        AsyncRouter.from_config(config)


def test_an_inline_entry_with_another_endpoint_drops_the_shipped_variants(fal_server: LoopbackServer) -> None:
    """Re-pointing fal's flux-dev at another endpoint leaves one deployment: the shipped variants go."""
    models = {"flux-dev": {"endpoint": "my-org/flux-app", "price": PRICE}}
    router = AsyncRouter.from_config(fal_config(fal_server, models=models))
    assert [d.endpoint for d in router.deployments("flux-dev")] == ["my-org/flux-app"]


def test_an_inline_entry_keeping_the_endpoint_keeps_the_shipped_variants(fal_server: LoopbackServer) -> None:
    """A price-only override of fal's flux-dev keeps its image-to-image variant."""
    models = {"flux-dev": {"endpoint": "fal-ai/flux/dev", "price": PRICE}}
    router = AsyncRouter.from_config(fal_config(fal_server, models=models))
    assert [d.endpoint for d in router.deployments("flux-dev")] == [
        "fal-ai/flux/dev",
        "fal-ai/flux/dev/image-to-image",
    ]


async def test_a_catalog_file_entry_under_a_shipped_alias_joins_that_model(
    fal_server: LoopbackServer, fal: FakeFal, tmp_path: Path
) -> None:
    """A catalogs: entry named flux.1-dev (an alias of flux-dev) overrides flux-dev, not a new model."""
    path = tmp_path / "alias.yaml"
    entry = {"endpoint": "fal-ai/flux/dev", "price": {"per_image": "0.01"}}
    path.write_text(yaml.safe_dump({"version": 1, "provider": "fal", "models": {"flux.1-dev": entry}}))
    config = {**fal_config(fal_server), "catalogs": [str(path)]}
    async with AsyncRouter.from_config(config) as router:
        result = await router.generate("a red fox", model="flux-dev", steps=12)
    assert str(result.cost.amount_usd) == "0.01"
    (sent,) = fal_inputs(fal)
    assert sent["num_inference_steps"] == 12
