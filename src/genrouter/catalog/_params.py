"""The shapes of a catalog entry's ``params`` and ``kind`` (data only; see :mod:`genrouter.catalog`).

A ``params`` value is the provider's input name, null (no such input), or a value map
(:class:`ParamRule`) applied by :mod:`genrouter.backends._mapping`. Re-exported from
:mod:`genrouter.catalog`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "IMAGE_INPUT_KINDS",
    "KINDS",
    "PROMPTLESS_KINDS",
    "STANDARD_FIELDS",
    "Kind",
    "ParamMapping",
    "ParamRule",
    "ParamValue",
    "check_alias",
    "param_target",
]

Kind = Literal["image", "video", "upscale", "remove-background", "workflow"]
"""What a model makes. ``upscale`` and ``remove-background`` models take an ``image``."""

KINDS: tuple[str, ...] = ("image", "video", "upscale", "remove-background", "workflow")

PROMPTLESS_KINDS = frozenset({"upscale", "remove-background", "workflow"})
"""Kinds whose models need no prompt input (every other kind must map ``prompt``)."""

IMAGE_INPUT_KINDS = frozenset({"upscale", "remove-background"})
"""Kinds whose requests must carry an ``image`` (the picture to upscale or cut out)."""

STANDARD_FIELDS = (
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
)
"""Request fields a standard mapping covers (the identity mapping of types without a catalog)."""


class ParamRule(BaseModel):
    """One request field's mapping when a rename is not enough, as YAML writes it::

        image: {to: image_urls, wrap: list}                     # sent as [value]
        output_format: {to: output_format, values: {jpeg: jpg}} # renamed values
        aspect_ratio: {to: aspect_ratio, allowed: ["16:9", "1:1"]}  # nearest allowed, warned
        duration_s: {to: duration, allowed: [5, 10], as: string}    # nearest number, then "5"
        safety_checker: {to: disable_safety_checker, invert: true}

    Applied in this order: ``values`` (rename), ``allowed`` (aspect ratios and numbers
    snap to the nearest allowed value with a warning; any other value not allowed is
    dropped with a warning), ``as`` (convert to ``string``, ``integer`` or ``number``),
    ``invert`` (booleans), ``wrap``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    to: str | None
    wrap: Literal["list"] | None = None
    values: dict[str, Any] | None = None
    allowed: list[Any] | None = Field(default=None, min_length=1)
    as_: Literal["string", "integer", "number"] | None = Field(default=None, alias="as")
    invert: bool = False


ParamValue = str | ParamRule | None
"""A ``params`` value: the provider's input name, a :class:`ParamRule`, or null (no such input)."""

ParamMapping = dict[str, ParamValue]


def param_target(value: ParamValue) -> str | None:
    """The provider input name a ``params`` value sends to (None: no such input)."""
    return value.to if isinstance(value, ParamRule) else value


def check_alias(name: str, what: str) -> str:
    """``name`` if it has no ``:`` (aliases never do: that form is a passthrough), else ValueError."""
    if ":" in name:
        raise ValueError(
            f"{what} {name!r} contains ':'; aliases never contain ':' (a model of the form "
            "'<provider-key>:<endpoint>' is a passthrough), so rename it"
        )
    return name
