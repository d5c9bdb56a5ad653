"""Value maps from the catalog (:class:`~genrouter.catalog.ParamRule`), applied to a provider input.

A backend first places each request field under the provider's input name (the plain
``params`` mapping, its own vocabulary for sizes, media and LoRAs); then
:func:`apply_rules` rewrites the values that the entry's value maps govern::

    aspect_ratio: {to: aspect_ratio, allowed: ["16:9", "9:16", "1:1"]}   # 4:3 → 1:1, warned
    duration_s: {to: duration, allowed: [5, 10], as: string}            # 7 → "5", warned
    output_format: {to: output_format, values: {jpeg: jpg}}             # jpeg → jpg
    image: {to: image_urls, wrap: list}                                 # url → [url]
    safety_checker: {to: disable_safety_checker, invert: true}          # true → false

Order per rule: ``values``, ``allowed``, ``as``, ``invert``, ``wrap``. Aspect ratios snap
to the nearest allowed ratio (by the log of width/height), numbers to the nearest
allowed number (ties go to the smaller); any other value that is not allowed is dropped.
Every change that is not a plain rename leaves a warning. This module is data-driven
and knows no provider.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from genrouter.catalog import Deployment, ParamRule
from genrouter.types import GenerationRequest

__all__ = [
    "allowed_ratios",
    "apply_rules",
    "nearest_ratio",
    "ratio_of",
    "snapped_aspect_ratio",
    "transform",
]

_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")


def _ratio_value(text: Any) -> float | None:
    match = _RATIO.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    w, h = float(match.group(1)), float(match.group(2))
    return w / h if w > 0 and h > 0 else None


def ratio_of(width: int, height: int) -> str:
    """``"16:9"`` for 1344x756: the size's aspect ratio in lowest terms."""
    fraction = Fraction(width, height)
    return f"{fraction.numerator}:{fraction.denominator}"


def nearest_ratio(width: float, height: float, allowed: Sequence[str]) -> str:
    """The allowed ``"W:H"`` closest to ``width/height`` (by the log of the ratio)."""
    target = math.log(width / height)
    ratios = [(r, _ratio_value(r)) for r in allowed]
    return min(
        (r for r, v in ratios if v is not None),
        key=lambda r: abs(math.log(_ratio_value(r) or 1.0) - target),
    )


def allowed_ratios(deployment: Deployment) -> list[str] | None:
    """The aspect ratios the deployment's ``aspect_ratio`` value map allows, if it lists any."""
    rule = deployment.rules.get("aspect_ratio")
    if rule is None or not rule.allowed:
        return None
    ratios = [str(r) for r in rule.allowed if _ratio_value(str(r)) is not None]
    return ratios or None


def snapped_aspect_ratio(
    request: GenerationRequest, deployment: Deployment, where: str
) -> tuple[str | None, str | None]:
    """(ratio to use, warning or None) for the request's ``aspect_ratio`` on ``deployment``."""
    asked = request.aspect_ratio
    allowed = allowed_ratios(deployment)
    if asked is None or allowed is None or asked in allowed:
        return asked, None
    chosen = deployment.aspect_ratio_for(asked)
    if chosen == asked:
        return asked, None
    return chosen, f"{where} takes aspect ratios {', '.join(allowed)}; aspect_ratio {asked} became {chosen}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_DROP = object()


def _allowed(rule: ParamRule, value: Any) -> tuple[Any, bool]:
    """(value, changed): ``value`` snapped to ``rule.allowed``, or ``_DROP``."""
    allowed = rule.allowed or []
    if value in allowed:
        return value, False
    ratio = _ratio_value(value)
    ratios = [str(a) for a in allowed if _ratio_value(str(a)) is not None]
    if ratio is not None and ratios:
        return nearest_ratio(ratio, 1.0, ratios), True
    number = _number(value)
    numbers = [(a, _number(a)) for a in allowed if _number(a) is not None]
    if number is not None and numbers:
        for original, n in numbers:
            if n == number:
                return original, False
        best = min(numbers, key=lambda pair: (abs((pair[1] or 0.0) - number), pair[1] or 0.0))
        return best[0], True
    return _DROP, True


def _convert(kind: str, value: Any) -> Any:
    number = _number(value)
    if kind == "string":
        return _show(value) if number is not None and not isinstance(value, str) else str(value)
    if number is None:
        return value
    if kind == "integer":
        return math.floor(number + 0.5)
    return int(number) if number.is_integer() else number


def transform(rule: ParamRule, value: Any) -> tuple[Any, str | None]:
    """(new value or None when dropped, why it changed or None) for ``value`` under ``rule``."""
    note = None
    if rule.values is not None and isinstance(value, str | int | float | bool):
        key = str(value).lower() if isinstance(value, bool) else str(value)
        if key in rule.values:
            value = rule.values[key]
    if rule.allowed is not None:
        snapped, changed = _allowed(rule, value)
        if snapped is _DROP:
            choices = ", ".join(_show(a) for a in rule.allowed)
            return None, f"takes {choices}; {_show(value)} was dropped"
        if changed:
            choices = ", ".join(_show(a) for a in rule.allowed)
            note = f"takes {choices}; {_show(value)} became {_show(snapped)}"
        value = snapped
    if rule.as_ is not None:
        value = _convert(rule.as_, value)
    if rule.invert and isinstance(value, bool):
        value = not value
    if rule.wrap == "list" and not isinstance(value, list):
        value = [value]
    return value, note


def apply_rules(payload: dict[str, Any], deployment: Deployment, where: str) -> list[str]:
    """Rewrite ``payload`` in place by the deployment's value maps; the warnings they cause.

    A rule applies to the value under its ``to`` name; an ``aspect_ratio`` rule only to a
    ``"W:H"`` string there (not to a size a backend put under the same name).
    """
    warnings: list[str] = []
    for field, rule in deployment.rules.items():
        target = rule.to
        if not target or target not in payload:
            continue
        value = payload[target]
        if field == "aspect_ratio" and _ratio_value(value) is None:
            continue
        new, note = transform(rule, value)
        if new is None:
            del payload[target]
        else:
            payload[target] = new
        if note is not None:
            warnings.append(f"{where} {field} {note}")
    return warnings
