"""The shipped provider catalogs (providers/*.yaml), user catalogs, and the pricing math."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrouter.catalog import (
    Capability,
    Catalog,
    CatalogEntry,
    Deployment,
    Limits,
    ParamRule,
    PriceUnit,
    Pricing,
    build_deployment,
    load_catalog_file,
    param_target,
    shipped_catalog_dir,
)
from genrouter.errors import ConfigError
from genrouter.types import Artifact, ArtifactKind, GenerationRequest, GenerationResult, Timings

PROVIDERS_DIR = Path(__file__).resolve().parents[1] / "providers"
SHIPPED_FILES = sorted(PROVIDERS_DIR.glob("*.yaml"))

# The GenerationRequest inputs a provider may or may not take (routing fields excluded).
GENERATION_FIELDS = frozenset(
    {
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "aspect_ratio",
        "num_outputs",
        "seed",
        "steps",
        "guidance",
        "image",
        "mask",
        "strength",
        "loras",
        "duration_s",
        "fps",
        "output_format",
        "safety_checker",
    }
)
DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?$")


def all_entries() -> list[tuple[str, str, CatalogEntry]]:
    """Every shipped (provider, model, merged entry)."""
    catalog = Catalog.load()
    return [
        (provider, model, entry)
        for model, spec in catalog.models.items()
        for provider, entry in spec.entries.items()
    ]


def deployment(provider: str, model: str, catalog: Catalog | None = None) -> Deployment:
    """The deployment a provider of that type would get from the shipped catalog."""
    catalog = catalog or Catalog.load()
    spec = catalog.models[model]
    return build_deployment(
        provider=provider,
        provider_type=provider,
        model=model,
        entry=spec.entries[provider],
        spec=spec,
    )


def request(model: str = "flux-dev", **fields: Any) -> GenerationRequest:
    return GenerationRequest(model=model, prompt="a red fox in snow", **fields)


def result(*outputs: Artifact, running_s: float | None = None) -> GenerationResult:
    return GenerationResult(
        id="r1",
        model="m",
        provider="p",
        endpoint="e",
        outputs=list(outputs),
        timings=Timings(running_s=running_s),
    )


def image(width: int | None = None, height: int | None = None) -> Artifact:
    return Artifact(url="https://example.test/out.png", width=width, height=height)


def write(tmp_path: Path, text: str, name: str = "extra.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# The shipped files
# ---------------------------------------------------------------------------


def test_shipped_catalog_dir_holds_one_file_per_provider() -> None:
    """The shipped catalog folder has fal.yaml, replicate.yaml and modal.yaml."""
    names = {p.name for p in shipped_catalog_dir().glob("*.yaml")}
    assert {"fal.yaml", "replicate.yaml", "modal.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.name)
def test_shipped_file_validates(path: Path) -> None:
    """Each shipped catalog file passes schema validation and names its own provider."""
    catalog = load_catalog_file(path)
    assert catalog.version == 1
    assert catalog.provider == path.stem
    assert catalog.models


@pytest.mark.parametrize(
    ("model", "providers"),
    [
        ("flux-dev", {"fal", "replicate", "modal"}),
        ("flux-schnell", {"fal", "replicate", "modal"}),
        ("flux-pro", {"fal", "replicate"}),
        ("sdxl", {"fal", "replicate", "modal"}),
        ("recraft-v3", {"fal", "replicate"}),
        ("kling-video", {"fal"}),
        ("minimax-video", {"replicate"}),
    ],
)
def test_required_model_has_deployments_on_providers(model: str, providers: set[str]) -> None:
    """Each required model is served by the expected providers."""
    assert set(Catalog.load().models[model].entries) >= providers


def test_flux_dev_is_always_present() -> None:
    """flux-dev is in the shipped catalog (the contract's default model)."""
    assert "flux-dev" in Catalog.load().models


@pytest.mark.parametrize(
    ("provider", "model", "endpoint"),
    [
        ("fal", "flux-dev", "fal-ai/flux/dev"),
        ("fal", "flux-schnell", "fal-ai/flux/schnell"),
        ("fal", "flux-pro", "fal-ai/flux-pro/v1.1"),
        ("fal", "sdxl", "fal-ai/fast-sdxl"),
        ("fal", "recraft-v3", "fal-ai/recraft-v3"),
        ("fal", "kling-video", "fal-ai/kling-video/v1.6/standard/text-to-video"),
        ("replicate", "flux-dev", "black-forest-labs/flux-dev"),
        ("replicate", "flux-schnell", "black-forest-labs/flux-schnell"),
        ("replicate", "flux-pro", "black-forest-labs/flux-1.1-pro"),
        (
            "replicate",
            "sdxl",
            "stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc",
        ),
        ("replicate", "recraft-v3", "recraft-ai/recraft-v3"),
        ("replicate", "minimax-video", "minimax/video-01"),
        ("modal", "sdxl", "sdxl"),
        ("modal", "flux-dev", "flux-dev"),
        ("modal", "flux-schnell", "flux-schnell"),
    ],
)
def test_endpoint_ids_match_the_reference(provider: str, model: str, endpoint: str) -> None:
    """Each deployment points at the provider's own endpoint id."""
    assert Catalog.load().models[model].entries[provider].endpoint == endpoint


def test_replicate_version_pins_are_full_ids() -> None:
    """A pinned Replicate version is the full 64-hex id, never an abbreviation."""
    for provider, model, entry in all_entries():
        if provider == "replicate" and ":" in entry.endpoint:
            version = entry.endpoint.split(":", 1)[1]
            assert re.fullmatch(r"[0-9a-f]{64}", version), (model, version)


def test_every_price_has_source_and_date() -> None:
    """Every shipped price says where it came from and when (YYYY-MM or YYYY-MM-DD)."""
    for provider, model, entry in all_entries():
        if entry.price is None:
            continue
        assert entry.price.source, (provider, model)
        assert entry.price.date is not None, (provider, model)
        assert DATE.match(entry.price.date), (provider, model, entry.price.date)


def test_no_price_is_zero() -> None:
    """No shipped price is 0: an unknown price is omitted, never written as zero."""
    for provider, model, entry in all_entries():
        if entry.price is not None:
            amount = entry.price.to_pricing().amount
            assert amount > 0, (provider, model)


def test_fal_fast_sdxl_cost_is_unknown() -> None:
    """fal's fast-sdxl has no published price, so its estimated cost is None, not 0."""
    sdxl = deployment("fal", "sdxl")
    assert sdxl.pricing is None
    assert sdxl.estimate_cost(request("sdxl")) is None


def test_per_gpu_second_entries_have_a_time_estimate() -> None:
    """Every GPU-second price comes with gpu_seconds_per_output, so it can be estimated."""
    for provider, model, entry in all_entries():
        if entry.price is not None and entry.price.per_gpu_second is not None:
            assert entry.gpu_seconds_per_output is not None, (provider, model)


def test_megapixel_rounding_only_on_megapixel_prices() -> None:
    """megapixel_rounding: ceil appears only on per_megapixel prices."""
    for provider, model, entry in all_entries():
        if entry.price is not None and entry.price.megapixel_rounding == "ceil":
            assert entry.price.per_megapixel is not None, (provider, model)


@pytest.mark.parametrize(
    ("provider", "model", "unit", "amount"),
    [
        ("fal", "flux-dev", PriceUnit.PER_MEGAPIXEL, "0.025"),
        ("fal", "flux-schnell", PriceUnit.PER_MEGAPIXEL, "0.003"),
        ("fal", "flux-pro", PriceUnit.PER_IMAGE, "0.04"),
        ("fal", "recraft-v3", PriceUnit.PER_IMAGE, "0.04"),
        ("fal", "kling-video", PriceUnit.PER_VIDEO_SECOND, "0.045"),
        ("replicate", "flux-dev", PriceUnit.PER_IMAGE, "0.025"),
        ("replicate", "flux-schnell", PriceUnit.PER_IMAGE, "0.003"),
        ("replicate", "flux-pro", PriceUnit.PER_IMAGE, "0.04"),
        ("replicate", "sdxl", PriceUnit.PER_GPU_SECOND, "0.000975"),
        ("replicate", "recraft-v3", PriceUnit.PER_IMAGE, "0.04"),
        ("replicate", "minimax-video", PriceUnit.PER_VIDEO, "0.50"),
        ("modal", "sdxl", PriceUnit.PER_GPU_SECOND, "0.001097"),
        ("modal", "flux-dev", PriceUnit.PER_GPU_SECOND, "0.001097"),
        ("modal", "flux-schnell", PriceUnit.PER_GPU_SECOND, "0.001097"),
    ],
)
def test_shipped_price_and_unit(provider: str, model: str, unit: PriceUnit, amount: str) -> None:
    """Each shipped price has the unit and amount of the provider reference."""
    pricing = deployment(provider, model).pricing
    assert pricing is not None
    assert pricing.unit is unit
    assert pricing.amount == Decimal(amount)


@pytest.mark.parametrize("model", ["flux-dev", "flux-schnell"])
def test_fal_flux_megapixels_are_rounded_up(model: str) -> None:
    """fal's FLUX dev and schnell bill megapixels rounded up to whole megapixels."""
    pricing = deployment("fal", model).pricing
    assert pricing is not None
    assert pricing.ceil_megapixels


@pytest.mark.parametrize(
    ("alias", "model"),
    [
        ("flux-dev", "flux-dev"),
        ("flux.1-dev", "flux-dev"),
        ("flux.1-schnell", "flux-schnell"),
        ("flux-1.1-pro", "flux-pro"),
        ("stable-diffusion-xl", "sdxl"),
        ("recraft", "recraft-v3"),
        ("kling", "kling-video"),
        ("video-01", "minimax-video"),
    ],
)
def test_alias_resolves_to_model(alias: str, model: str) -> None:
    """A model's name and each of its aliases resolve to the canonical name."""
    assert Catalog.load().resolve(alias) == model


def test_unknown_name_resolves_to_none() -> None:
    """resolve() answers None for a name no catalog knows."""
    assert Catalog.load().resolve("no-such-model") is None


def test_aliases_are_unambiguous() -> None:
    """No alias is another model's name or belongs to two models."""
    catalog = Catalog.load()
    owners: dict[str, str] = {}
    for name, spec in catalog.models.items():
        for alias in spec.aliases:
            assert alias not in catalog.models, (alias, name)
            assert owners.setdefault(alias, name) == name, (alias, owners[alias], name)


@pytest.mark.parametrize("model", ["kling-video", "minimax-video"])
def test_video_models_are_kind_video(model: str) -> None:
    """Video models are of kind video."""
    assert Catalog.load().models[model].kind == "video"


def test_kind_matches_capabilities() -> None:
    """An entry is kind video exactly when its capabilities are video ones."""
    video = {Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO}
    for provider, model, entry in all_entries():
        assert entry.kind is not None, (provider, model)
        assert entry.capabilities, (provider, model)
        is_video = bool(video & set(entry.capabilities))
        assert is_video == (entry.kind == "video"), (provider, model)


def test_video_entries_have_a_default_duration() -> None:
    """Video entries have a default duration, and it is one of their allowed durations."""
    for provider, model, entry in all_entries():
        if entry.kind != "video":
            continue
        assert entry.limits is not None, (provider, model)
        default = entry.limits.default_duration_s
        assert default is not None, (provider, model)
        if entry.limits.durations_s is not None:
            assert default in entry.limits.durations_s, (provider, model)


OPTIONAL_FIELDS = frozenset({"images"})
"""Request inputs an entry maps only where its model takes them (unmapped: no such input)."""


def test_param_keys_are_request_fields() -> None:
    """Every params key is a GenerationRequest input field (no typos, no provider names)."""
    for provider, model, entry in all_entries():
        unknown = set(entry.params or {}) - GENERATION_FIELDS - OPTIONAL_FIELDS
        assert not unknown, (provider, model, unknown)


def test_params_map_every_request_input() -> None:
    """Every entry maps every request input explicitly, to a provider name or to null."""
    for provider, model, entry in all_entries():
        missing = GENERATION_FIELDS - set(entry.params or {})
        assert not missing, (provider, model, missing)


def test_capabilities_have_the_inputs_they_need() -> None:
    """A capability is only claimed where the input it needs is mapped."""
    needs = {
        Capability.IMAGE_TO_IMAGE: "image",
        Capability.INPAINTING: "mask",
        Capability.LORA: "loras",
        Capability.IMAGE_TO_VIDEO: "image",
    }
    for provider, model, entry in all_entries():
        params = entry.params or {}
        for capability in entry.capabilities or ():
            field = needs.get(capability)
            if field is not None:
                assert params.get(field), (provider, model, capability)


def test_default_size_is_within_limits() -> None:
    """A default size lies inside the entry's own width and height ranges."""
    for provider, model, entry in all_entries():
        limits = entry.limits
        if limits is None or limits.default_size is None:
            continue
        width, height = limits.default_size
        if limits.width is not None:
            assert limits.width[0] <= width <= limits.width[1], (provider, model)
        if limits.height is not None:
            assert limits.height[0] <= height <= limits.height[1], (provider, model)
        if limits.multiple_of is not None:
            assert width % limits.multiple_of == height % limits.multiple_of == 0


def test_fal_sizes_go_to_image_size() -> None:
    """fal takes width, height and aspect ratio through its one image_size input."""
    params = Catalog.load().models["flux-dev"].entries["fal"].params or {}
    assert params["width"] == params["height"] == params["aspect_ratio"] == "image_size"


def test_fal_flux_pro_has_no_steps_or_guidance() -> None:
    """fal's flux-pro marks steps and guidance as unsupported (null)."""
    params = Catalog.load().models["flux-pro"].entries["fal"].params or {}
    assert params["steps"] is None
    assert params["guidance"] is None


def test_fal_fast_sdxl_format_field_is_format() -> None:
    """fal's fast-sdxl takes the image format as `format`, not `output_format`."""
    params = Catalog.load().models["sdxl"].entries["fal"].params or {}
    assert params["output_format"] == "format"


@pytest.mark.parametrize("model", ["flux-dev", "flux-schnell", "flux-pro"])
def test_replicate_flux_maps_sizes_to_aspect_ratio(model: str) -> None:
    """Replicate FLUX has no width/height: sizes go to the nearest aspect ratio, not exactly."""
    entry = Catalog.load().models[model].entries["replicate"]
    params = entry.params or {}
    assert param_target(params["aspect_ratio"]) == "aspect_ratio"
    assert params["width"] is None
    assert params["height"] is None
    assert entry.limits is not None
    assert entry.limits.exact_sizes is False


def test_replicate_sdxl_takes_exact_sizes() -> None:
    """Replicate SDXL takes width and height as given."""
    entry = Catalog.load().models["sdxl"].entries["replicate"]
    params = entry.params or {}
    assert (params["width"], params["height"]) == ("width", "height")
    assert entry.limits is not None
    assert entry.limits.exact_sizes


@pytest.mark.parametrize("model", ["flux-dev", "flux-schnell", "sdxl"])
def test_replicate_safety_checker_is_inverted_and_documented(model: str) -> None:
    """Replicate's safety switch is disable_safety_checker, and the entry says it is inverted."""
    entry = Catalog.load().models[model].entries["replicate"]
    rule = (entry.params or {})["safety_checker"]
    assert param_target(rule) == "disable_safety_checker"
    assert isinstance(rule, ParamRule)
    assert rule.invert
    assert entry.description is not None
    assert "inverted" in entry.description


@pytest.mark.parametrize(
    ("provider", "model", "outputs"),
    [
        ("fal", "flux-dev", 4),
        ("fal", "flux-schnell", 4),
        ("replicate", "flux-dev", 4),
        ("replicate", "flux-schnell", 4),
        ("replicate", "flux-pro", 1),
        ("fal", "recraft-v3", 1),
        ("replicate", "recraft-v3", 1),
    ],
)
def test_max_outputs_per_call(provider: str, model: str, outputs: int) -> None:
    """Outputs per call follow each endpoint's limit (FLUX 1-4, single-URI models 1)."""
    assert deployment(provider, model).limits.max_outputs_per_call == outputs


@pytest.mark.parametrize("model", ["sdxl", "flux-dev"])
def test_modal_self_hosting_serves_loras_and_image_to_image(model: str) -> None:
    """The self-hosted Modal SDXL and FLUX-dev take LoRAs and input images."""
    capabilities = deployment("modal", model).capabilities
    assert {Capability.LORA, Capability.IMAGE_TO_IMAGE} <= capabilities


# ---------------------------------------------------------------------------
# Bad and user catalogs
# ---------------------------------------------------------------------------

BAD_CATALOGS = {
    "two-units": (
        """
        version: 1
        provider: fal
        models:
          flux-dev:
            endpoint: fal-ai/flux/dev
            price: {per_image: "0.01", per_megapixel: "0.02", source: me, date: "2026-01"}
        """,
        "models.flux-dev.price",
    ),
    "unknown-key": (
        """
        version: 1
        provider: fal
        models:
          flux-dev:
            endpoint: fal-ai/flux/dev
            limits: {max_outputs: 4}
        """,
        "models.flux-dev.limits.max_outputs",
    ),
    "missing-endpoint": (
        """
        version: 1
        provider: fal
        models:
          flux-dev:
            kind: image
        """,
        "models.flux-dev.endpoint",
    ),
}


@pytest.mark.parametrize(("text", "key_path"), BAD_CATALOGS.values(), ids=BAD_CATALOGS.keys())
def test_bad_catalog_error_names_the_key_path(tmp_path: Path, text: str, key_path: str) -> None:
    """A catalog file with a schema problem raises ConfigError naming the offending key path."""
    path = write(tmp_path, text.replace("\n        ", "\n"))
    with pytest.raises(ConfigError, match=re.escape(key_path)):
        load_catalog_file(path)


def test_unknown_key_error_suggests_the_nearest_key(tmp_path: Path) -> None:
    """A misspelt key gets the nearest valid key suggested."""
    text, _ = BAD_CATALOGS["unknown-key"]
    path = write(tmp_path, text.replace("\n        ", "\n"))
    with pytest.raises(ConfigError, match="did you mean 'max_outputs_per_call'"):
        load_catalog_file(path)


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    """A catalog that is not YAML raises ConfigError naming the file."""
    path = write(tmp_path, "version: 1\nmodels: [\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_catalog_file(path)


def test_missing_catalog_file_is_a_config_error(tmp_path: Path) -> None:
    """Catalog.load() with a user catalog that does not exist raises ConfigError."""
    with pytest.raises(ConfigError, match="cannot read catalog"):
        Catalog.load(extra=[tmp_path / "absent.yaml"])


def test_user_catalog_adds_a_model(tmp_path: Path) -> None:
    """A user catalog adds new models next to the shipped ones."""
    path = write(
        tmp_path,
        """
version: 1
provider: fal
models:
  my-flux-lora:
    endpoint: fal-ai/flux-lora
    kind: image
    aliases: [my-lora]
    capabilities: [text-to-image, lora]
    price: {per_megapixel: "0.035", source: fal.ai, date: "2026-05"}
""",
    )
    catalog = Catalog.load(extra=[path])
    assert catalog.models["my-flux-lora"].entries["fal"].endpoint == "fal-ai/flux-lora"
    assert catalog.resolve("my-lora") == "my-flux-lora"
    assert "flux-dev" in catalog.models


def test_user_catalog_shadows_the_shipped_entry(tmp_path: Path) -> None:
    """A user entry for a shipped model on the same provider replaces the shipped entry only."""
    path = write(
        tmp_path,
        """
version: 1
provider: fal
models:
  flux-dev:
    endpoint: fal-ai/flux/dev
    price: {per_image: "0.01", source: negotiated, date: "2026-11"}
""",
    )
    catalog = Catalog.load(extra=[path])
    entries = catalog.models["flux-dev"].entries
    assert entries["fal"].price is not None
    assert entries["fal"].price.per_image == Decimal("0.01")
    assert entries["replicate"].endpoint == "black-forest-labs/flux-dev"


def test_user_catalog_leaves_later_loads_untouched(tmp_path: Path) -> None:
    """Loading a user catalog does not change what a plain Catalog.load() returns."""
    path = write(
        tmp_path,
        """
version: 1
provider: fal
models:
  flux-dev: {endpoint: elsewhere/flux}
""",
    )
    Catalog.load(extra=[path])
    assert Catalog.load().models["flux-dev"].entries["fal"].endpoint == "fal-ai/flux/dev"


def test_user_catalog_defaults_merge_into_entries(tmp_path: Path) -> None:
    """A file's default params merge into each entry, and the entry's own mapping wins."""
    path = write(
        tmp_path,
        """
version: 1
provider: my-proxy
defaults:
  params: {prompt: text, steps: n_steps}
models:
  flux-dev:
    endpoint: proxy/flux-dev
    params: {steps: iterations}
""",
    )
    params = Catalog.load(extra=[path]).models["flux-dev"].entries["my-proxy"].params
    assert params == {"prompt": "text", "steps": "iterations"}


def test_user_catalog_changing_a_models_kind_is_an_error(tmp_path: Path) -> None:
    """A user catalog declaring a shipped image model as video raises ConfigError."""
    path = write(
        tmp_path,
        """
version: 1
provider: fal
models:
  flux-dev: {endpoint: fal-ai/flux/dev, kind: video}
""",
    )
    with pytest.raises(ConfigError, match="flux-dev") as info:
        Catalog.load(extra=[path])
    assert info.value.key_path == "models.flux-dev.kind"


# ---------------------------------------------------------------------------
# Pricing math on shipped deployments
# ---------------------------------------------------------------------------


def test_per_image_estimate_is_price_times_outputs() -> None:
    """A per-image estimate is the price times the requested outputs."""
    cost = deployment("fal", "flux-pro").estimate_cost(request("flux-pro", num_outputs=3))
    assert cost == Decimal("0.12")


def test_per_megapixel_estimate_rounds_megapixels_up() -> None:
    """fal flux-dev at 1536x1024 (1.5 fal megapixels of 1024x1024 pixels) bills 2 MP: $0.05."""
    cost = deployment("fal", "flux-dev").estimate_cost(request(width=1536, height=1024))
    assert cost == Decimal("0.05")


def test_fal_megapixel_is_1024_by_1024_pixels() -> None:
    """fal flux-dev at 1024x1024 is one billed megapixel: $0.025, as fal charges."""
    cost = deployment("fal", "flux-dev").estimate_cost(request(width=1024, height=1024))
    assert cost == Decimal("0.025")


def test_per_megapixel_estimate_uses_the_default_size() -> None:
    """Without a size, fal flux-dev prices its default 1024x768 (0.79 MP, billed as 1)."""
    cost = deployment("fal", "flux-dev").estimate_cost(request())
    assert cost == Decimal("0.025")


def test_per_megapixel_estimate_scales_with_outputs() -> None:
    """A per-megapixel estimate is per output image."""
    cost = deployment("fal", "flux-dev").estimate_cost(request(width=1024, height=1024, num_outputs=4))
    assert cost == Decimal("0.1")


def test_exact_megapixels_are_not_rounded() -> None:
    """Without ceil rounding, megapixels are billed exactly (to a millionth of a dollar)."""
    pricing = Pricing(unit=PriceUnit.PER_MEGAPIXEL, amount=Decimal("0.025"))
    cost = pricing.estimate(request(width=1024, height=1024), deployment("fal", "flux-dev"))
    assert cost == Decimal("0.026214")


def test_per_video_second_estimate_uses_the_requested_duration() -> None:
    """A per-second video price times the requested duration: 10 s of Kling is $0.45."""
    cost = deployment("fal", "kling-video").estimate_cost(request("kling-video", duration_s=10))
    assert cost == Decimal("0.45")


def test_per_video_second_estimate_uses_the_default_duration() -> None:
    """Without a duration, a per-second video price uses the default (5 s of Kling: $0.225)."""
    cost = deployment("fal", "kling-video").estimate_cost(request("kling-video"))
    assert cost == Decimal("0.225")


def test_per_video_estimate() -> None:
    """A per-video price is charged once per video."""
    cost = deployment("replicate", "minimax-video").estimate_cost(request("minimax-video"))
    assert cost == Decimal("0.5")


def test_per_gpu_second_estimate_uses_seconds_per_output() -> None:
    """A GPU-second estimate is rate x estimated seconds per output x outputs."""
    dep = deployment("modal", "sdxl")
    cost = dep.estimate_cost(request("sdxl", num_outputs=2))
    assert dep.gpu_seconds_per_output == 2.2  # eager SDXL, the class's default (providers/modal.yaml)
    assert cost == (Decimal("0.001097") * Decimal("2.2") * 2).quantize(Decimal("0.000001"))


def test_actual_per_image_counts_the_outputs_returned() -> None:
    """Actual per-image cost counts outputs returned (a provider may drop flagged images)."""
    dep = deployment("replicate", "flux-dev")
    assert dep.pricing is not None
    amount, basis = dep.pricing.actual(request(num_outputs=4), result(image(), image()), dep)
    assert amount == Decimal("0.05")
    assert basis.startswith("2 ")


def test_actual_per_megapixel_uses_the_output_sizes() -> None:
    """Actual per-megapixel cost uses each output's reported size, rounded up per image."""
    dep = deployment("fal", "flux-dev")
    assert dep.pricing is not None
    outputs = result(image(1536, 1024), image(512, 512))
    amount, _ = dep.pricing.actual(request(), outputs, dep)
    assert amount == Decimal("0.075")


def test_actual_per_megapixel_falls_back_to_the_request_size() -> None:
    """An output without a reported size is priced at the requested size."""
    dep = deployment("fal", "flux-dev")
    assert dep.pricing is not None
    amount, _ = dep.pricing.actual(request(width=2048, height=2048), result(image()), dep)
    assert amount == Decimal("0.1")


def test_actual_per_video_second_uses_the_output_duration() -> None:
    """Actual per-second video cost uses each output's reported duration."""
    dep = deployment("fal", "kling-video")
    assert dep.pricing is not None
    video = Artifact(kind=ArtifactKind.VIDEO, url="https://example.test/v.mp4", duration_s=10)
    amount, _ = dep.pricing.actual(request("kling-video"), result(video), dep)
    assert amount == Decimal("0.45")


def test_actual_per_gpu_second_uses_running_time() -> None:
    """Actual GPU-second cost is the rate times the provider's running time."""
    dep = deployment("modal", "flux-dev")
    assert dep.pricing is not None
    amount, basis = dep.pricing.actual(request(), result(image(), running_s=3.5), dep)
    assert amount == Decimal("0.00384")  # 0.001097 x 3.5 = 0.0038395, to the millionth
    assert "GPU-s" in basis


def test_actual_per_gpu_second_without_timing_is_unknown() -> None:
    """Without a running time, a GPU-second cost is None (unknown), never 0."""
    dep = deployment("replicate", "sdxl")
    assert dep.pricing is not None
    amount, basis = dep.pricing.actual(request("sdxl"), result(image()), dep)
    assert amount is None
    assert "unknown" in basis


def test_per_megapixel_without_any_size_is_unknown() -> None:
    """A per-megapixel price with no requested and no default size estimates None."""
    entry = CatalogEntry.model_validate(
        {"endpoint": "x", "price": {"per_megapixel": "0.025", "source": "s", "date": "2026-01"}}
    )
    dep = build_deployment(provider="p", provider_type="fal", model="m", entry=entry, spec=None)
    assert dep.estimate_cost(request()) is None


# ---------------------------------------------------------------------------
# Pricing math: properties
# ---------------------------------------------------------------------------

amounts = st.decimals(min_value=0, max_value=100, places=6, allow_nan=False, allow_infinity=False)
outputs_count = st.integers(min_value=1, max_value=16)
sides = st.integers(min_value=16, max_value=8192)
default_sizes = st.none() | st.tuples(
    st.integers(min_value=16, max_value=4096), st.integers(min_value=16, max_value=4096)
)


def synthetic(
    pricing: Pricing | None,
    *,
    default_size: tuple[int, int] | None = (1024, 1024),
    default_duration_s: float | None = 5.0,
    gpu_seconds_per_output: float | None = 2.0,
) -> Deployment:
    return Deployment(
        provider="p",
        provider_type="simulated",
        model="m",
        endpoint="e",
        kind="image",
        capabilities=frozenset({Capability.TEXT_TO_IMAGE}),
        limits=Limits(default_size=default_size, default_duration_s=default_duration_s),
        params={},
        pricing=pricing,
        gpu_seconds_per_output=gpu_seconds_per_output,
    )


@settings(deadline=None)
@given(amount=amounts, n=outputs_count)
def test_per_image_estimate_is_exact(amount: Decimal, n: int) -> None:
    """A per-image estimate equals price x outputs exactly, as a Decimal."""
    pricing = Pricing(unit=PriceUnit.PER_IMAGE, amount=amount)
    assert synthetic(pricing).estimate_cost(request(num_outputs=n)) == amount * n


@settings(deadline=None)
@given(amount=amounts, width=sides, height=sides, n=outputs_count)
def test_ceil_megapixels_never_cost_less(amount: Decimal, width: int, height: int, n: int) -> None:
    """Rounding megapixels up never costs less than billing them exactly."""
    req = request(width=width, height=height, num_outputs=n)
    ceil = synthetic(Pricing(PriceUnit.PER_MEGAPIXEL, amount, ceil_megapixels=True))
    exact = synthetic(Pricing(PriceUnit.PER_MEGAPIXEL, amount, ceil_megapixels=False))
    ceil_cost, exact_cost = ceil.estimate_cost(req), exact.estimate_cost(req)
    assert ceil_cost is not None
    assert exact_cost is not None
    assert ceil_cost >= exact_cost


@settings(deadline=None)
@given(
    unit=st.sampled_from(PriceUnit),
    amount=amounts,
    n=outputs_count,
    size=st.none() | st.tuples(sides, sides),
    duration=st.none() | st.floats(min_value=0.1, max_value=600),
    running=st.none() | st.floats(min_value=0, max_value=3600),
    ceil=st.booleans(),
)
def test_cost_is_never_negative(
    unit: PriceUnit,
    amount: Decimal,
    n: int,
    size: tuple[int, int] | None,
    duration: float | None,
    running: float | None,
    ceil: bool,
) -> None:
    """Estimated and actual costs are never negative, whatever the unit."""
    dep = synthetic(Pricing(unit, amount, ceil_megapixels=ceil))
    fields: dict[str, Any] = {"num_outputs": n, "duration_s": duration}
    if size is not None:
        fields.update(width=size[0], height=size[1])
    req = request(**fields)
    estimate = dep.estimate_cost(req)
    assert estimate is None or estimate >= 0
    assert dep.pricing is not None
    actual, _ = dep.pricing.actual(req, result(image(), running_s=running), dep)
    assert actual is None or actual >= 0


@settings(deadline=None)
@given(
    unit=st.sampled_from(PriceUnit),
    priced=st.booleans(),
    amount=amounts,
    n=outputs_count,
    default_size=default_sizes,
    sizing=st.sampled_from(["none", "explicit", "aspect_ratio"]),
    duration=st.none() | st.floats(min_value=0.5, max_value=60),
    default_duration=st.none() | st.floats(min_value=0.5, max_value=60),
    gpu_seconds=st.none() | st.floats(min_value=0.1, max_value=60),
)
def test_estimate_is_none_iff_price_or_quantity_unknown(
    unit: PriceUnit,
    priced: bool,
    amount: Decimal,
    n: int,
    default_size: tuple[int, int] | None,
    sizing: str,
    duration: float | None,
    default_duration: float | None,
    gpu_seconds: float | None,
) -> None:
    """An estimate is None exactly when the price, or the quantity it is per, is unknown."""
    dep = synthetic(
        Pricing(unit, amount, ceil_megapixels=True) if priced else None,
        default_size=default_size,
        default_duration_s=default_duration,
        gpu_seconds_per_output=gpu_seconds,
    )
    fields: dict[str, Any] = {"num_outputs": n, "duration_s": duration}
    if sizing == "explicit":
        fields.update(width=768, height=512)
    elif sizing == "aspect_ratio":
        fields.update(aspect_ratio="16:9")
    known = {
        PriceUnit.PER_IMAGE: True,
        PriceUnit.PER_VIDEO: True,
        PriceUnit.PER_MEGAPIXEL: sizing == "explicit" or default_size is not None,
        PriceUnit.PER_VIDEO_SECOND: duration is not None or default_duration is not None,
        PriceUnit.PER_GPU_SECOND: gpu_seconds is not None,
        PriceUnit.PER_RUN: True,
    }[unit]
    estimate = dep.estimate_cost(request(**fields))
    assert (estimate is None) == (not priced or not known)
