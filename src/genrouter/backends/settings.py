"""Schemas of the provider sections of a genrouter config, one per provider type.

They live beside the backends (not in ``config.py``) because each belongs to one
backend, and they import nothing heavy, so validating a config never imports a
provider SDK. Secrets are ``SecretStr``: they never show in a repr or a dump.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from genrouter.catalog import CatalogEntry, Price

__all__ = [
    "CustomSettings",
    "FalSettings",
    "ImportPathSettings",
    "Incident",
    "LatencySpec",
    "ModalSettings",
    "ProviderSettings",
    "ReplicateSettings",
    "SimulatedSettings",
]

_SECTION = ConfigDict(extra="forbid", frozen=True)
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ProviderSettings(BaseModel):
    """What every provider section accepts.

    ``models`` declares (or overrides) the deployments this provider serves, in the
    catalog format; ``base_url`` points the backend elsewhere (a proxy, a loopback
    fake); ``timeout_s`` bounds one HTTP request.
    """

    model_config = _SECTION

    type: str
    base_url: str | None = None
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    models: dict[str, CatalogEntry] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"base_url {value!r} is not an http(s) URL")
        return value.rstrip("/") if value else value

    def secret_values(self) -> list[str]:
        """Every secret this section holds, for redaction."""
        return [
            v.get_secret_value()
            for v in self.__dict__.values()
            if isinstance(v, SecretStr) and v.get_secret_value()
        ]


class FalSettings(ProviderSettings):
    """``type: fal``. ``api_key`` defaults to ``FAL_KEY`` (or ``FAL_KEY_ID``:``FAL_KEY_SECRET``)."""

    type: Literal["fal"] = "fal"
    api_key: SecretStr | None = None
    webhook_jwks_url: str | None = None
    webhook_public_keys: list[Any] | dict[str, Any] | None = None


class ReplicateSettings(ProviderSettings):
    """``type: replicate``. ``api_token`` defaults to ``REPLICATE_API_TOKEN``.

    ``prefer_wait_s`` (1-60) asks Replicate to hold the create call open that long.
    """

    type: Literal["replicate"] = "replicate"
    api_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    prefer_wait_s: Annotated[int | None, Field(ge=1, le=60)] = None


class ModalSettings(ProviderSettings):
    """``type: modal``: a deployed ``deploy/modal`` class, looked up by app and class name."""

    type: Literal["modal"] = "modal"
    app: str = "genrouter-diffusion"
    cls: str = "Diffusion"
    gpu: str | None = None
    environment: str | None = None
    token_id: SecretStr | None = None
    token_secret: SecretStr | None = None
    cold_start_s: Annotated[float, Field(ge=0)] = 20.0


class LatencySpec(BaseModel):
    """Lognormal latency through ``median_s`` and ``p99_s``."""

    model_config = _SECTION

    median_s: Annotated[float, Field(gt=0)]
    p99_s: Annotated[float, Field(gt=0)]

    @model_validator(mode="after")
    def _p99_not_below_median(self) -> LatencySpec:
        if self.p99_s < self.median_s:
            raise ValueError(f"p99_s {self.p99_s} is below median_s {self.median_s}")
        return self


class Incident(BaseModel):
    """A window, relative to router start, when a simulated provider misbehaves more."""

    model_config = _SECTION

    start_s: Annotated[float, Field(ge=0)]
    end_s: Annotated[float, Field(gt=0)]
    latency_multiplier: Annotated[float, Field(gt=0)] = 1.0
    failure_rate: Annotated[float | None, Field(ge=0, le=1)] = None
    hang_rate: Annotated[float | None, Field(ge=0, le=1)] = None

    @model_validator(mode="after")
    def _ordered(self) -> Incident:
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s {self.end_s} is not after start_s {self.start_s}")
        return self


Rate = Annotated[float, Field(ge=0, le=1)]


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
    incidents: list[Incident] = Field(default_factory=list)
    seed: int = 0
    price: Price | None = None
    max_concurrency: Annotated[int | None, Field(ge=1)] = None

    @field_validator("latency", mode="before")
    @classmethod
    def _zero_is_instant(cls, value: Any) -> Any:
        return None if value in (0, "0", 0.0) else value

    @field_validator("price", mode="before")
    @classmethod
    def _bare_number_is_per_image(cls, value: Any) -> Any:
        if isinstance(value, str | int | float | Decimal) and not isinstance(value, bool):
            return {"per_image": value}
        return value


class CustomSettings(ProviderSettings):
    """``type: custom``: a :class:`~genrouter.backends.base.Backend` instance passed in code."""

    type: Literal["custom"] = "custom"


class ImportPathSettings(ProviderSettings):
    """``type: "pkg.module:Class"``: a third-party backend. Other keys go to the class as settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @field_validator("type")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not _IMPORT_PATH.match(value):
            raise ValueError(f"type {value!r} is not an import path of the form 'pkg.module:Class'")
        return value
