"""The README's "Adding a model in YAML" catalog works as it says, through the router and the fal fake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakes.fal import FakeFal
from fakes.server import LoopbackServer
from genrouter import AsyncRouter
from genrouter.testing import set_testing
from loopback import install_fal

README = Path(__file__).resolve().parents[1] / "README.md"
FAL_KEY = "fal-key-readme-01234567"
IMAGE = "https://example.invalid/photo.png"


def readme_catalog() -> str:
    """The YAML block after the README's catalog-example marker."""
    text = README.read_text()
    match = re.search(r"<!-- catalog-example -->\n```yaml\n(.*?)```", text, re.S)
    assert match, "README lost its catalog example"
    return match.group(1)


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    fake = install_fal(fal_server, api_key=FAL_KEY)
    set_testing()
    return fake


@pytest.fixture
def router(fal_server: LoopbackServer, tmp_path: Path) -> AsyncRouter:
    path = tmp_path / "my-models.yaml"
    path.write_text(readme_catalog())
    config = {
        "version": 1,
        "providers": {"fal": {"api_key": FAL_KEY, "base_url": fal_server.url}},
        "catalogs": [str(path)],
    }
    return AsyncRouter.from_config(config)


async def test_a_size_becomes_the_nearest_allowed_ratio_and_a_duration_snaps(
    router: AsyncRouter, fal: FakeFal
) -> None:
    """my-kling: 1280x720 is sent as aspect_ratio 16:9, 7 s as duration "5", each with a warning."""
    async with router:
        result = await router.generate("a wave", model="my-kling", width=1280, height=720, duration_s=7)
    (job,) = fal.jobs.values()
    assert job.input == {"prompt": "a wave", "aspect_ratio": "16:9", "duration": "5"}
    assert any("1280x720 was sent as 16:9" in w for w in result.warnings)
    assert any("7 became 5" in w for w in result.warnings)
    assert result.outputs[0].duration_s == 5


async def test_an_aspect_ratio_outside_the_list_snaps_with_a_warning(
    router: AsyncRouter, fal: FakeFal
) -> None:
    """my-kling: aspect_ratio 21:9 is sent as 16:9, with a warning."""
    async with router:
        result = await router.generate("a wave", model="my-kling", aspect_ratio="21:9")
    (job,) = fal.jobs.values()
    assert job.input["aspect_ratio"] == "16:9"
    assert any("21:9 became 16:9" in w for w in result.warnings)


async def test_list_wrapped_renamed_and_inverted_inputs(router: AsyncRouter, fal: FakeFal) -> None:
    """my-edit: the image goes in a list, jpeg is sent as jpg, safety_checker true as false."""
    async with router:
        await router.generate(
            "sharper", model="my-edit", image=IMAGE, output_format="jpeg", safety_checker=True
        )
    (job,) = fal.jobs.values()
    assert job.endpoint == "my-org/my-edit-app"
    assert job.input["image_urls"] == [IMAGE]
    assert job.input["output_format"] == "jpg"
    assert job.input["disable_safety_checker"] is False


async def test_the_variant_serves_requests_with_an_image(router: AsyncRouter, fal: FakeFal) -> None:
    """my-flux with an image runs on the image-to-image endpoint; without, on text-to-image."""
    async with router:
        with_image = await router.generate("a fox", model="my-flux", image=IMAGE, strength=0.5)
        without = await router.generate("a fox", model="my-flux")
    assert with_image.endpoint == "fal-ai/flux/dev/image-to-image"
    assert without.endpoint == "fal-ai/flux/dev"
    i2i = next(job for job in fal.jobs.values() if job.endpoint.endswith("image-to-image"))
    assert (i2i.input["image_url"], i2i.input["strength"]) == (IMAGE, 0.5)
