"""How a :class:`~genrouter.types.GenerationRequest` becomes a fal endpoint's input: sizes
(fal's ``image_size`` presets), output formats, durations and the request fields put under
fal's names. Used by :class:`~genrouter.backends.fal.FalBackend`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from genrouter.backends._mapping import (
    allowed_ratios,
    nearest_ratio,
    ratio_of,
    snapped_aspect_ratio,
)
from genrouter.types import GenerationRequest

if TYPE_CHECKING:
    from genrouter.catalog import Deployment, ParamRule

__all__ = [
    "IMAGE_SIZE_PRESETS",
    "OUTPUT_FORMATS",
    "FalInput",
    "put",
    "rule_duration",
    "translate_duration",
    "translate_format",
    "translate_size",
]

IMAGE_SIZE_PRESETS: Mapping[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
"""fal's named ``image_size`` values (width, height)."""

OUTPUT_FORMATS = ("jpeg", "png")
"""Image formats fal's image endpoints produce; others are asked as PNG, with a warning."""


def _image_size(width: int, height: int) -> str | dict[str, int]:
    """fal's preset name when the size is exactly one, else ``{width, height}``."""
    for name, size in IMAGE_SIZE_PRESETS.items():
        if size == (width, height):
            return name
    return {"width": width, "height": height}


def _nearest_preset(aspect_ratio: str, area: int) -> tuple[str, bool]:
    """The preset nearest ``aspect_ratio`` (in log ratio, then in area) and whether it matches exactly."""
    w, h = (int(x) for x in aspect_ratio.split(":"))
    wanted = Fraction(w, h)

    def distance(item: tuple[str, tuple[int, int]]) -> tuple[float, float]:
        pw, ph = item[1]
        return abs(math.log(pw / ph) - math.log(w / h)), abs(pw * ph - area)

    name, (pw, ph) = min(IMAGE_SIZE_PRESETS.items(), key=distance)
    return name, Fraction(pw, ph) == wanted


def _duration_value(seconds: float) -> str:
    """fal's enumerated durations are strings: ``5`` → ``"5"``, ``7.5`` → ``"7.5"``."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


@dataclass(slots=True)
class FalInput:
    """fal's input for one request, and what translating it changed."""

    payload: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    """fal input name → request field, to name the request field in a 422."""
    output_format: str | None = None
    duration_s: float | None = None


def rule_duration(deployment: Deployment, out: FalInput) -> None:
    """The clip length a ``duration_s`` value map settled on, for the result and cost."""
    rule = deployment.rules.get("duration_s")
    if rule is None or not rule.to or rule.to not in out.payload:
        return
    try:
        out.duration_s = float(out.payload[rule.to])
    except (TypeError, ValueError):
        return


def put(
    out: FalInput, params: Mapping[str, str | None], name: str, value: Any, where: str, shown: str = ""
) -> None:
    target = params.get(name)
    if not target:
        out.warnings.append(f"{where} has no input for {name}; {shown or f'{name}={value!r}'} was ignored")
        return
    out.payload[target] = value
    out.names[target] = name


def translate_size(deployment: Deployment, request: GenerationRequest, out: FalInput, where: str) -> None:
    params = deployment.params
    if request.width is not None and request.height is not None:
        width_to, height_to = params.get("width"), params.get("height")
        ratio_to = params.get("aspect_ratio")
        if (not width_to or not height_to) and ratio_to and ratio_to != "image_size":
            # Takes only a ratio: the nearest one it allows (the size's own without a list).
            allowed = allowed_ratios(deployment)
            shown = f"{request.width}x{request.height}"
            sent = (
                nearest_ratio(request.width, request.height, allowed)
                if allowed
                else ratio_of(request.width, request.height)
            )
            out.payload[ratio_to] = sent
            out.names[ratio_to] = "aspect_ratio"
            out.warnings.append(f"{where} takes aspect ratios, not sizes: {shown} was sent as {sent}")
        elif not width_to or not height_to:
            out.warnings.append(
                f"{where} has no input for width/height; {request.width}x{request.height} was ignored"
            )
        elif width_to == height_to:
            out.payload[width_to] = _image_size(request.width, request.height)
            out.names[width_to] = "width"
        else:
            out.payload[width_to], out.payload[height_to] = request.width, request.height
            out.names[width_to], out.names[height_to] = "width", "height"
        return
    ratio = request.aspect_ratio
    if ratio is None:
        return
    target = params.get("aspect_ratio")
    if not target:
        out.warnings.append(f"{where} has no input for aspect_ratio; aspect_ratio={ratio!r} was ignored")
        return
    out.names[target] = "aspect_ratio"
    if target != "image_size" and target != params.get("width"):
        snapped, note = snapped_aspect_ratio(request, deployment, where)
        out.payload[target] = snapped
        if note is not None:
            out.warnings.append(note)
        return
    size = deployment.size_for(request) or deployment.limits.default_size or (1024, 1024)
    preset, exact = _nearest_preset(ratio, size[0] * size[1])
    out.payload[target] = preset
    if not exact:
        w, h = IMAGE_SIZE_PRESETS[preset]
        out.warnings.append(
            f"{where} has no {ratio} image size; used {preset} ({w}x{h}), the nearest aspect ratio"
        )


def translate_format(
    params: Mapping[str, str | None],
    request: GenerationRequest,
    out: FalInput,
    where: str,
    rules: Mapping[str, ParamRule] | None = None,
) -> None:
    rules = rules or {}
    wanted = request.output_format
    if wanted is None:
        return
    target = params.get("output_format")
    if not target:
        out.warnings.append(f"{where} has no input for output_format; output_format={wanted!r} was ignored")
        return
    rule = rules.get("output_format")
    if rule is not None and (rule.values is not None or rule.allowed is not None):
        pass  # the entry's value map says what this endpoint takes (apply_rules)
    elif wanted not in OUTPUT_FORMATS:
        out.warnings.append(f"{where} cannot output {wanted}; asked for png instead")
        wanted = "png"
    out.payload[target] = wanted
    out.names[target] = "output_format"
    out.output_format = wanted


def translate_duration(deployment: Deployment, request: GenerationRequest, out: FalInput, where: str) -> None:
    limits = deployment.limits
    seconds = request.duration_s
    if seconds is None:
        out.duration_s = limits.default_duration_s if deployment.kind == "video" else None
        return
    target = deployment.params.get("duration_s")
    if not target:
        out.warnings.append(f"{where} has no input for duration_s; duration_s={seconds:g} was ignored")
        out.duration_s = limits.default_duration_s if deployment.kind == "video" else None
        return
    out.names[target] = "duration_s"
    rule = deployment.rules.get("duration_s")
    if rule is not None and rule.allowed is not None:
        out.payload[target] = seconds  # snapped and converted by the value map
        out.duration_s = seconds
        return
    if limits.durations_s:
        wanted = seconds
        # fal's enumerated durations are strings ("5" | "10"); the nearest wins, ties go shorter.
        chosen = min(limits.durations_s, key=lambda d: (abs(d - wanted), d))
        if chosen != seconds:
            choices = ", ".join(f"{d:g}" for d in limits.durations_s)
            out.warnings.append(
                f"{where} takes durations of {choices} s; duration_s={seconds:g} became {chosen:g}"
            )
        out.payload[target] = _duration_value(chosen)
        out.duration_s = float(chosen)
        return
    if limits.duration_range_s:
        low, high = limits.duration_range_s
        clamped = min(max(seconds, low), high)
        if clamped != seconds:
            out.warnings.append(
                f"{where} takes durations of {low:g}-{high:g} s; duration_s={seconds:g} became {clamped:g}"
            )
        seconds = clamped
    out.payload[target] = seconds
    out.duration_s = seconds


# -- outputs -----------------------------------------------------------------------
