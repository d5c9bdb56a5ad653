"""The shipped entries that take several images (``images=[..]``): reference images and first/last frames.

README "Inputs" / issue 14 item 1: ``images`` is mapped per catalog entry, to one list input
(``image_urls``, ``input_images``) or to one input per image (first frame, last frame).
Parametrised over every shipped fal and Replicate deployment whose mapping places
``images``, so an entry that gains such a mapping is covered without touching this file:
two images go through the public API to that deployment, and the provider must receive
both under its own input names.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from fakes.fal import Behaviour, FakeFal
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer
from genrouter import AsyncRouter
from genrouter.backends._params import media_targets
from genrouter.catalog import Catalog, Deployment, build_deployment
from genrouter.testing import set_testing
from genrouter.types import AttemptOutcome
from genrouter.util._png import placeholder_png

FAL_KEY = "fal-key-shipped-images-01"
FIRST = "https://example.test/first.png"
LAST = "https://example.test/last.png"
PNG = placeholder_png(8, 8, 5)
PROMPT = "the tide comes in"


def _mapping_images(ptype: str) -> list[Any]:
    catalog = Catalog.load()
    out = []
    for model, entry in catalog.entries_for(ptype).items():
        for each in entry.expanded():
            deployment = build_deployment(
                provider=ptype, provider_type=ptype, model=model, entry=each, spec=catalog.models.get(model)
            )
            if media_targets(deployment.params.get("images")):
                out.append(pytest.param(deployment, id=f"{model}@{deployment.endpoint}"))
    return out


def _check_images(deployment: Deployment, sent: dict[str, Any]) -> None:
    """Both images arrived under the entry's input names: one list, or first and last frame."""
    targets = media_targets(deployment.params.get("images"))
    if len(targets) == 1:
        assert sent[targets[0]] == [FIRST, LAST]
    else:
        assert (sent[targets[0]], sent[targets[1]]) == (FIRST, LAST)


async def _generate_with_two_images(config: dict[str, Any], deployment: Deployment) -> Any:
    async with AsyncRouter.from_config(config) as router:
        result = await router.generate(
            PROMPT, model=deployment.model, images=[FIRST, LAST], providers=[deployment.provider]
        )
    assert result.endpoint == deployment.endpoint, "routed to another deployment of the model"
    assert not any("images" in warning for warning in result.warnings), result.warnings
    return result


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    fake = FakeFal(api_key=FAL_KEY, behaviour=Behaviour(queue_polls=0, progress_polls=0))
    fal_server.handler = fake
    set_testing()
    return fake


@pytest.fixture
def replicate(replicate_server: LoopbackServer) -> FakeReplicate:
    fake = FakeReplicate()
    replicate_server.handler = fake
    set_testing()
    return fake


def _fal_only(fal_server: LoopbackServer) -> dict[str, Any]:
    return {"version": 1, "providers": {"fal": {"api_key": FAL_KEY, "base_url": fal_server.url}}}


def _replicate_only(replicate_server: LoopbackServer) -> dict[str, Any]:
    return {"version": 1, "providers": {"replicate": {"api_token": TOKEN, "base_url": replicate_server.url}}}


def test_the_shipped_catalogs_map_images_for_edits_and_first_last_frames() -> None:
    """Both hosted catalogs ship entries that take several images, including a first/last-frame video."""
    for ptype in ("fal", "replicate"):
        deployments = [p.values[0] for p in _mapping_images(ptype)]
        kinds = {(d.kind, len(media_targets(d.params.get("images")))) for d in deployments}
        assert ("image", 1) in kinds, ptype  # reference images as one list input
        assert ("video", 2) in kinds, ptype  # first and last frame


@pytest.mark.parametrize("deployment", _mapping_images("fal"))
async def test_every_fal_entry_mapping_images_sends_both(
    deployment: Deployment, fal: FakeFal, fal_server: LoopbackServer
) -> None:
    """fal receives two images under the entry's names (``image_urls``, or first and tail/end frame)."""
    await _generate_with_two_images(_fal_only(fal_server), deployment)
    job = fal.job_for(PROMPT)
    assert job.endpoint == deployment.endpoint
    _check_images(deployment, job.input)


@pytest.mark.parametrize("deployment", _mapping_images("replicate"))
async def test_every_replicate_entry_mapping_images_sends_both(
    deployment: Deployment, replicate: FakeReplicate, replicate_server: LoopbackServer
) -> None:
    """Replicate receives two images under the model's names (``input_images``, or first and last frame)."""
    await _generate_with_two_images(_replicate_only(replicate_server), deployment)
    (create,) = replicate.creates
    _check_images(deployment, create.json()["input"])


async def test_an_image_and_images_share_a_list_input_image_first(
    fal: FakeFal, fal_server: LoopbackServer
) -> None:
    """seedream-4 editing with ``image`` and ``images``: fal gets one ``image_urls`` list, the image first."""
    async with AsyncRouter.from_config(_fal_only(fal_server)) as router:
        await router.generate(PROMPT, model="seedream-4", image=FIRST, images=[LAST])
    assert fal.job_for(PROMPT).input["image_urls"] == [FIRST, LAST]


async def test_an_image_clashing_with_the_first_frame_is_warned(
    fal: FakeFal, fal_server: LoopbackServer
) -> None:
    """hailuo-02 given ``image`` and ``images``: images[0] is the first frame, and the result says so."""
    async with AsyncRouter.from_config(_fal_only(fal_server)) as router:
        result = await router.generate(PROMPT, model="hailuo-02", image=LAST, images=[FIRST, LAST])
    sent = fal.job_for(PROMPT).input
    assert (sent["image_url"], sent["end_image_url"]) == (FIRST, LAST)
    assert any("images[0] was sent" in warning for warning in result.warnings)


async def test_a_first_last_frame_video_fails_over_from_fal_to_replicate_with_both_frames(
    fal: FakeFal, fal_server: LoopbackServer, replicate: FakeReplicate, replicate_server: LoopbackServer
) -> None:
    """hailuo-02 with images=[first, last], refused by fal (503), reaches Replicate with both frames."""
    fal.behaviour = Behaviour(submit_status=503)
    config = {
        "version": 1,
        "providers": {**_fal_only(fal_server)["providers"], **_replicate_only(replicate_server)["providers"]},
        "routing": {"default": {"strategy": "priority", "order": ["fal", "replicate"]}},
    }
    async with AsyncRouter.from_config(config) as router:
        result = await router.generate(PROMPT, model="hailuo-02", images=[FIRST, PNG])
    tried = [a.provider for a in result.attempts]
    assert (tried[0], tried[-1]) == ("fal", "replicate")  # fal (retried), then the fallback
    assert all(a.outcome is AttemptOutcome.FAILED for a in result.attempts if a.provider == "fal")
    assert (result.provider, result.endpoint) == ("replicate", "minimax/hailuo-02")
    assert result.outputs[0].kind.value == "video"
    (create,) = replicate.creates
    sent = create.json()["input"]
    assert sent["first_frame_image"] == FIRST
    assert sent["last_frame_image"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
