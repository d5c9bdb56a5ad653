"""Prices: the ``price:`` block of a catalog entry (:class:`Price`) and its value (:class:`Pricing`).

``Pricing.estimate`` prices a request before it runs and ``Pricing.actual`` a finished
result from what was produced; money is ``Decimal``, rounded to a millionth of a dollar.
Re-exported by :mod:`genrouter.catalog`, where users import these names from.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from genrouter.catalog import Deployment
    from genrouter.types import GenerationRequest, GenerationResult

__all__ = ["Price", "PriceUnit", "Pricing"]


class PriceUnit(StrEnum):
    """What a price is per."""

    PER_IMAGE = "per_image"
    PER_VIDEO = "per_video"
    PER_MEGAPIXEL = "per_megapixel"
    PER_VIDEO_SECOND = "per_video_second"
    PER_GPU_SECOND = "per_gpu_second"
    PER_RUN = "per_run"
    """One run of a workflow (a fal ComfyUI endpoint bills per request)."""


_UNITS = tuple(u.value for u in PriceUnit)
_CENT_FRACTIONS = Decimal("0.000001")
_ONE = Decimal(1)
_TEN = Decimal(10)
_CATALOG = ConfigDict(extra="forbid", frozen=True)


class Price(BaseModel):
    """A price as written in YAML: exactly one ``<unit>: "<decimal>"`` plus provenance.

    ``megapixel_rounding: ceil`` bills each output's megapixels rounded up (as fal does).
    """

    model_config = _CATALOG

    per_image: Decimal | None = Field(default=None, ge=0)
    per_video: Decimal | None = Field(default=None, ge=0)
    per_megapixel: Decimal | None = Field(default=None, ge=0)
    per_video_second: Decimal | None = Field(default=None, ge=0)
    per_gpu_second: Decimal | None = Field(default=None, ge=0)
    per_run: Decimal | None = Field(default=None, ge=0)
    megapixel_rounding: Literal["exact", "ceil"] = "exact"
    megapixel_pixels: int = Field(default=1_000_000, ge=1)
    """Pixels in one billed megapixel: 1000000, or 1048576 (1024×1024) where the provider
    counts so (fal bills a 1024×1024 image as one megapixel)."""
    source: str | None = None
    date: str | None = None

    @field_validator(*_UNITS, mode="before")
    @classmethod
    def _no_floats(cls, value: Any) -> Any:
        # Floats in YAML (0.1) are inexact; strings ("0.1") and ints are exact.
        if isinstance(value, float):
            return Decimal(repr(value))
        return value

    @model_validator(mode="after")
    def _exactly_one_unit(self) -> Price:
        given = [u for u in _UNITS if getattr(self, u) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a price needs exactly one unit of {', '.join(_UNITS)}; "
                f"got {', '.join(given) if given else 'none'}"
            )
        if self.megapixel_rounding == "ceil" and given[0] != "per_megapixel":
            raise ValueError(f"megapixel_rounding applies to per_megapixel prices, not {given[0]}")
        return self

    @field_validator("date")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^\d{4}-\d{2}(-\d{2})?$", value):
            raise ValueError(f"date {value!r} is not YYYY-MM or YYYY-MM-DD")
        return value

    def to_pricing(self) -> Pricing:
        """The validated price as a :class:`Pricing` value."""
        unit = next(u for u in _UNITS if getattr(self, u) is not None)
        amount: Decimal = getattr(self, unit)
        return Pricing(
            unit=PriceUnit(unit),
            amount=amount,
            ceil_megapixels=self.megapixel_rounding == "ceil",
            megapixel_pixels=self.megapixel_pixels,
            source=self.source,
            date=self.date,
        )


@dataclass(frozen=True, slots=True)
class Pricing:
    """A price with its unit and provenance. Money is ``Decimal``; unknown is None, never 0."""

    unit: PriceUnit
    amount: Decimal
    ceil_megapixels: bool = False
    source: str | None = None
    date: str | None = None
    megapixel_pixels: int = 1_000_000

    def describe(self) -> str:
        """``"$0.025 per_megapixel (fal.ai pricing, 2026-05-01)"``."""
        return _describe_pricing(self.unit, self.amount, self.source, self.date)

    def _megapixels(self, width: int, height: int) -> Decimal:
        mp = Decimal(width * height) / Decimal(self.megapixel_pixels)
        return Decimal(math.ceil(mp)) if self.ceil_megapixels else mp

    def estimate(self, request: GenerationRequest, deployment: Deployment) -> Decimal | None:
        """Estimated cost of ``request`` on ``deployment`` before running it, or None if unknowable."""
        outputs = request.num_outputs
        unit = self.unit
        if unit is PriceUnit.PER_RUN:
            return _money(self.amount * _runs(request, deployment))
        if unit is PriceUnit.PER_IMAGE or unit is PriceUnit.PER_VIDEO:
            return _money(self.amount * outputs)
        if unit is PriceUnit.PER_MEGAPIXEL:
            size = deployment.size_for(request)
            if size is None:
                return None
            return _money(self.amount * self._megapixels(*size) * outputs)
        if unit is PriceUnit.PER_VIDEO_SECOND:
            seconds = request.duration_s or deployment.limits.default_duration_s
            return None if seconds is None else _money(self.amount * _dec(seconds) * outputs)
        per_output = deployment.gpu_seconds_per_output
        return None if per_output is None else _money(self.amount * _dec(per_output) * outputs)

    def actual(
        self, request: GenerationRequest, result: GenerationResult, deployment: Deployment
    ) -> tuple[Decimal | None, str]:
        """Cost of a finished result from what was actually produced, and how it was computed."""
        outputs = result.outputs
        unit = self.unit
        if unit is PriceUnit.PER_RUN:
            runs = _runs(request, deployment)
            return _money(self.amount * runs), f"{runs} run(s) × {self.describe()}"
        if unit is PriceUnit.PER_IMAGE or unit is PriceUnit.PER_VIDEO:
            return _money(self.amount * len(outputs)), f"{len(outputs)} × {self.describe()}"
        if unit is PriceUnit.PER_MEGAPIXEL:
            total = Decimal(0)
            fallback = deployment.size_for(request)
            for artifact in outputs:
                if artifact.width and artifact.height:
                    total += self._megapixels(artifact.width, artifact.height)
                elif fallback is not None:
                    total += self._megapixels(*fallback)
                else:
                    return None, f"output size unknown for {self.describe()}"
            return _money(self.amount * total), f"{total.normalize()} MP × {self.describe()}"
        if unit is PriceUnit.PER_VIDEO_SECOND:
            seconds = Decimal(0)
            for artifact in outputs:
                length = artifact.duration_s or request.duration_s or deployment.limits.default_duration_s
                if length is None:
                    return None, f"video length unknown for {self.describe()}"
                seconds += _dec(length)
            return _money(self.amount * seconds), f"{seconds.normalize()} s × {self.describe()}"
        running = result.timings.running_s
        if running is None:
            return None, f"GPU time unknown for {self.describe()}"
        return (
            _money(self.amount * _dec(running)),
            f"{running:.3f} GPU-s × {self.describe()}",
        )


@functools.lru_cache(maxsize=1024)
def _describe_pricing(unit: PriceUnit, amount: Decimal, source: str | None, date: str | None) -> str:
    origin = ", ".join(x for x in (source, date) if x)
    return f"${amount} {unit.value}" + (f" ({origin})" if origin else "")


def _runs(request: GenerationRequest, deployment: Deployment) -> int:
    """Calls made for ``request``: ``ceil(num_outputs / max_outputs_per_call)``."""
    return -(-request.num_outputs // deployment.limits.max_outputs_per_call)


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


@functools.lru_cache(maxsize=4096)
def _money(value: Decimal) -> Decimal:
    """Round to a millionth of a dollar, without trailing zeros or exponent notation.

    Cached (three calls a routed request, the same few prices each time): equal inputs
    give the same canonical output whatever their exponent, so a cache hit on an equal
    Decimal is exact."""
    rounded = value.quantize(_CENT_FRACTIONS, rounding=ROUND_HALF_EVEN).normalize()
    if rounded >= _TEN and rounded == rounded.to_integral_value():
        return rounded.quantize(_ONE)  # 1E+1 → 10
    return rounded
