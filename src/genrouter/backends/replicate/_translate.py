"""How a :class:`~genrouter.types.GenerationRequest` becomes a Replicate model's input: sizes
(exact, aspect-ratio tables, FLUX's reduced sizes), output formats and LoRAs. Used by
:class:`~genrouter.backends.replicate.ReplicateBackend`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from genrouter.backends._mapping import allowed_ratios
from genrouter.catalog import Deployment, Limits, load_catalog_file, param_target, shipped_catalog_dir
from genrouter.errors import ConfigError
from genrouter.types import GenerationRequest

__all__ = [
    "FLUX_ASPECT_RATIOS",
    "SIZE_FIELDS",
    "output_size",
    "request_params",
    "translate_format",
    "translate_loras",
    "translate_size",
]

FLUX_ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
"""The aspect ratios FLUX models on Replicate accept: the fallback for an entry whose
``aspect_ratio`` value map lists none. Per-model lists, output sizes per ratio
(``limits.sizes``) and the small-output mode (``limits.reduced_size``) live in
``providers/replicate.yaml``."""

_CUSTOM_SIZES = ((256, 1440), 16)  # BFL's aspect_ratio "custom": sides 256-1440, multiples of 16

_IMAGE_FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
SIZE_FIELDS = ("width", "height", "aspect_ratio")
"""The request fields that fix an output's size."""


@functools.cache
def _standard_params() -> dict[str, str | None]:
    """The shipped Replicate catalog's default mapping (for inline entries without ``params``)."""
    try:
        defaults = load_catalog_file(shipped_catalog_dir() / "replicate.yaml").defaults.params
    except ConfigError:
        defaults = None
    return {name: param_target(value) for name, value in (defaults or {"prompt": "prompt"}).items()}


def request_params(deployment: Deployment) -> dict[str, str | None]:
    return {**_standard_params(), **deployment.params}


def _ratio_distance(width: float, height: float, ratio: str) -> float:
    rw, rh = (int(x) for x in ratio.split(":"))
    return abs(math.log(width / height) - math.log(rw / rh))


def _nearest_ratio(width: float, height: float, ratios: tuple[str, ...]) -> str:
    return min(ratios, key=lambda r: _ratio_distance(width, height, r))


def _table_size(limits: Limits, ratio: Any, payload: Mapping[str, Any]) -> tuple[int, int] | None:
    """The output size of ``ratio`` from the entry's ``limits.sizes`` (scaled when reduced)."""
    size = limits.sizes.get(ratio) if limits.sizes and isinstance(ratio, str) else None
    reduced = limits.reduced_size
    if size is not None and reduced is not None and _reduced(payload, reduced.input):
        return int(size[0] * reduced.scale), int(size[1] * reduced.scale)
    return size


def _reduced(payload: Mapping[str, Any], marker: Mapping[str, Any]) -> bool:
    return all(str(payload.get(k)) == str(v) for k, v in marker.items())


def _snap(value: int, bounds: tuple[int, int] | None, step: int) -> int:
    value = max(step, math.floor(value / step + 0.5) * step)  # half up: 1000 → 1008 in 16s
    if bounds is not None:
        value = min(max(value, math.ceil(bounds[0] / step) * step), bounds[1] // step * step)
    return value


def _exact_size(width: int, height: int, limits: Limits, custom: bool) -> tuple[int, int]:
    """The nearest size the model accepts: ``multiple_of`` and bounds (BFL's for ``custom``)."""
    default_bounds, default_step = _CUSTOM_SIZES if custom else (None, 1)
    step = limits.multiple_of or default_step
    return (
        _snap(width, limits.width or default_bounds, step),
        _snap(height, limits.height or default_bounds, step),
    )


def translate_size(
    request: GenerationRequest,
    deployment: Deployment,
    params: Mapping[str, str | None],
    prefix: str,
) -> tuple[dict[str, Any], list[str]]:
    """Size inputs: exact sizes where the model takes them, else the nearest aspect ratio."""
    out: dict[str, Any] = {}
    warnings: list[str] = []
    w_key, h_key, ar_key = (params.get(f) for f in SIZE_FIELDS)
    ratios = tuple(allowed_ratios(deployment) or FLUX_ASPECT_RATIOS)
    limits = deployment.limits
    if request.width is not None and request.height is not None:
        width, height = request.width, request.height
        if w_key and h_key:
            sent = _exact_size(width, height, deployment.limits, custom=bool(ar_key))
            out[w_key], out[h_key] = sent
            if ar_key:
                out[ar_key] = "custom"
            if sent != (width, height):
                warnings.append(f"{prefix} cannot make {width}x{height}; sent {sent[0]}x{sent[1]}")
        elif ar_key:
            ratio = _nearest_ratio(width, height, ratios)
            out[ar_key] = ratio
            reduced = limits.reduced_size
            if reduced is not None and width * height < reduced.below_megapixels * 1_000_000:
                out.update(reduced.input)
            size = _table_size(limits, ratio, out)
            if _ratio_distance(width, height, ratio) > 1e-9 or (size and size != (width, height)):
                about = f" (about {size[0]}x{size[1]})" if size else ""
                warnings.append(
                    f"{prefix} takes aspect ratios, not sizes: {width}x{height} was sent as "
                    f"aspect_ratio {ratio}{about}"
                )
        else:
            warnings.append(f"{prefix} has no size input; {width}x{height} was ignored")
    elif request.aspect_ratio is not None:
        asked = request.aspect_ratio
        if ar_key:
            w, h = (int(x) for x in asked.split(":"))
            ratio = asked if asked in ratios else _nearest_ratio(w, h, ratios)
            out[ar_key] = ratio
            if _ratio_distance(w, h, ratio) > 1e-9:
                warnings.append(f"{prefix} does not take aspect_ratio {asked}; sent the nearest, {ratio}")
        elif w_key and h_key:
            size = deployment.size_for(request) or (1024, 1024)
            out[w_key], out[h_key] = _exact_size(*size, deployment.limits, custom=False)
        else:
            warnings.append(f"{prefix} has no size input; aspect_ratio {asked} was ignored")
    return out, warnings


def output_size(
    payload: Mapping[str, Any], params: Mapping[str, str | None], limits: Limits
) -> tuple[int, int] | None:
    """The size outputs will have, when the input fixes it (exact sizes, or FLUX's table)."""
    w_key, h_key, ar_key = (params.get(f) for f in SIZE_FIELDS)
    ratio = payload.get(ar_key or "aspect_ratio")
    width = height = None
    if ratio == "custom":
        width, height = payload.get(w_key or "width"), payload.get(h_key or "height")
    elif w_key and h_key and ratio is None:
        width, height = payload.get(w_key), payload.get(h_key)
    if type(width) is int and type(height) is int:
        return width, height
    return _table_size(limits, ratio if ratio is not None else "1:1", payload)


def translate_format(
    request: GenerationRequest,
    deployment: Deployment,
    params: Mapping[str, str | None],
    payload: dict[str, Any],
    prefix: str,
) -> list[str]:
    wanted = request.output_format
    if wanted is None:
        return []
    target = params.get("output_format")
    if not target:
        return [f"{prefix} has no output_format input; output_format={wanted!r} was ignored"]
    if deployment.kind == "image":
        if wanted not in _IMAGE_FORMATS:
            return [f"{prefix} makes png, jpeg or webp images, not {wanted}; output_format was ignored"]
        renamed = "output_format" in deployment.rules  # the value map renames (jpeg: jpg)
        payload[target] = wanted if renamed else _IMAGE_FORMATS[wanted]
    else:
        payload[target] = wanted
    return []


def translate_loras(
    request: GenerationRequest, params: Mapping[str, str | None], payload: dict[str, Any], prefix: str
) -> list[str]:
    if not request.loras:
        return []
    target = params.get("loras")
    if not target:
        return [f"{prefix} has no LoRA input; {len(request.loras)} LoRA(s) were ignored"]
    first = request.loras[0]
    payload[target] = first.source
    payload[target.removesuffix("_weights") + "_scale"] = first.scale
    if len(request.loras) > 1:
        return [f"{prefix} takes one LoRA; only {first.source!r} was sent"]
    return []
