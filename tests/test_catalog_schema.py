"""The catalog format's value maps, variants and kinds (issue 12), as a catalog file writes them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genrouter import ConfigError
from genrouter.catalog import Capability, Catalog, CatalogEntry, ParamRule, load_catalog_file


def _write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


MAPPED = {
    "version": 1,
    "provider": "fal",
    "models": {
        "kling-demo": {
            "endpoint": "fal-ai/kling-demo",
            "kind": "video",
            "params": {
                "prompt": "prompt",
                "image": {"to": "image_urls", "wrap": "list"},
                "output_format": {"to": "output_format", "values": {"jpeg": "jpg"}},
                "aspect_ratio": {"to": "aspect_ratio", "allowed": ["16:9", "9:16", "1:1"]},
                "duration_s": {"to": "duration", "allowed": [5, 10], "as": "string"},
                "safety_checker": {"to": "disable_safety_checker", "invert": True},
            },
            "price": {"per_video_second": "0.05", "source": "test", "date": "2026-12-07"},
        }
    },
}


def test_value_maps_load_from_yaml(tmp_path: Path) -> None:
    """Every value-map form of the issue's syntax parses into a ParamRule."""
    entry = load_catalog_file(_write(tmp_path, MAPPED)).models["kling-demo"]
    params = entry.params or {}
    assert params["prompt"] == "prompt"
    assert params["image"] == ParamRule(to="image_urls", wrap="list")
    duration = params["duration_s"]
    assert isinstance(duration, ParamRule)
    assert (duration.to, duration.allowed, duration.as_) == ("duration", [5, 10], "string")
    assert isinstance(params["safety_checker"], ParamRule)
    assert params["safety_checker"].invert


def test_unknown_value_map_key_is_a_config_error(tmp_path: Path) -> None:
    """A typo inside a value map is rejected, naming the key."""
    bad = {**MAPPED, "models": {"m": {"endpoint": "e", "params": {"image": {"to": "x", "wrapp": "list"}}}}}
    with pytest.raises(ConfigError, match="wrapp"):
        load_catalog_file(_write(tmp_path, bad))


def test_variants_inherit_from_their_parent() -> None:
    """A variant keeps every parent key it does not set; its params merge over the parent's."""
    entry = CatalogEntry.model_validate(
        {
            "endpoint": "fal-ai/flux/dev",
            "kind": "image",
            "capabilities": ["text-to-image"],
            "params": {"prompt": "prompt", "guidance": "guidance_scale"},
            "price": {"per_megapixel": "0.025"},
            "variants": [
                {
                    "endpoint": "fal-ai/flux/dev/image-to-image",
                    "capabilities": ["image-to-image"],
                    "params": {"image": "image_url", "strength": "strength"},
                    "price": {"per_megapixel": "0.03"},
                }
            ],
        }
    )
    parent, variant = entry.expanded()
    assert parent.endpoint == "fal-ai/flux/dev"
    assert parent.variants is None
    assert variant.endpoint == "fal-ai/flux/dev/image-to-image"
    assert variant.kind == "image"
    assert variant.capabilities == [Capability.IMAGE_TO_IMAGE]
    assert variant.params == {
        "prompt": "prompt",
        "guidance": "guidance_scale",
        "image": "image_url",
        "strength": "strength",
    }
    assert variant.price is not None
    assert str(variant.price.per_megapixel) == "0.03"


@pytest.mark.parametrize("kind", ["image", "video", "upscale", "remove-background", "workflow"])
def test_every_kind_is_accepted(kind: str) -> None:
    """The catalog accepts each kind of the contract."""
    assert CatalogEntry.model_validate({"endpoint": "e", "kind": kind}).kind == kind


def test_upscale_and_remove_background_are_capabilities() -> None:
    """upscale and remove-background are capabilities an entry may list."""
    entry = CatalogEntry.model_validate({"endpoint": "e", "capabilities": ["upscale", "remove-background"]})
    assert entry.capabilities == [Capability.UPSCALE, Capability.REMOVE_BACKGROUND]


def test_an_alias_with_a_colon_is_rejected(tmp_path: Path) -> None:
    """Aliases never contain ':' (that form is a passthrough), so a catalog naming one fails to load."""
    bad = {"version": 1, "provider": "fal", "models": {"m": {"endpoint": "e", "aliases": ["fal:m"]}}}
    with pytest.raises(ConfigError, match="':'"):
        load_catalog_file(_write(tmp_path, bad))


def test_a_model_name_with_a_colon_is_rejected(tmp_path: Path) -> None:
    """A catalog model named with ':' fails to load."""
    bad = {"version": 1, "provider": "fal", "models": {"fal:m": {"endpoint": "e"}}}
    with pytest.raises(ConfigError, match="':'"):
        Catalog.load([_write(tmp_path, bad)])


def test_an_inline_model_with_a_colon_is_rejected() -> None:
    """An inline models: key with ':' is a ConfigError at config load."""
    from genrouter import AsyncRouter

    sim = {"type": "simulated", "latency": 0, "models": {"a:b": {"endpoint": "x"}}}
    with pytest.raises(ConfigError, match="':'"):
        AsyncRouter.from_config({"version": 1, "providers": {"sim": sim}})
