"""The shipped catalog covers the model families people route between today (issue 12).

The families are served on fal and Replicate under one alias each, so a request fails
over between the two; every price names its unit, source and date. The failover specs
drive the public API against the loopback fakes of both providers.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fakes.fal import Behaviour, FakeFal
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer
from genrouter import AsyncRouter, AttemptOutcome
from genrouter.catalog import Capability, Catalog, CatalogEntry
from genrouter.cli import main
from genrouter.testing import set_testing
from loopback import NO_WAIT, install_fal

FAL_KEY = "fal-key-coverage-0123456789"
HOSTED = ("fal", "replicate")
IMAGE = Capability.IMAGE_TO_IMAGE
T2V, I2V = Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO

# family name the user knows -> (shipped alias, providers serving it, capabilities needed there)
FAMILIES: dict[str, tuple[str, tuple[str, ...], frozenset[Capability]]] = {
    "FLUX.1 [dev]": ("flux-dev", HOSTED, frozenset({Capability.TEXT_TO_IMAGE})),
    "FLUX.1 [schnell]": ("flux-schnell", HOSTED, frozenset({Capability.TEXT_TO_IMAGE})),
    "FLUX1.1 [pro]": ("flux-1.1-pro", HOSTED, frozenset({Capability.TEXT_TO_IMAGE})),
    "FLUX1.1 [pro] ultra": ("flux-1.1-pro-ultra", HOSTED, frozenset({Capability.TEXT_TO_IMAGE})),
    "FLUX.1 Kontext [pro]": ("flux-kontext-pro", HOSTED, frozenset({IMAGE})),
    "FLUX.1 Kontext [max]": ("flux-kontext-max", HOSTED, frozenset({IMAGE})),
    "FLUX.2 [dev]": ("flux-2-dev", HOSTED, frozenset({Capability.TEXT_TO_IMAGE, IMAGE})),
    "FLUX.2 [pro]": ("flux-2-pro", HOSTED, frozenset({Capability.TEXT_TO_IMAGE, IMAGE})),
    "SDXL": ("sdxl", HOSTED, frozenset({Capability.TEXT_TO_IMAGE})),
    "Recraft V3": ("recraft-v3", HOSTED, frozenset({Capability.TEXT_TO_IMAGE})),
    "Ideogram V3": ("ideogram-v3", HOSTED, frozenset({Capability.TEXT_TO_IMAGE})),
    "Imagen 4": ("imagen-4", HOSTED, frozenset({Capability.TEXT_TO_IMAGE})),
    "Seedream 4": ("seedream-4", HOSTED, frozenset({Capability.TEXT_TO_IMAGE, IMAGE})),
    "Qwen-Image": ("qwen-image", HOSTED, frozenset({Capability.TEXT_TO_IMAGE})),
    "Qwen-Image-Edit": ("qwen-image-edit", HOSTED, frozenset({IMAGE})),
    "GPT Image": ("gpt-image", HOSTED, frozenset({Capability.TEXT_TO_IMAGE, IMAGE})),
    "Kling 2.x": ("kling-2.5-turbo", HOSTED, frozenset({T2V, I2V})),
    "Veo 3": ("veo-3", HOSTED, frozenset({T2V, I2V})),
    "Wan 2.2": ("wan-2.2", HOSTED, frozenset({T2V, I2V})),
    "Hailuo / MiniMax": ("hailuo-02", HOSTED, frozenset({T2V, I2V})),
    "Seedance": ("seedance-1-pro", HOSTED, frozenset({T2V, I2V})),
    "LTX": ("ltx-2", HOSTED, frozenset({T2V, I2V})),
    "an upscaler": ("crisp-upscale", HOSTED, frozenset({Capability.UPSCALE})),
    "a background remover": ("bria-rmbg", HOSTED, frozenset({Capability.REMOVE_BACKGROUND})),
}


def capabilities(entry: CatalogEntry) -> set[Capability]:
    """What an entry serves, its variants' deployments included."""
    served = set(entry.capabilities or ())
    for variant in entry.variants or ():
        served.update(variant.capabilities or ())
    return served


def shared(kind: str) -> list[str]:
    """Shipped models of ``kind`` that both fal and Replicate serve."""
    catalog = Catalog.load()
    return sorted(
        name
        for name, spec in catalog.models.items()
        if spec.kind == kind and {"fal", "replicate"} <= set(spec.entries)
    )


# -- the catalog's contents ---------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_each_family_is_shipped_on_the_providers_that_serve_it(family: str) -> None:
    """Each family resolves by its alias and is served, with the capabilities it needs, on each provider."""
    alias, providers, needed = FAMILIES[family]
    catalog = Catalog.load()
    model = catalog.resolve(alias)
    assert model is not None, alias
    spec = catalog.models[model]
    for provider in providers:
        assert provider in spec.entries, (family, provider)
        assert needed <= capabilities(spec.entries[provider]), (family, provider)


@pytest.mark.parametrize(
    ("alias", "kind"), [("crisp-upscale", "upscale"), ("bria-rmbg", "remove-background")]
)
def test_utilities_have_their_own_kind_and_take_an_image(alias: str, kind: str) -> None:
    """The upscaler and the background remover are of their own kind and map `image` on every provider."""
    catalog = Catalog.load()
    spec = catalog.models[catalog.resolve(alias) or alias]
    assert spec.kind == kind
    for provider, entry in spec.entries.items():
        assert (entry.params or {}).get("image") is not None, provider


def test_at_least_four_image_models_are_served_by_both_fal_and_replicate() -> None:
    """Four or more image aliases are in both fal.yaml and replicate.yaml, so they fail over."""
    assert len(shared("image")) >= 4, shared("image")


def test_at_least_three_video_models_are_served_by_both_fal_and_replicate() -> None:
    """Three or more video aliases are in both fal.yaml and replicate.yaml, so they fail over."""
    assert len(shared("video")) >= 3, shared("video")


def test_every_shipped_price_names_its_unit_source_and_date() -> None:
    """Every price in the shipped catalogs, variants included, has one unit, a source and a date."""
    catalog = Catalog.load()
    for name, spec in catalog.models.items():
        for provider, entry in spec.entries.items():
            prices = [entry.price] + [v.price for v in entry.variants or ()]
            for price in (p for p in prices if p is not None):
                pricing = price.to_pricing()
                assert pricing.amount > 0, (provider, name)
                assert price.source, (provider, name)
                assert price.date, (provider, name)


def test_no_shipped_alias_contains_a_colon() -> None:
    """Aliases never contain ':', which marks a passthrough `provider:endpoint`."""
    for name, spec in Catalog.load().models.items():
        assert ":" not in name
        assert not [a for a in spec.aliases if ":" in a], name


def models_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The rows `genrouter models --json ARGV` prints."""
    with pytest.raises(SystemExit) as exited:
        main(["models", "--json", *argv])
    out, err = capsys.readouterr()
    assert (exited.value.code or 0, err) == (0, "")
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def test_models_command_without_a_config_lists_each_family_on_its_providers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`genrouter models --json` with no config lists every family's model on each provider serving it."""
    monkeypatch.chdir(tmp_path)
    listed = {(row["model"], row["provider"]) for row in models_json([], capsys)}
    catalog = Catalog.load()
    for family, (alias, providers, _) in FAMILIES.items():
        model = catalog.resolve(alias)
        for provider in providers:
            assert (model, provider) in listed, (family, provider)


@pytest.mark.parametrize("kind", ["upscale", "remove-background"])
def test_models_command_filters_the_utility_kinds(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`genrouter models --json --kind K` lists a utility of that kind on both fal and Replicate."""
    monkeypatch.chdir(tmp_path)
    rows = models_json(["--kind", kind], capsys)
    assert {row["kind"] for row in rows} == {kind}
    assert {row["provider"] for row in rows} >= {"fal", "replicate"}


# -- failover between fal and Replicate, through the public API -------------------------------------


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    return install_fal(fal_server, api_key=FAL_KEY, behaviour=NO_WAIT)


def both(fal_server: LoopbackServer, replicate_server: LoopbackServer) -> dict[str, Any]:
    """fal first, then Replicate: the smallest config that routes between them."""
    set_testing()
    return {
        "version": 1,
        "providers": {
            "fal": {"api_key": FAL_KEY, "base_url": fal_server.url},
            "replicate": {"api_token": TOKEN, "base_url": replicate_server.url},
        },
        "routing": {"default": {"strategy": "priority", "order": ["fal", "replicate"]}},
    }


def replicate_input(fake: FakeReplicate, prompt: str) -> dict[str, Any]:
    (prediction,) = [p for p in fake.predictions.values() if p.input.get("prompt") == prompt]
    return prediction.input


async def test_a_shared_video_alias_fails_over_from_fal_to_replicate_on_503(
    fal_server: LoopbackServer, replicate_server: LoopbackServer, fal: FakeFal, replicate: FakeReplicate
) -> None:
    """kling-2.5-turbo answered 503 by fal is served by Replicate, with the duration under its input name."""
    fal.behaviour = Behaviour(submit_status=503)
    async with AsyncRouter.from_config(both(fal_server, replicate_server)) as router:
        result = await router.generate("a paper boat on a river", model="kling-2.5-turbo", duration_s=10)
    assert (result.provider, result.endpoint) == ("replicate", "kwaivgi/kling-v2.5-turbo-pro")
    assert result.attempts[0].provider == "fal"
    assert result.attempts[0].outcome is AttemptOutcome.FAILED
    assert result.attempts[-1].outcome is AttemptOutcome.SUCCEEDED
    sent = replicate_input(replicate, "a paper boat on a river")
    assert sent["duration"] == 10


async def test_the_same_video_alias_is_served_by_fal_when_fal_is_up(
    fal_server: LoopbackServer, replicate_server: LoopbackServer, fal: FakeFal, replicate: FakeReplicate
) -> None:
    """kling-2.5-turbo on fal gets its duration as a string and an aspect ratio it takes."""
    async with AsyncRouter.from_config(both(fal_server, replicate_server)) as router:
        result = await router.generate(
            "a paper boat on a river", model="kling-2.5-turbo", duration_s=10, aspect_ratio="9:16"
        )
    assert (result.provider, result.endpoint) == ("fal", "fal-ai/kling-video/v2.5-turbo/pro/text-to-video")
    sent = fal.job_for("a paper boat on a river").input
    assert (sent["duration"], sent["aspect_ratio"]) == ("10", "9:16")
    assert replicate.creates == []


async def test_a_shared_editing_alias_fails_over_with_the_image_under_each_providers_name(
    fal_server: LoopbackServer, replicate_server: LoopbackServer, fal: FakeFal, replicate: FakeReplicate
) -> None:
    """flux-kontext-pro with an image, refused by fal, reaches Replicate as `input_image`."""
    fal.behaviour = Behaviour(submit_status=503)
    image = "https://example.test/cat.png"
    async with AsyncRouter.from_config(both(fal_server, replicate_server)) as router:
        result = await router.generate("make the cat blue", model="flux-kontext-pro", image=image)
    assert (result.provider, result.endpoint) == ("replicate", "black-forest-labs/flux-kontext-pro")
    assert replicate_input(replicate, "make the cat blue")["input_image"] == image


async def test_veo_3_on_fal_gets_the_nearest_duration_as_falls_suffixed_string(
    fal_server: LoopbackServer, replicate_server: LoopbackServer, fal: FakeFal, replicate: FakeReplicate
) -> None:
    """veo-3 asked for 5 s is sent to fal as duration "4s" (fal's form), warned, and priced for 4 s."""
    async with AsyncRouter.from_config(both(fal_server, replicate_server)) as router:
        result = await router.generate("a lighthouse at dusk", model="veo-3", duration_s=5)
    assert (result.provider, result.endpoint) == ("fal", "fal-ai/veo3")
    assert fal.job_for("a lighthouse at dusk").input["duration"] == "4s"
    assert any("became 4" in warning for warning in result.warnings)
    assert result.cost.amount_usd == Decimal("1.6")


async def test_a_shared_upscaler_fails_over_with_the_image_and_no_prompt(
    fal_server: LoopbackServer, replicate_server: LoopbackServer, fal: FakeFal, replicate: FakeReplicate
) -> None:
    """crisp-upscale refused by fal reaches Replicate with just the `image` (no prompt input)."""
    fal.behaviour = Behaviour(submit_status=503)
    image = "https://example.test/small.png"
    async with AsyncRouter.from_config(both(fal_server, replicate_server)) as router:
        result = await router.generate("upscale", model="crisp-upscale", image=image)
    assert (result.provider, result.endpoint) == ("replicate", "recraft-ai/recraft-crisp-upscale")
    (prediction,) = replicate.predictions.values()
    assert prediction.input == {"image": image}
