"""What every provider section of a genrouter config shares: :class:`ProviderSettings` (and
:class:`MediaSettings` for the hosted APIs), the ``custom`` and import-path sections, and the
conventions below.

Each provider type's own section lives in its package, beside its backend
(``backends/<type>/_settings.py``: :class:`FalSettings`, :class:`ReplicateSettings`,
:class:`ModalSettings`, :class:`SimulatedSettings`), with the credentials it reads from the
environment (``section_from_env``); they stay importable from here. None imports anything
heavy, so validating a config never imports a backend or a provider SDK. Secrets are
``SecretStr``: they never show in a repr or a dump.

Two conventions hold for every model here and in ``config.py`` (all derive from
:class:`SettingsModel`):

* a number field never accepts ``true``/``false`` (pydantic would read them as 1/0);
* a field whose name ends in ``_s`` is seconds and also accepts a duration string:
  ``"500ms"``, ``"5s"``, ``"2m"``, ``"1h"`` (see :func:`parse_duration`).
"""

from __future__ import annotations

import importlib
import re
import types
import typing
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SecretStr,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from genrouter.catalog import CatalogEntry
from genrouter.util._secrets import SECRET_KEY_PATTERN

__all__ = [
    "DEFAULT_INLINE_MAX_BYTES",
    "DURATION_PATTERN",
    "SECRET_KEY_PATTERN",
    "CustomSettings",
    "ImportPathSettings",
    "MediaSettings",
    "ProviderSettings",
    "SettingsModel",
    "parse_duration",
    "reject_bool",
]

_SECTION = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_PLUGIN_NAME = re.compile(r"^[A-Za-z][\w-]*$")

DURATION_PATTERN = r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ms|s|m|h)?\s*$"
"""Duration strings: a non-negative number and an optional unit (``ms``, ``s``, ``m``, ``h``)."""

_DURATION = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> Any:
    """``"500ms"``, ``"5s"``, ``"2m"``, ``"1h"``, ``"5"`` → float seconds.

    Numbers and other non-string values pass through unchanged (validation checks
    them); a string that is not a duration raises ``ValueError``.
    """
    if not isinstance(value, str):
        return value
    match = _DURATION.match(value)
    if match is None:
        raise ValueError("expected seconds: a number (5, 0.5) or a duration like '5s', '500ms', '2m'")
    number, unit = float(match.group(1)), match.group(2) or "s"
    # Divide for milliseconds: 59 / 1000 is the float nearest 0.059; 59 * 0.001 is not.
    return number / 1000 if unit == "ms" else number * _UNIT_SECONDS[unit]


_NUMBER_TYPES = (int, float, Decimal)
_numeric_cache: dict[tuple[type, str], bool] = {}


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _is_numeric(model: type[BaseModel], name: str) -> bool:
    key = (model, name)
    if key not in _numeric_cache:
        field = model.model_fields.get(name)
        members = _members(field.annotation) if field is not None else []
        _numeric_cache[key] = (
            bool(members) and bool not in members and any(m in _NUMBER_TYPES for m in members)
        )
    return _numeric_cache[key]


def _duration_json_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A number property's schema widened to also accept a duration string."""
    meta: dict[str, Any] = {k: prop[k] for k in ("title", "description", "default") if k in prop}
    body = {k: v for k, v in prop.items() if k not in meta}
    text = {"type": "string", "pattern": DURATION_PATTERN}
    if "anyOf" in body and len(body) == 1:
        return {**meta, "anyOf": [*body["anyOf"], text]}
    return {**meta, "anyOf": [body, text]}


def reject_bool(value: Any) -> Any:
    """A before-validator for numbers: YAML ``true``/``false`` are not 1/0 here."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


class SettingsModel(BaseModel):
    """Base of every config model: strict keys, frozen, no booleans as numbers, ``*_s`` durations."""

    model_config = _SECTION

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_and_durations(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        if name is None or not _is_numeric(cls, name):
            return value
        reject_bool(value)
        return parse_duration(value) if name.endswith("_s") else value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        properties = target.get("properties", {})
        for name, prop in list(properties.items()):
            if name.endswith("_s") and _is_numeric(cls, name):
                properties[name] = _duration_json_schema(prop)
        return schema


class ProviderSettings(SettingsModel):
    """What every provider section accepts.

    ``models`` declares (or overrides) the deployments this provider serves, in the
    catalog format; ``base_url`` points the backend elsewhere (a proxy, a loopback
    fake); ``timeout_s`` bounds one HTTP request.
    """

    type: str
    base_url: str | None = None
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    models: dict[str, CatalogEntry] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _no_colons(cls, value: dict[str, CatalogEntry]) -> dict[str, CatalogEntry]:
        for name in value:
            if ":" in name:
                raise ValueError(
                    f"model {name!r} contains ':'; aliases never contain ':' (a model of the form "
                    "'<provider-key>:<endpoint>' is a passthrough), so rename it"
                )
        return value

    env_credentials: ClassVar[str | None] = None
    """The environment variables :meth:`section_from_env` reads, as the "no config" message lists them."""

    @classmethod
    def section_from_env(cls, env: Mapping[str, str]) -> dict[str, Any] | None:
        """This type's section from credentials in ``env`` (without ``type``); None when none is set.

        ``genrouter`` without a config builds one section per provider type whose credentials
        are set; a type that reads none from the environment keeps this default.
        """
        return None

    @field_validator("base_url", "rest_url", check_fields=False)
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/?#]+[^\s]*$", value):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/") if value else value

    def problems(self, path: str) -> list[str]:
        """Problems of this section that no single field shows (``"<key path>: <what>"``); none here.

        The config check reports them with every other problem; ``path`` is ``providers.<key>``.
        """
        return []

    def secret_values(self) -> list[str]:
        """Every secret this section holds, for redaction."""
        found = [
            v.get_secret_value()
            for v in self.__dict__.values()
            if isinstance(v, SecretStr) and v.get_secret_value()
        ]
        extra = self.__pydantic_extra__ or {}
        found += [v for k, v in extra.items() if isinstance(v, str) and v and SECRET_KEY_PATTERN.search(k)]
        return found


DEFAULT_INLINE_MAX_BYTES = 262_144
"""Media inputs up to this size are sent inline as ``data:`` URLs; larger ones are uploaded."""


def _check_headers(value: dict[str, str]) -> dict[str, str]:
    """Header names are HTTP tokens; values one line; genrouter's own headers are not replaced."""
    from genrouter.backends._headers import check_headers

    return check_headers(value, field="provider_headers")


class MediaSettings(ProviderSettings):
    """What the hosted-API sections (fal, Replicate) share: uploads and extra headers.

    ``inline_max_bytes``: bytes and paths up to this size go inline as ``data:`` URLs,
    larger ones are uploaded to the provider's storage (default 262144, 256 KiB).
    ``max_upload_bytes``: the largest input accepted at all (default: the provider's).
    ``provider_headers``: extra headers sent with every call to the provider's API
    (a request's ``provider_headers[<key>]`` is merged over them for its submits).
    """

    inline_max_bytes: Annotated[int, Field(ge=0)] = DEFAULT_INLINE_MAX_BYTES
    max_upload_bytes: Annotated[int | None, Field(ge=1)] = None
    provider_headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("provider_headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_headers(value)

    @field_serializer("provider_headers", when_used="json")
    def _masked_headers(self, value: dict[str, str]) -> dict[str, str]:
        # A JSON dump of the config masks credential-like header values as SecretStr does.
        from genrouter.util._secrets import is_credential_header

        return {k: "**********" if is_credential_header(k) else v for k, v in value.items()}

    def secret_values(self) -> list[str]:
        """Every secret this section holds, credential-looking header values included."""
        from genrouter.util._secrets import is_credential_header

        found = super().secret_values()
        return found + [v for k, v in self.provider_headers.items() if v and is_credential_header(k)]


class CustomSettings(ProviderSettings):
    """``type: custom``: a :class:`~genrouter.backends.base.Backend` instance passed in code."""

    type: Literal["custom"] = "custom"


class ImportPathSettings(ProviderSettings):
    """``type: "pkg.module:Class"`` (or a plugin's registered name): a third-party backend.

    Keys beyond the common ones are allowed and go to the class as its settings.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    @field_validator("type")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not (_IMPORT_PATH.match(value) or _PLUGIN_NAME.match(value)):
            raise ValueError("expected an import path of the form 'pkg.module:Class'")
        return value


# Each provider type's section lives in its own package (``genrouter.backends.<type>._settings``);
# these names stay importable from here, resolved on first use (the packages import this module).
_PROVIDER_MODELS = {
    "FalSettings": "genrouter.backends.fal._settings",
    "ReplicateSettings": "genrouter.backends.replicate._settings",
    "ModalSettings": "genrouter.backends.modal._settings",
    "SimulatedSettings": "genrouter.backends.simulated._settings",
    "LatencySpec": "genrouter.backends.simulated._settings",
    "Autoscale": "genrouter.backends.simulated._settings",
    "Incident": "genrouter.backends.simulated._settings",
}

if TYPE_CHECKING:
    from genrouter.backends.fal._settings import FalSettings as FalSettings
    from genrouter.backends.modal._settings import ModalSettings as ModalSettings
    from genrouter.backends.replicate._settings import ReplicateSettings as ReplicateSettings
    from genrouter.backends.simulated._settings import Autoscale as Autoscale
    from genrouter.backends.simulated._settings import Incident as Incident
    from genrouter.backends.simulated._settings import LatencySpec as LatencySpec
    from genrouter.backends.simulated._settings import SimulatedSettings as SimulatedSettings


def __getattr__(name: str) -> Any:
    home = _PROVIDER_MODELS.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
