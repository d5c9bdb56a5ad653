"""Media inputs on a shared video alias, as a user sends them (README "Media inputs and
uploads", "A catalog users recognise"): a first frame too large to inline fails over from
fal to Replicate uploaded once to each, and comes back a video; content genrouter cannot
identify is still uploaded (as ``application/octet-stream``), never refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fakes.fal import Behaviour, FakeFal
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer
from genrouter import AsyncRouter
from genrouter.testing import set_testing
from genrouter.types import ArtifactKind
from genrouter.util._png import placeholder_png

FAL_KEY = "fal-key-video-media-0001"
FRAME = placeholder_png(64, 64, 3) + bytes(400_000)  # a PNG over the 256 KiB inline limit


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


def both(fal_server: LoopbackServer, replicate_server: LoopbackServer) -> dict[str, Any]:
    return {
        "version": 1,
        "providers": {
            "fal": {"api_key": FAL_KEY, "base_url": fal_server.url, "rest_url": fal_server.url},
            "replicate": {"api_token": TOKEN, "base_url": replicate_server.url},
        },
        "routing": {"default": {"strategy": "priority", "order": ["fal", "replicate"]}},
    }


async def test_an_image_to_video_request_fails_over_with_its_uploaded_first_frame(
    fal_server: LoopbackServer, replicate_server: LoopbackServer, fal: FakeFal, replicate: FakeReplicate
) -> None:
    """kling-2.5-turbo with a large first frame: fal 503s after one upload; Replicate gets its own."""
    fal.behaviour = Behaviour(submit_status=503)
    async with AsyncRouter.from_config(both(fal_server, replicate_server)) as router:
        result = await router.generate("the boat sails off", model="kling-2.5-turbo", image=FRAME)
    assert (result.provider, result.endpoint) == ("replicate", "kwaivgi/kling-v2.5-turbo-pro")
    assert [a.provider for a in result.attempts].count("fal") >= 2  # retried on fal first
    assert len(fal.uploads) == 1  # one upload reused by every fal attempt
    assert [data for _, _, data in replicate.uploads] == [FRAME]
    (create,) = replicate.creates
    sent = create.json()["input"]
    assert sent["start_image"].startswith(replicate_server.url + "/v1/files/")
    assert len(create.body) < 2_000  # the frame travels as a URL, not inline
    assert [a.kind for a in result.outputs] == [ArtifactKind.VIDEO]


async def test_the_fal_image_to_video_variant_gets_the_uploaded_frame_url(
    fal_server: LoopbackServer, replicate_server: LoopbackServer, fal: FakeFal, replicate: FakeReplicate
) -> None:
    """With fal up, the same request runs on fal's image-to-video endpoint with the storage URL."""
    async with AsyncRouter.from_config(both(fal_server, replicate_server)) as router:
        result = await router.generate("the boat sails off", model="kling-2.5-turbo", image=FRAME)
    (job,) = fal.jobs.values()
    assert job.endpoint.endswith("image-to-video")
    (stored, _, _) = fal.uploads[0]
    assert any(str(v).endswith(stored) for v in job.input.values())
    assert [a.kind for a in result.outputs] == [ArtifactKind.VIDEO]
    assert replicate.creates == []


async def test_bytes_of_unknown_content_are_uploaded_as_octet_stream(
    fal_server: LoopbackServer,
    replicate_server: LoopbackServer,
    fal: FakeFal,
    replicate: FakeReplicate,
    tmp_path: Path,
) -> None:
    """Content with no known magic and no known suffix goes up as application/octet-stream."""
    odd = tmp_path / "frame.raw1"
    odd.write_bytes(b"\x00\x00\x00\x1cODD!" + bytes(300_000))
    config = both(fal_server, replicate_server)
    config["routing"]["default"]["order"] = ["replicate", "fal"]
    async with AsyncRouter.from_config(config) as router:
        await router.generate("the boat sails off", model="kling-2.5-turbo", image=odd)
    ((name, content_type, data),) = replicate.uploads
    assert content_type == "application/octet-stream"
    assert data == odd.read_bytes()
    assert name == "frame.raw1"
