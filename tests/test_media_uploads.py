"""Media inputs at the provider edge: inline up to inline_max_bytes, uploaded above it (once per
content and provider), the ``images`` list field, and the per-provider size cap. Driven
through AsyncRouter against loopback fakes of fal's storage and queue APIs and Replicate's
files and predictions APIs (real HTTP)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.fal import DEFAULT_KEY, Behaviour, FakeFal
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer
from genrouter import AllProvidersFailedError, AsyncRouter, DeadlineExceededError, InvalidRequestError
from genrouter.engine._clock import MonotonicClock
from genrouter.testing import FakeClock, set_testing
from loopback import Routers

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BIG_PNG = PNG_MAGIC + hashlib.sha256(b"seed").digest() * (5 * 1024 * 1024 // 32)  # a 5 MB "PNG"
SMALL_PNG = PNG_MAGIC + b"\x00" * 1024

BASE_PARAMS = {"prompt": "prompt", "num_outputs": "num_images", "seed": "seed"}
FAL_EDIT = {
    "endpoint": "fal-ai/flux/dev/image-to-image",
    "capabilities": ["text-to-image", "image-to-image"],
    "price": {"per_megapixel": "0.025"},
    "params": {**BASE_PARAMS, "image": "image_url"},
}

Build = Callable[..., AsyncRouter]


@pytest.fixture
def replicate(replicate_server: LoopbackServer) -> Iterator[FakeReplicate]:
    fake = FakeReplicate()
    replicate_server.handler = fake
    yield fake
    assert fake.leaked_auth == []


def config(
    fal_url: str,
    replicate_url: str | None = None,
    *,
    fal: dict[str, Any] | None = None,
    entry: dict[str, Any] | None = None,
    **policy: Any,
) -> dict[str, Any]:
    """fal (on its fake, REST host included) first, then Replicate when given."""
    providers: dict[str, Any] = {
        "fal": {
            "api_key": DEFAULT_KEY,
            "base_url": fal_url,
            "rest_url": fal_url,
            "models": {"flux-dev": entry or FAL_EDIT},
            **(fal or {}),
        }
    }
    order = ["fal"]
    if replicate_url is not None:
        providers["replicate"] = {"api_token": TOKEN, "base_url": replicate_url}
        order.append("replicate")
    return {
        "version": 1,
        "providers": providers,
        "routing": {"default": {"strategy": "priority", "order": order, **policy}},
    }


@pytest.fixture
def make(routers: Routers) -> Build:
    set_testing()

    def build(source: dict[str, Any]) -> AsyncRouter:
        return routers(source, clock=FakeClock())

    return build


def fal_submits(server: LoopbackServer) -> list[Any]:
    return [r for r in server.requests if r.method == "POST" and r.path.startswith("/fal-ai/")]


def replicate_creates(fake: FakeReplicate) -> list[Any]:
    return fake.creates


async def test_a_5mb_png_is_uploaded_once_per_provider_across_a_retry_and_a_fallback(
    fal: FakeFal,
    replicate: FakeReplicate,
    fal_server: LoopbackServer,
    replicate_server: LoopbackServer,
    make: Build,
) -> None:
    """fal is tried twice and fails, Replicate serves; each got the PNG once, as a URL in a small body."""
    fal.by_prompt["a fox"] = Behaviour(submit_status=503)
    router = make(config(fal_server.url, replicate_server.url, retry={"max_attempts": 2}))
    fal_server.requests.clear()
    result = await router.generate("a fox", model="flux-dev", image=BIG_PNG)
    second = await router.generate("a fox again", model="flux-dev", image=BIG_PNG)
    assert [a.provider for a in result.attempts] == ["fal", "fal", "replicate"]
    assert (result.provider, second.provider) == ("replicate", "fal")
    assert [(ct, data == BIG_PNG) for _, ct, data in fal.uploads] == [("image/png", True)]
    assert [(ct, data == BIG_PNG) for _, ct, data in replicate.uploads] == [("image/png", True)]
    submits = fal_submits(fal_server)
    assert len(submits) == 3
    assert all(len(s.body) < 4096 for s in submits)
    assert {s.json()["image_url"] for s in submits} == {f"{fal_server.url}{fal.uploads[0][0]}"}
    (create,) = replicate_creates(replicate)
    assert len(create.body) < 4096
    assert create.json()["input"]["image"].startswith(f"{replicate_server.url}/v1/files/")


async def test_an_input_up_to_inline_max_bytes_is_sent_inline(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """A 1 KB image goes in the submit as a data: URL; nothing is uploaded."""
    await make(config(fal_server.url)).generate("a fox", model="flux-dev", image=SMALL_PNG)
    assert fal.job_for("a fox").input["image_url"].startswith("data:image/png;base64,")
    assert fal.uploads == []
    assert fal.token_requests == 0


async def test_inline_max_bytes_sets_the_upload_threshold(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """With inline_max_bytes: 100, the 1 KB image is uploaded instead."""
    source = config(fal_server.url, fal={"inline_max_bytes": 100})
    await make(source).generate("a fox", model="flux-dev", image=SMALL_PNG)
    assert fal.job_for("a fox").input["image_url"] == f"{fal_server.url}{fal.uploads[0][0]}"


async def test_the_fal_api_key_never_reaches_the_upload_host(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """The storage token is asked with the key; the upload host sees only the token."""
    await make(config(fal_server.url)).generate("a fox", model="flux-dev", image=BIG_PNG)
    assert fal.token_requests == 1
    assert fal.cdn_authorizations == [f"Bearer {fal.token}"]
    assert all(DEFAULT_KEY not in header for header in fal.cdn_authorizations)


async def test_a_path_input_is_read_and_uploaded_under_its_name(
    fal: FakeFal, fal_server: LoopbackServer, make: Build, tmp_path: Path
) -> None:
    """A pathlib.Path over the inline limit is read, uploaded with its file name and type."""
    path = tmp_path / "frame.png"
    path.write_bytes(BIG_PNG)
    await make(config(fal_server.url)).generate("a fox", model="flux-dev", image=path)
    ((stored, content_type, data),) = fal.uploads
    assert (stored.endswith("/frame.png"), content_type, data == BIG_PNG) == (True, "image/png", True)


async def test_large_files_go_up_to_fal_in_parts(
    fal: FakeFal, fal_server: LoopbackServer, make: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the multipart threshold the file is sent in chunks and completed, then used."""
    monkeypatch.setattr("genrouter.backends.fal._storage.MULTIPART_THRESHOLD", 1024 * 1024)
    monkeypatch.setattr("genrouter.backends.fal._storage.MULTIPART_CHUNK_BYTES", 1024 * 1024)
    fal_server.requests.clear()
    await make(config(fal_server.url)).generate("a fox", model="flux-dev", image=BIG_PNG)
    parts = [r for r in fal_server.requests if r.method == "PUT" and "/multipart/" in r.path]
    assert len(parts) == -(-len(BIG_PNG) // (1024 * 1024))
    ((stored, _, data),) = fal.uploads
    assert data == BIG_PNG
    assert fal.job_for("a fox").input["image_url"] == f"{fal_server.url}{stored}"


async def test_concurrent_requests_share_one_upload(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """Five requests with the same image at once (a batch) upload it once."""
    router = make(config(fal_server.url))
    await asyncio.gather(*(router.generate(f"fox {i}", model="flux-dev", image=BIG_PNG) for i in range(5)))
    assert len(fal.uploads) == 1
    assert len({fal.job_for(f"fox {i}").input["image_url"] for i in range(5)}) == 1


async def test_an_input_over_the_provider_cap_is_an_invalid_request_naming_field_and_limit(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """max_upload_bytes is a hard cap: the error names the field and the limit; nothing is sent."""
    source = config(fal_server.url, fal={"max_upload_bytes": 1_000_000})
    with pytest.raises(AllProvidersFailedError) as caught:
        await make(source).generate("a fox", model="flux-dev", image=BIG_PNG)
    (error,) = caught.value.errors
    assert isinstance(error, InvalidRequestError)
    assert error.field == "image"
    assert "1000000 bytes" in str(error)
    assert fal.uploads == []
    assert fal.submit_count() == 0


async def test_a_string_that_is_not_a_url_is_refused(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """A plain string image must be an http(s) or data: URL; a path-like string is never read."""
    with pytest.raises(AllProvidersFailedError) as caught:
        await make(config(fal_server.url)).generate("a fox", model="flux-dev", image="/etc/passwd")
    (error,) = caught.value.errors
    assert isinstance(error, InvalidRequestError)
    assert error.field == "image"
    assert "pathlib.Path" in str(error)


async def test_images_go_to_the_list_input_the_entry_maps(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """``images: image_urls``: a URL passes through, bytes are inlined or uploaded, in order."""
    entry = {**FAL_EDIT, "params": {**BASE_PARAMS, "images": "image_urls"}}
    images: list[Any] = ["https://example.test/a.png", SMALL_PNG, BIG_PNG]
    await make(config(fal_server.url, entry=entry)).generate("a fox", model="flux-dev", images=images)
    sent = fal.job_for("a fox").input["image_urls"]
    assert sent[0] == "https://example.test/a.png"
    assert sent[1].startswith("data:image/png;base64,")
    assert sent[2] == f"{fal_server.url}{fal.uploads[0][0]}"


async def test_images_as_first_and_last_frame(fal: FakeFal, fal_server: LoopbackServer, make: Build) -> None:
    """``images: [first_frame_url, last_frame_url]`` sends one image to each input, in order."""
    entry = {**FAL_EDIT, "params": {**BASE_PARAMS, "images": ["first_frame_url", "last_frame_url"]}}
    frames = ["https://example.test/first.png", "https://example.test/last.png"]
    result = await make(config(fal_server.url, entry=entry)).generate(
        "a fox", model="flux-dev", images=frames
    )
    sent = fal.job_for("a fox").input
    assert (sent["first_frame_url"], sent["last_frame_url"]) == tuple(frames)
    assert not any("images" in w for w in result.warnings)


async def test_images_value_map_syntax(fal: FakeFal, fal_server: LoopbackServer, make: Build) -> None:
    """``images: {to: image_urls}`` is the same as ``images: image_urls``."""
    entry = {**FAL_EDIT, "params": {**BASE_PARAMS, "images": {"to": "image_urls"}}}
    await make(config(fal_server.url, entry=entry)).generate(
        "a fox", model="flux-dev", images=["https://example.test/a.png"]
    )
    assert fal.job_for("a fox").input["image_urls"] == ["https://example.test/a.png"]


async def test_images_on_an_entry_without_an_images_input_leave_a_warning(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """An entry that maps no ``images`` input drops them, and says so on the result."""
    result = await make(config(fal_server.url)).generate(
        "a fox", model="flux-dev", images=["https://example.test/a.png"]
    )
    assert "image_urls" not in fal.job_for("a fox").input
    assert any("no input for images" in w for w in result.warnings)


async def test_replicate_uploads_through_its_files_api(
    replicate: FakeReplicate, replicate_server: LoopbackServer, make: Build
) -> None:
    """Replicate gets the file by POST /v1/files (part ``content``) and its urls.get in the input."""
    source = {
        "version": 1,
        "providers": {"replicate": {"api_token": TOKEN, "base_url": replicate_server.url}},
    }
    await make(source).generate("a fox", model="flux-dev", image=BIG_PNG)
    ((name, content_type, data),) = replicate.uploads
    assert (content_type, data == BIG_PNG, name.endswith(".png")) == ("image/png", True, True)
    (create,) = replicate.creates
    file_id = create.json()["input"]["image"].rsplit("/", 1)[1]
    assert replicate.files[file_id][1] == BIG_PNG


async def test_a_failed_upload_is_forgotten_and_tried_again(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """An upload answered 500 fails that attempt; the retry uploads again and succeeds."""
    fal.cdn_faults = [500]
    source = config(fal_server.url, retry={"max_attempts": 2})
    result = await make(source).generate("a fox", model="flux-dev", image=BIG_PNG)
    assert [a.outcome.value for a in result.attempts] == ["failed", "succeeded"]
    assert len(fal.uploads) == 1
    assert fal.job_for("a fox").input["image_url"] == f"{fal_server.url}{fal.uploads[0][0]}"


async def test_an_upload_runs_inside_the_deadline_and_is_cancelled_with_it(
    fal: FakeFal, fal_server: LoopbackServer
) -> None:
    """An upload still running at the deadline ends the request; the next request uploads anew."""
    fal.cdn_delay_s = 3.0
    source = config(fal_server.url)
    async with AsyncRouter.from_config(source, clock=MonotonicClock()) as router:
        with pytest.raises(DeadlineExceededError):
            await router.generate("a fox", model="flux-dev", image=BIG_PNG, deadline_s=0.3)
        fal.cdn_delay_s = 0.0
        await router.generate("a fox", model="flux-dev", image=BIG_PNG, deadline_s=30)
    assert len(fal.uploads) == 2
    assert fal.submit_count() == 1


async def test_the_readme_images_mapping_for_first_and_last_frame(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """The README's frames-video entry sends images[0] as first_frame_url, images[1] as last_frame_url."""
    entry = {
        "endpoint": "my-org/frames-to-video",
        "kind": "video",
        "capabilities": ["image-to-video"],
        "price": {"per_video": "0.50"},
        "params": {"prompt": "prompt", "images": ["first_frame_url", "last_frame_url"]},
    }
    source = config(fal_server.url)
    source["providers"]["fal"]["models"] = {"frames-video": entry}
    frames = ["https://example.test/first.png", SMALL_PNG]
    result = await make(source).generate("a fox", model="frames-video", images=frames)
    sent = fal.job_for("a fox").input
    assert sent["first_frame_url"] == frames[0]
    assert sent["last_frame_url"].startswith("data:image/png;base64,")
    assert result.outputs[0].kind.value == "video"
