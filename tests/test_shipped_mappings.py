"""Every shipped catalog entry's mapping, driven through the router against the fakes (issue 12, item 7).

Parametrised over the loaded shipped catalogs (variants included), so an entry added to
``providers/*.yaml`` is covered without touching this file: a request with a prompt, a
size, a seed and an output count (plus an image where the deployment needs one) is routed
to that exact deployment, the provider must receive each mapped input under the entry's
input name, and the result must parse into artifacts of the entry's kind (videos for a
video model, images for every other kind).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from fakes.fal import FakeFal, start_server
from fakes.recording import RecordingTransport
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer, serve
from genrouter import AsyncRouter
from genrouter.backends.modal import ModalBackend
from genrouter.catalog import (
    IMAGE_INPUT_KINDS,
    PROMPTLESS_KINDS,
    Capability,
    Catalog,
    Deployment,
    build_deployment,
)
from genrouter.testing import set_testing
from genrouter.util._png import placeholder_png

FAL_KEY = "fal-key-shipped-0123456"
IMAGE_BYTES = placeholder_png(8, 8, 3)
IMAGE = "data:image/png;base64," + base64.b64encode(IMAGE_BYTES).decode()  # no download needed
PROMPT = "a lighthouse at dusk"
SEED = 7
_TEXT = {Capability.TEXT_TO_IMAGE, Capability.TEXT_TO_VIDEO}


def _deployments(ptype: str) -> list[Deployment]:
    catalog = Catalog.load()
    out = []
    for model, entry in catalog.entries_for(ptype).items():
        for each in entry.expanded():
            out.append(
                build_deployment(
                    provider=ptype,
                    provider_type=ptype,
                    model=model,
                    entry=each,
                    spec=catalog.models.get(model),
                )
            )
    return out


def _params(ptype: str) -> list[Any]:
    return [pytest.param(d, id=f"{d.model}@{d.endpoint}") for d in _deployments(ptype)]


def _needs_image(deployment: Deployment) -> bool:
    return deployment.kind in IMAGE_INPUT_KINDS or not (deployment.capabilities & _TEXT)


def _size(deployment: Deployment) -> tuple[int, int]:
    limits = deployment.limits
    width, height = limits.default_size or (1024, 1024)
    step = limits.multiple_of or 1
    clamp = []
    for value, bounds in ((width, limits.width), (height, limits.height)):
        if bounds is not None:
            value = min(max(value, bounds[0]), bounds[1])
        clamp.append(value // step * step)
    return clamp[0], clamp[1]


def _request(deployment: Deployment) -> dict[str, Any]:
    fields: dict[str, Any] = {"prompt": PROMPT, "seed": SEED, "providers": [deployment.provider]}
    if deployment.kind == "video":
        fields["aspect_ratio"] = "16:9"
        fields["num_outputs"] = 1
    else:
        fields["width"], fields["height"] = _size(deployment)
        fields["num_outputs"] = 2
    if _needs_image(deployment):
        fields["image"] = IMAGE
    return fields


def _check_received(deployment: Deployment, inputs: list[dict[str, Any]], fields: dict[str, Any]) -> None:
    """Each mapped request field arrived under the entry's input name."""
    assert inputs, "the provider received nothing"
    params = deployment.params
    for sent in inputs:
        prompt_to = params.get("prompt")
        if deployment.kind not in PROMPTLESS_KINDS:
            assert prompt_to, "a prompt-taking model must map prompt"
            assert sent[prompt_to] == PROMPT
        size_inputs = {params.get(f) for f in ("width", "height", "aspect_ratio")} - {None}
        if size_inputs:
            assert size_inputs & sent.keys(), f"no size input of {sorted(size_inputs)} in {sorted(sent)}"
        if "image" in fields:
            image_to = params.get("image")
            assert image_to, "a deployment that needs an image must map image"
            value = sent[image_to]
            assert value == IMAGE_BYTES or IMAGE in str(value)  # Modal takes bytes, the others URLs
    if params.get("seed"):  # outputs split across calls take seed, seed + 1, ...
        assert sorted(sent[params["seed"]] for sent in inputs) == [SEED + i for i in range(len(inputs))]
    count_to = params.get("num_outputs")
    if count_to:
        assert sum(int(sent.get(count_to, 1)) for sent in inputs) == fields["num_outputs"]


async def _generate(router: AsyncRouter, deployment: Deployment, fields: dict[str, Any]) -> Any:
    async with router:
        result = await router.generate(model=deployment.model, **fields)
    assert result.endpoint == deployment.endpoint, "routed to another deployment of the model"
    assert len(result.outputs) == fields["num_outputs"] or deployment.kind == "video"
    assert result.outputs
    expected = "video" if deployment.kind == "video" else "image"
    assert {a.kind.value for a in result.outputs} == {expected}, "artifact kind differs from the entry's kind"
    return result


# -- fal ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fal_server() -> Iterator[LoopbackServer]:
    server = start_server()
    yield server
    server.stop()


@pytest.mark.parametrize("deployment", _params("fal"))
async def test_every_fal_entry_maps_onto_fal(deployment: Deployment, fal_server: LoopbackServer) -> None:
    """fal receives each shipped fal entry's inputs under its names, and the result parses."""
    fake = FakeFal(api_key=FAL_KEY)
    fal_server.handler = fake
    set_testing()
    fields = _request(deployment)
    router = AsyncRouter.from_config(
        {"version": 1, "providers": {"fal": {"api_key": FAL_KEY, "base_url": fal_server.url}}}
    )
    await _generate(router, deployment, fields)
    assert {job.endpoint for job in fake.jobs.values()} == {deployment.endpoint}
    _check_received(deployment, [job.input for job in fake.jobs.values()], fields)


# -- Replicate -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicate_server() -> Iterator[LoopbackServer]:
    with serve(FakeReplicate()) as running:
        yield running


@pytest.mark.parametrize("deployment", _params("replicate"))
async def test_every_replicate_entry_maps_onto_replicate(
    deployment: Deployment, replicate_server: LoopbackServer
) -> None:
    """Replicate receives each shipped Replicate entry's inputs under its names, and the result parses."""
    fake = FakeReplicate()
    model, _, version = deployment.endpoint.removeprefix("deployments/").partition(":")
    if version:
        fake.versions[version] = model
    replicate_server.handler = fake
    set_testing()
    fields = _request(deployment)
    router = AsyncRouter.from_config(
        {"version": 1, "providers": {"replicate": {"api_token": TOKEN, "base_url": replicate_server.url}}}
    )
    await _generate(router, deployment, fields)
    _check_received(deployment, [create.json()["input"] for create in fake.creates], fields)


# -- Modal -------------------------------------------------------------------------------------


@pytest.mark.parametrize("deployment", _params("modal"))
async def test_every_modal_entry_maps_onto_the_modal_class(deployment: Deployment) -> None:
    """The Modal class receives each shipped Modal entry's inputs, and the result parses."""
    transport = RecordingTransport()
    section = {"app": "genrouter-diffusion", "cls": "Diffusion"}
    backend = ModalBackend(name="modal", settings=section, transport=transport)  # type: ignore[arg-type]
    fields = _request(deployment)
    router = AsyncRouter.from_config(
        {"version": 1, "providers": {"modal": section}}, backends={"modal": backend}
    )
    await _generate(router, deployment, fields)
    assert {model_id for model_id, _ in transport.spawned} == {deployment.endpoint}
    _check_received(deployment, [payload for _, payload in transport.spawned], fields)
