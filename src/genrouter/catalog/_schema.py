"""The schema of a catalog file: entries, variants, defaults, limits and capabilities (pydantic).

What YAML may say and how it is checked; :mod:`genrouter.catalog` loads files into these
models, merges them and re-exports the public names from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genrouter.catalog._params import (
    Kind,
    ParamMapping,
    check_alias,
)
from genrouter.catalog._pricing import Price
from genrouter.catalog._workflows import InputSpec, parse_inputs

__all__ = [
    "Capability",
    "CatalogDefaults",
    "CatalogEntry",
    "CatalogFile",
    "CatalogVariant",
    "Limits",
    "ReducedSize",
]


class Capability(StrEnum):
    """A feature a deployment supports. Requests needing one exclude deployments without it."""

    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    INPAINTING = "inpainting"
    LORA = "lora"
    TEXT_TO_VIDEO = "text-to-video"
    IMAGE_TO_VIDEO = "image-to-video"
    UPSCALE = "upscale"
    REMOVE_BACKGROUND = "remove-background"


_CATALOG = ConfigDict(extra="forbid", frozen=True)


Range = Annotated[tuple[int, int], Field(description="[min, max], inclusive")]


class ReducedSize(BaseModel):
    """A model's smaller output mode (Replicate FLUX's ``megapixels: "0.25"``).

    A requested size under ``below_megapixels`` adds ``input`` to the provider input,
    and each side of a ``sizes`` entry is multiplied by ``scale``.
    """

    model_config = _CATALOG

    below_megapixels: float = Field(gt=0)
    input: dict[str, Any]
    scale: float = Field(gt=0, le=1)


class Limits(BaseModel):
    """Input limits of a deployment. Requests outside them exclude the deployment."""

    model_config = _CATALOG

    max_outputs_per_call: int = Field(default=1, ge=1, le=64)
    width: Range | None = None
    height: Range | None = None
    multiple_of: int | None = Field(default=None, ge=1)
    exact_sizes: bool = True
    default_size: tuple[int, int] | None = None
    durations_s: list[float] | None = None
    duration_range_s: tuple[float, float] | None = None
    default_duration_s: float | None = None
    max_loras: int | None = Field(default=None, ge=0)
    sizes: dict[str, tuple[int, int]] | None = None
    """Output size per aspect ratio, for models that take ratios, not sizes (``"16:9": [1344, 768]``)."""
    reduced_size: ReducedSize | None = None
    """Smaller outputs: sizes under ``below_megapixels`` send ``input`` and scale ``sizes``."""

    @field_validator("default_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and (value[0] <= 0 or value[1] <= 0):
            raise ValueError(f"default_size {list(value)} must be positive")
        return value

    @field_validator("width", "height", "duration_range_s")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError(f"range [{value[0]}, {value[1]}] has min > max")
        return value


class _ParamsChecked(BaseModel):
    """The checks of a ``params`` mapping that variants and catalog defaults share."""

    @field_validator("params", mode="before", check_fields=False)
    @classmethod
    def _value_maps(cls, value: Any) -> Any:
        return _media_param_shapes(value)

    @field_validator("params", check_fields=False)
    @classmethod
    def _request_fields(cls, value: ParamMapping | None) -> ParamMapping | None:
        return _check_param_keys(value)


class CatalogVariant(_ParamsChecked):
    """Another deployment of the same model on the same provider (``variants:``).

    It inherits every key of its parent entry except those it sets; its ``params``
    merge over the parent's. The router picks it when the request needs one of its
    ``capabilities`` (e.g. an image-to-image endpoint beside a text-to-image one).
    """

    model_config = _CATALOG

    endpoint: str = Field(min_length=1)
    capabilities: list[Capability] | None = None
    limits: Limits | None = None
    params: ParamMapping | None = None
    price: Price | None = None
    gpu_seconds_per_output: float | None = Field(default=None, gt=0)
    description: str | None = None


class CatalogEntry(BaseModel):
    """One model as one provider serves it (a row of a catalog file or inline ``models:``)."""

    model_config = _CATALOG

    endpoint: str = Field(min_length=1)
    kind: Kind | None = None
    aliases: list[str] = Field(default_factory=list)
    capabilities: list[Capability] | None = None
    limits: Limits | None = None
    params: ParamMapping | None = None
    price: Price | None = None
    gpu_seconds_per_output: float | None = Field(default=None, gt=0)
    description: str | None = None
    variants: list[CatalogVariant] | None = None
    inputs: dict[str, InputSpec] | None = None
    """A workflow's named inputs and their types (see :mod:`genrouter.catalog._workflows`)."""

    @field_validator("params", mode="before")
    @classmethod
    def _value_maps(cls, value: Any) -> Any:
        return _media_param_shapes(value)

    @field_validator("inputs", mode="before")
    @classmethod
    def _input_specs(cls, value: Any) -> Any:
        return parse_inputs(value) if isinstance(value, Mapping) else value

    @model_validator(mode="after")
    def _request_fields(self) -> CatalogEntry:
        # A workflow's params also map its input names; the router checks those keys
        # against the model's declared inputs (which may live on another entry).
        if self.kind != "workflow":
            _check_param_keys(self.params)
        if self.inputs is not None and self.kind not in (None, "workflow"):
            raise ValueError(f"inputs are declared by workflow entries, not {self.kind} ones")
        return self

    @field_validator("aliases")
    @classmethod
    def _no_colons(cls, value: list[str]) -> list[str]:
        for alias in value:
            check_alias(alias, "alias")
        return value

    def expanded(self) -> list[CatalogEntry]:
        """This entry and each of its variants as a plain entry (variants inherit from it)."""
        base = self.model_copy(update={"variants": None}) if self.variants else self
        out = [base]
        for variant in self.variants or ():
            update: dict[str, Any] = {
                name: getattr(variant, name) for name in variant.model_fields_set if name != "params"
            }
            if variant.params is not None:
                update["params"] = {**(self.params or {}), **variant.params}
            out.append(base.model_copy(update=update))
        return out


def _media_param_shapes(value: Any) -> Any:
    """``images: {to: image_urls}`` → ``image_urls``; ``images: [first_frame_url, last_frame_url]``
    (one input per image, in order) → ``"first_frame_url,last_frame_url"``."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key, target in value.items():
        if isinstance(target, dict) and set(target) == {"to"}:
            target = target["to"]
        if isinstance(target, list) and key == "images" and all(isinstance(t, str) for t in target):
            target = ",".join(target)
        out[key] = target
    return out


def _check_param_keys(value: ParamMapping | None) -> ParamMapping | None:
    """``params`` keys must be GenerationRequest fields (a typo would silently do nothing)."""
    if value:
        from genrouter.types import GenerationRequest

        fields = GenerationRequest.model_fields
        unknown = [k for k in value if k not in fields]
        if unknown:
            close = [difflib.get_close_matches(k, list(fields), n=1) for k in unknown]
            hints = [
                f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "")
                for k, c in zip(unknown, close, strict=True)
            ]
            raise ValueError(f"params maps unknown request field(s) {', '.join(hints)}")
    return value


class CatalogDefaults(_ParamsChecked):
    """Values merged into every entry of a catalog file."""

    model_config = _CATALOG

    capabilities: list[Capability] | None = None
    limits: Limits | None = None
    params: ParamMapping | None = None
    passthrough_params: ParamMapping | None = None
    """Merged over ``params`` for passthrough models only (an endpoint no entry describes):
    the provider's usual names for media inputs (fal's ``image_url``), which the standard
    mapping leaves null because most of its models take none."""


class CatalogFile(BaseModel):
    """A whole catalog file."""

    model_config = _CATALOG

    version: Literal[1] = 1
    provider: str = Field(min_length=1)
    description: str | None = None
    defaults: CatalogDefaults = Field(default_factory=CatalogDefaults)
    models: dict[str, CatalogEntry]
    gpu_prices: dict[str, Price] | None = None
    """Self-hosted classes: the price of each GPU type by its name (``H100``, ``A100-80GB``), so
    that a result naming the GPU that ran is priced at that GPU's rate (``providers/modal.yaml``)."""

    @field_validator("models")
    @classmethod
    def _no_colons(cls, value: dict[str, CatalogEntry]) -> dict[str, CatalogEntry]:
        for name in value:
            check_alias(name, "model")
        return value
