"""Passthrough models: ``model="<provider-key>:<endpoint>"`` (issue 12 item 2, contract additions)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakes.fal import Behaviour, FakeFal, start_server
from fakes.replicate import SDXL_VERSION, TOKEN, FakeReplicate
from fakes.server import LoopbackServer
from genrouter import AllProvidersFailedError, AsyncRouter, NoRouteError
from genrouter.catalog._deployments import split_passthrough
from genrouter.testing import set_testing

FAL_KEY = "fal-key-passthrough-0123"


@pytest.fixture(scope="module")
def fal_servers() -> Iterator[tuple[LoopbackServer, LoopbackServer]]:
    a, b = start_server(), start_server()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def fal(fal_servers: tuple[LoopbackServer, LoopbackServer]) -> tuple[FakeFal, FakeFal]:
    fakes = FakeFal(api_key=FAL_KEY), FakeFal(api_key=FAL_KEY)
    fal_servers[0].handler, fal_servers[1].handler = fakes
    set_testing()
    return fakes


@pytest.fixture
def replicate(replicate: FakeReplicate) -> FakeReplicate:
    set_testing()
    return replicate


def fal_config(servers: tuple[LoopbackServer, LoopbackServer]) -> dict[str, Any]:
    return {
        "version": 1,
        "providers": {
            "fal": {"api_key": FAL_KEY, "base_url": servers[0].url},
            "fal-b": {"type": "fal", "api_key": FAL_KEY, "base_url": servers[1].url},
        },
    }


def replicate_config(server: LoopbackServer) -> dict[str, Any]:
    return {"version": 1, "providers": {"replicate": {"api_token": TOKEN, "base_url": server.url}}}


async def test_fal_passthrough_sends_the_standard_mapping_to_that_endpoint(
    fal_servers: tuple[LoopbackServer, LoopbackServer], fal: tuple[FakeFal, FakeFal]
) -> None:
    """fal:<endpoint> submits to that fal endpoint with prompt, image_size, seed and num_images."""
    async with AsyncRouter.from_config(fal_config(fal_servers)) as router:
        result = await router.generate(
            "a red fox", model="fal:fal-ai/flux-pro/kontext", width=1024, height=1024, seed=7
        )
    (job,) = fal[0].jobs.values()
    assert job.endpoint == "fal-ai/flux-pro/kontext"
    assert job.input == {"prompt": "a red fox", "image_size": "square_hd", "seed": 7, "num_images": 1}
    assert (result.provider, result.endpoint, result.model) == (
        "fal",
        "fal-ai/flux-pro/kontext",
        "fal:fal-ai/flux-pro/kontext",
    )
    assert len(result.outputs) == 1


async def test_passthrough_cost_is_unknown(
    fal_servers: tuple[LoopbackServer, LoopbackServer], fal: tuple[FakeFal, FakeFal]
) -> None:
    """A passthrough has no catalog price, so its cost is None (unknown), never 0."""
    async with AsyncRouter.from_config(fal_config(fal_servers)) as router:
        result = await router.generate("a red fox", model="fal:fal-ai/some/new-model")
    assert result.cost.amount_usd is None


async def test_passthrough_merges_provider_options_of_its_key_last(
    fal_servers: tuple[LoopbackServer, LoopbackServer], fal: tuple[FakeFal, FakeFal]
) -> None:
    """provider_options[<key>] reach the endpoint and win over the standard mapping."""
    async with AsyncRouter.from_config(fal_config(fal_servers)) as router:
        await router.generate(
            "a red fox",
            model="fal-b:fal-ai/flux-pro/kontext",
            seed=7,
            provider_options={"fal-b": {"seed": 8, "safety_tolerance": "5"}},
        )
    (job,) = fal[1].jobs.values()
    assert (job.input["seed"], job.input["safety_tolerance"]) == (8, "5")
    assert fal[0].jobs == {}


async def test_passthrough_never_falls_back(
    fal_servers: tuple[LoopbackServer, LoopbackServer], fal: tuple[FakeFal, FakeFal]
) -> None:
    """When the named provider fails, no other provider is tried (nothing is equivalent)."""
    fal[0].behaviour = Behaviour(submit_status=503)
    config = fal_config(fal_servers)
    config["routing"] = {"default": {"retry": {"max_attempts": 2}}}
    async with AsyncRouter.from_config(config) as router:
        with pytest.raises(AllProvidersFailedError) as caught:
            await router.generate("a red fox", model="fal:fal-ai/flux/dev")
    assert {a.provider for a in caught.value.attempts} == {"fal"}
    assert fal[1].submit_count() == 0


def test_explain_says_it_is_a_passthrough(fal_servers: tuple[LoopbackServer, LoopbackServer]) -> None:
    """explain() lists the one candidate and notes the passthrough."""
    router = AsyncRouter.from_config(fal_config(fal_servers))
    plan = router.explain(model="fal:fal-ai/flux-pro/kontext", prompt="a red fox")
    assert [(c.provider, c.endpoint) for c in plan.candidates] == [("fal", "fal-ai/flux-pro/kontext")]
    assert any("passthrough" in note for note in plan.notes)


def test_a_prefix_that_is_no_provider_key_names_the_configured_keys(
    fal_servers: tuple[LoopbackServer, LoopbackServer],
) -> None:
    """An unknown prefix is a NoRouteError naming the configured provider keys."""
    router = AsyncRouter.from_config(fal_config(fal_servers))
    with pytest.raises(NoRouteError, match=r"'replicate' is not a configured provider key.*fal, fal-b"):
        router.explain(model="replicate:black-forest-labs/flux-kontext-pro", prompt="x")


async def test_replicate_passthrough_creates_on_the_official_model(
    replicate_server: LoopbackServer, replicate: FakeReplicate
) -> None:
    """replicate:owner/name creates a prediction on that official model."""
    async with AsyncRouter.from_config(replicate_config(replicate_server)) as router:
        result = await router.generate(
            "a red fox", model="replicate:black-forest-labs/flux-kontext-pro", aspect_ratio="16:9", seed=3
        )
    (create,) = replicate.creates
    assert create.path == "/v1/models/black-forest-labs/flux-kontext-pro/predictions"
    assert create.json()["input"] == {
        "prompt": "a red fox",
        "aspect_ratio": "16:9",
        "seed": 3,
        "num_outputs": 1,
    }
    assert result.cost.amount_usd is None


async def test_replicate_passthrough_keeps_a_pinned_version(
    replicate_server: LoopbackServer, replicate: FakeReplicate
) -> None:
    """replicate:owner/name:<version> splits at the first ':' and creates on that version."""
    async with AsyncRouter.from_config(replicate_config(replicate_server)) as router:
        result = await router.generate("a red fox", model=f"replicate:stability-ai/sdxl:{SDXL_VERSION}")
    (create,) = replicate.creates
    assert create.path == "/v1/predictions"
    assert create.json()["version"].endswith(SDXL_VERSION)
    assert result.endpoint == f"stability-ai/sdxl:{SDXL_VERSION}"


async def test_a_passthrough_job_resumes_through_the_jobs_api() -> None:
    """submit() of a passthrough returns a handle whose result() a new router can fetch."""
    config = {"version": 1, "providers": {"my-gpu": {"type": "simulated", "latency": 0}}}
    async with AsyncRouter.from_config(config) as first:
        handle = await first.submit(model="my-gpu:my-checkpoint", prompt="a red fox", width=32, height=32)
    async with AsyncRouter.from_config(config) as second:
        result = await second.result(handle)
    assert (result.provider, result.endpoint) == ("my-gpu", "my-checkpoint")
    assert (result.outputs[0].width, result.outputs[0].height) == (32, 32)


async def test_catalog_aliases_keep_working_beside_passthrough(
    fal_servers: tuple[LoopbackServer, LoopbackServer], fal: tuple[FakeFal, FakeFal]
) -> None:
    """A plain alias still routes through the catalog (flux-dev → fal-ai/flux/dev)."""
    async with AsyncRouter.from_config(fal_config(fal_servers)) as router:
        result = await router.generate("a red fox", model="flux-dev", providers=["fal"])
    assert result.endpoint == "fal-ai/flux/dev"


@given(
    st.sampled_from(["fal", "fal-b", "my-gpu"]),
    st.text(st.characters(codec="ascii", categories=["L", "N"], include_characters="/:._-"), min_size=1),
)
def test_the_provider_key_is_the_part_before_the_first_colon(key: str, endpoint: str) -> None:
    """Any '<key>:<endpoint>' splits at the first ':'; the endpoint keeps every later ':'."""
    providers = {"fal": {}, "fal-b": {}, "my-gpu": {}}
    assert split_passthrough(f"{key}:{endpoint}", providers) == (key, endpoint)


def test_a_passthrough_gets_the_backends_latency_hint() -> None:
    """explain() estimates a passthrough's p95 from its backend's hint, as for catalog models."""
    config = {
        "version": 1,
        "providers": {"sim": {"type": "simulated", "latency": {"median_s": 1, "p99_s": 2}}},
    }
    router = AsyncRouter.from_config(config)
    (candidate,) = router.explain(model="sim:my-checkpoint", prompt="a red fox").candidates
    assert candidate.estimated_p95_s is not None
    assert 1 < candidate.estimated_p95_s < 2
