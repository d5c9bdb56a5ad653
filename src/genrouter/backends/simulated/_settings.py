"""``type: simulated`` sections: :class:`SimulatedSettings` with its latency, incidents and autoscaler."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, GetJsonSchemaHandler, ValidationInfo, field_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from genrouter.backends.settings import (
    ProviderSettings,
    SettingsModel,
    parse_duration,
)
from genrouter.catalog import Price

__all__ = ["Autoscale", "Incident", "LatencySpec", "SimulatedSettings"]


class LatencySpec(SettingsModel):
    """Lognormal latency through ``median_s`` and ``p99_s`` (``p99_s ≥ median_s``)."""

    median_s: Annotated[float, Field(gt=0)]
    p99_s: Annotated[float, Field(gt=0)]

    @field_validator("p99_s")
    @classmethod
    def _p99_not_below_median(cls, value: float, info: ValidationInfo) -> float:
        median = info.data.get("median_s")
        if median is not None and value < median:
            raise ValueError(f"p99_s must be at least median_s {median:g}")
        return value


class Autoscale(SettingsModel):
    """A simulated provider's container autoscaler (see :mod:`genrouter.backends.simulated._autoscale`).

    ``min_containers`` are warm from the start; a request beyond the free slots
    (``concurrency_per_container`` per container) queues, and while the queue needs more
    capacity a container starts, serving after ``cold_start_s``, up to ``max_containers``.
    A container idle for ``scaledown_s`` (default 60, Modal's default window) leaves,
    down to ``min_containers``.
    """

    min_containers: Annotated[int, Field(ge=0, le=10_000)] = 0
    max_containers: Annotated[int, Field(ge=1, le=10_000)] = 1
    concurrency_per_container: Annotated[int, Field(ge=1, le=10_000)] = 1
    cold_start_s: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    scaledown_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0

    @field_validator("max_containers")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_containers")
        if low is not None and value < low:
            raise ValueError(f"max_containers must be at least min_containers {low}")
        return value


class Incident(SettingsModel):
    """A window, relative to router start, when a simulated provider misbehaves more."""

    start_s: Annotated[float, Field(ge=0)]
    end_s: Annotated[float, Field(gt=0)]
    latency_multiplier: Annotated[float, Field(gt=0)] = 1.0
    failure_rate: Annotated[float | None, Field(ge=0, le=1)] = None
    hang_rate: Annotated[float | None, Field(ge=0, le=1)] = None

    @field_validator("end_s")
    @classmethod
    def _ordered(cls, value: float, info: ValidationInfo) -> float:
        start = info.data.get("start_s")
        if start is not None and value <= start:
            raise ValueError(f"end_s must be after start_s {start:g}")
        return value


Rate = Annotated[float, Field(ge=0, le=1)]

_LATENCY_SHAPE = "expected 0 (instant) or a mapping {median_s: ..., p99_s: ...}"


class SimulatedSettings(ProviderSettings):
    """``type: simulated``: an offline provider with configurable latency, failures and price.

    Without ``models`` it serves every image model of the shipped catalog at ``price``.
    ``latency: 0`` means instant.
    """

    type: Literal["simulated"] = "simulated"
    latency: LatencySpec | None = Field(default=None, description="0 or omitted: instant")
    failure_rate: Rate = 0.0
    rate_limit_rate: Rate = 0.0
    retry_after_s: Annotated[float, Field(ge=0)] = 1.0
    hang_rate: Rate = 0.0
    slow_rate: Rate = 0.0
    """Fraction of jobs whose latency is multiplied by ``slow_multiplier`` (a heavy tail)."""
    slow_multiplier: Annotated[float, Field(ge=1, le=1000)] = 10.0
    incidents: list[Incident] = Field(default_factory=list)
    seed: int = 0
    price: Price | None = None
    max_concurrency: Annotated[int | None, Field(ge=1)] = None
    """Jobs beyond this many in flight wait in a provider-side queue."""
    autoscale: Autoscale | None = None
    """Containers that scale with the queue (replaces ``max_concurrency``)."""

    def problems(self, path: str) -> list[str]:
        """An incident that changes nothing is a mistake: it sets no multiplier or rate."""
        return [
            f"{path}.incidents[{i}]: changes nothing; set latency_multiplier, failure_rate or hang_rate"
            for i, incident in enumerate(self.incidents)
            if incident.failure_rate is None
            and incident.latency_multiplier == 1.0
            and incident.hang_rate is None
        ]

    @field_validator("autoscale")
    @classmethod
    def _one_capacity_model(cls, value: Autoscale | None, info: ValidationInfo) -> Autoscale | None:
        if value is not None and info.data.get("max_concurrency") is not None:
            raise ValueError("set either max_concurrency or autoscale, not both")
        return value

    @field_validator("latency", mode="before")
    @classmethod
    def _zero_is_instant(cls, value: Any) -> Any:
        if value is None or isinstance(value, Mapping | LatencySpec):
            return value
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                seconds = parse_duration(value)
            except ValueError:
                seconds = None
            if seconds == 0:
                return None
        raise ValueError(_LATENCY_SHAPE)

    @field_validator("price", mode="before")
    @classmethod
    def _bare_number_is_per_image(cls, value: Any) -> Any:
        if isinstance(value, str | int | float | Decimal) and not isinstance(value, bool):
            return {"per_image": value}
        return value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = super().__get_pydantic_json_schema__(core_schema, handler)
        target = handler.resolve_ref_schema(schema)
        latency = target.get("properties", {}).get("latency")
        if isinstance(latency, dict) and isinstance(latency.get("anyOf"), list):
            latency["anyOf"].append({"const": 0})
        return schema
