"""Model catalogs: which provider serves which model, with what features, limits and prices.

Catalogs are YAML files (``providers/*.yaml`` ship inside the wheel; users add their
own through ``catalogs:`` or inline ``models:`` in a provider section)::

    version: 1
    provider: fal                 # provider type (or a configured provider key)
    defaults:                     # merged into every entry below
      params: {steps: num_inference_steps, num_outputs: num_images}
    models:
      flux-dev:
        endpoint: fal-ai/flux/dev
        kind: image
        capabilities: [text-to-image, image-to-image, lora]
        limits: {max_outputs_per_call: 4, width: [256, 2048], height: [256, 2048]}
        params: {guidance: guidance_scale}
        price: {per_megapixel: "0.025", megapixel_rounding: ceil,
                source: "fal.ai model page", date: "2026-05-01"}
        variants:                 # more endpoints of this model, picked by capability
          - endpoint: fal-ai/flux/dev/image-to-image
            capabilities: [image-to-image]
            params: {image: image_url, strength: strength}

A ``params`` value is the provider's input name, null (no such input), or a value map
(:class:`ParamRule`: ``{to, wrap, values, allowed, as, invert}``). User-declared entries
are merged over the shipped entry of their provider type and model, else over the type's
``defaults`` (:meth:`Catalog.inherit`). Model names and aliases never contain ``:``
(``"<provider-key>:<endpoint>"`` is a passthrough).

This module is data only: it knows units and shapes, never a provider's wire format. The file
schema lives in :mod:`genrouter.catalog._schema` and prices in :mod:`genrouter.catalog._pricing`; their
public names are re-exported here.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from genrouter.catalog._params import (
    IMAGE_INPUT_KINDS,
    KINDS,
    PROMPTLESS_KINDS,
    STANDARD_FIELDS,
    Kind,
    ParamRule,
    ParamValue,
    param_target,
)
from genrouter.catalog._pricing import Price, PriceUnit, Pricing
from genrouter.catalog._schema import (
    Capability,
    CatalogDefaults,
    CatalogEntry,
    CatalogFile,
    CatalogVariant,
    Limits,
)
from genrouter.catalog._workflows import InputSpec
from genrouter.errors import ConfigError
from genrouter.util._validation import format_validation_errors

if TYPE_CHECKING:
    from genrouter.types import GenerationRequest

__all__ = [
    "IMAGE_INPUT_KINDS",
    "KINDS",
    "PROMPTLESS_KINDS",
    "STANDARD_FIELDS",
    "Capability",
    "Catalog",
    "CatalogEntry",
    "CatalogFile",
    "CatalogVariant",
    "Deployment",
    "Kind",
    "Limits",
    "ModelSpec",
    "ParamRule",
    "Price",
    "PriceUnit",
    "Pricing",
    "param_target",
    "shipped_catalog_dir",
    "shipped_gpu_prices",
]


def shipped_gpu_prices(provider_type: str) -> dict[str, Pricing]:
    """The ``gpu_prices`` of the shipped catalog file for ``provider_type`` (empty when none)."""
    for _, catalog_file in _shipped_files():
        if catalog_file.provider == provider_type and catalog_file.gpu_prices:
            return {gpu: price.to_pricing() for gpu, price in catalog_file.gpu_prices.items()}
    return {}


_RATIO_TEXT = re.compile(r"^\d+:\d+$")


def _log_ratio(ratio: str) -> float:
    w, h = (int(x) for x in ratio.split(":"))
    return math.log(w / h) if w > 0 and h > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model served by one configured provider: the unit the router ranks and tries.

    ``provider`` is the config key (``sim-fast``); ``provider_type`` its type (``simulated``).
    ``key`` (``provider/endpoint``) identifies the deployment in health and circuit state.
    """

    provider: str
    provider_type: str
    model: str
    endpoint: str
    kind: str
    capabilities: frozenset[Capability]
    limits: Limits
    params: Mapping[str, str | None]
    pricing: Pricing | None
    gpu_seconds_per_output: float | None = None
    source: str | None = None
    inputs: Mapping[str, InputSpec] = field(default_factory=dict)
    """A workflow's declared inputs (empty for other kinds)."""
    rules: Mapping[str, ParamRule] = field(default_factory=dict)
    """The ``params`` that are :class:`ParamRule` s (value maps), by request field."""
    passthrough: bool = False
    """A ``<provider-key>:<endpoint>`` deployment made for one request (no catalog entry)."""
    key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.provider}/{self.endpoint}")

    def size_for(self, request: GenerationRequest) -> tuple[int, int] | None:
        """The output size ``request`` would get here: explicit, else the deployment default."""
        if request.width is not None and request.height is not None:
            return request.width, request.height
        if request.aspect_ratio is not None and self.limits.default_size is not None:
            w, h = (int(x) for x in self.aspect_ratio_for(request.aspect_ratio).split(":"))
            area = self.limits.default_size[0] * self.limits.default_size[1]
            height = round(math.sqrt(area * h / w))
            return round(height * w / h), height
        return self.limits.default_size

    def aspect_ratio_for(self, ratio: str) -> str:
        """``ratio``, or the nearest one the ``aspect_ratio`` value map allows (by log of w/h)."""
        rule = self.rules.get("aspect_ratio")
        allowed = [str(a) for a in rule.allowed or () if _RATIO_TEXT.match(str(a))] if rule else []
        if not allowed or ratio in allowed or not _RATIO_TEXT.match(ratio):
            return ratio
        target = _log_ratio(ratio)
        return min(allowed, key=lambda r: abs(_log_ratio(r) - target))

    def estimate_cost(self, request: GenerationRequest) -> Decimal | None:
        """Estimated cost of ``request`` here, or None when the price or size is unknown."""
        return None if self.pricing is None else self.pricing.estimate(request, self)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model alias and what the shipped catalogs know about it."""

    name: str
    kind: str
    aliases: tuple[str, ...]
    capabilities: frozenset[Capability]
    entries: Mapping[str, CatalogEntry]
    """Catalog entries by provider (type or key) that serves this model."""


def shipped_catalog_dir() -> Path:
    """The folder of catalogs shipped with genrouter (inside the wheel, or the repo in dev)."""
    packaged = Path(__file__).parent.with_name("_catalogs")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "providers"


def _safe_load(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as fh:
        return yaml.load(fh, Loader=loader)  # noqa: S506, TID251 - a SafeLoader


def load_catalog_file(path: Path) -> CatalogFile:
    """Parse and validate one catalog file; any problem is a :class:`ConfigError` naming it."""
    try:
        raw = _safe_load(path)
    except OSError as exc:
        raise ConfigError(f"cannot read catalog {path}: {exc}", key_path="catalogs") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"catalog {path} is not valid YAML: {exc}", key_path="catalogs") from exc
    try:
        return CatalogFile.model_validate(raw)
    except ValidationError as exc:
        problems = format_validation_errors(exc, root=CatalogFile)
        raise ConfigError(
            f"catalog {path}: " + "; ".join(problems),
            key_path="catalogs",
            problems=[f"catalog {path}: {p}" for p in problems],
        ) from exc


def _merge_defaults(old: CatalogDefaults | None, new: CatalogDefaults) -> CatalogDefaults:
    if old is None:
        return new
    return CatalogDefaults(
        capabilities=new.capabilities if new.capabilities is not None else old.capabilities,
        limits=new.limits if new.limits is not None else old.limits,
        params={**(old.params or {}), **(new.params or {})} or None,
        passthrough_params={**(old.passthrough_params or {}), **(new.passthrough_params or {})} or None,
    )


def merge_entry(entry: CatalogEntry, defaults: CatalogDefaults) -> CatalogEntry:
    """``entry`` with the file's defaults filled in (entry values win; params merge)."""
    update: dict[str, Any] = {}
    if entry.capabilities is None and defaults.capabilities is not None:
        update["capabilities"] = defaults.capabilities
    if entry.limits is None and defaults.limits is not None:
        update["limits"] = defaults.limits
    if defaults.params:
        update["params"] = {**defaults.params, **(entry.params or {})}
    return entry.model_copy(update=update) if update else entry


class Catalog:
    """Every known model, and every catalog entry by provider.

    Build with :meth:`load`; the shipped files are parsed once per process.
    """

    def __init__(
        self,
        files: Iterable[tuple[str, CatalogFile]],
        user_files: Iterable[tuple[str, CatalogFile]] = (),
    ) -> None:
        self._entries: dict[str, dict[str, CatalogEntry]] = {}
        self._aliases: dict[str, str] = {}
        self._shipped: dict[str, dict[str, CatalogEntry]] = {}
        self._defaults: dict[str, CatalogDefaults] = {}
        self._user: dict[str, dict[str, tuple[str, CatalogEntry]]] = {}
        self._shipped_aliases: dict[str, str] = {}
        sources: dict[tuple[str, str], str] = {}
        for source, catalog in files:
            bucket = self._entries.setdefault(catalog.provider, {})
            self._defaults[catalog.provider] = _merge_defaults(
                self._defaults.get(catalog.provider), catalog.defaults
            )
            for name, raw_entry in catalog.models.items():
                # A later file replaces an earlier entry for the same provider and model.
                bucket[name] = merge_entry(raw_entry, catalog.defaults)
                sources[(catalog.provider, name)] = source
                for alias in raw_entry.aliases:
                    self._shipped_aliases.setdefault(alias, name)
            self._shipped.setdefault(catalog.provider, {}).update(bucket)
        shipped_names = {name for bucket in self._shipped.values() for name in bucket}
        for source, catalog in user_files:
            bucket = self._entries.setdefault(catalog.provider, {})
            user = self._user.setdefault(catalog.provider, {})
            for given, raw_entry in catalog.models.items():
                entry = merge_entry(raw_entry, catalog.defaults)
                # An alias of a shipped model names that model (flux.1-dev is flux-dev).
                name = given if given in shipped_names else self._shipped_aliases.get(given, given)
                user[name] = (source, entry)
                # Over the shipped entry (or the type's defaults) when ``provider`` is a type;
                # a provider key is inherited by its type when a router is built.
                shipped_type = catalog.provider in self._defaults
                bucket[name] = self.inherit(catalog.provider, name, entry) if shipped_type else entry
                sources[(catalog.provider, name)] = source
        kinds: dict[str, str] = {}
        capabilities: dict[str, set[Capability]] = {}
        aliases: dict[str, set[str]] = {}
        for provider, bucket in self._entries.items():
            for name, entry in bucket.items():
                kind = entry.kind or kinds.get(name, "image")
                if kinds.setdefault(name, kind) != kind:
                    raise ConfigError(
                        f"catalog {sources[(provider, name)]}: model {name!r} is {kind} here "
                        f"but {kinds[name]} elsewhere",
                        key_path=f"models.{name}.kind",
                    )
                for each in entry.expanded():
                    capabilities.setdefault(name, set()).update(each.capabilities or ())
                aliases.setdefault(name, set()).update(entry.aliases)
        self._models: dict[str, ModelSpec] = {}
        for name, kind in kinds.items():
            caps = capabilities[name] or _default_capabilities(kind)
            self._models[name] = ModelSpec(
                name=name,
                kind=kind,
                aliases=tuple(sorted(aliases[name])),
                capabilities=frozenset(caps),
                entries={
                    provider: entries[name] for provider, entries in self._entries.items() if name in entries
                },
            )
            for alias in aliases[name]:
                self._aliases.setdefault(alias, name)

    @classmethod
    def load(cls, extra: Iterable[str | Path] = ()) -> Catalog:
        """The shipped catalogs plus ``extra`` catalog files (later files shadow earlier ones).

        An entry of an extra file is merged over the shipped entry for the same provider
        type and model (see :meth:`inherit`).
        """
        user = [(str(Path(path)), load_catalog_file(Path(path))) for path in extra]
        return cls(_shipped_files(), user)

    def standard_params(self, provider_type: str) -> dict[str, ParamValue]:
        """A provider type's standard mapping: its shipped catalog's ``defaults.params``.

        Types without a shipped catalog (``simulated``, ``custom``, import paths) take
        genrouter's own field names (``prompt: prompt``, ``width: width``, ...).
        """
        defaults = self._defaults.get(provider_type)
        if defaults is not None and defaults.params:
            return dict(defaults.params)
        return {name: name for name in STANDARD_FIELDS}

    def passthrough_params(self, provider_type: str) -> dict[str, ParamValue]:
        """The mapping of a passthrough model: :meth:`standard_params` with the catalog's
        ``defaults.passthrough_params`` (its usual media input names) merged over it."""
        defaults = self._defaults.get(provider_type)
        extra = defaults.passthrough_params if defaults is not None else None
        return {**self.standard_params(provider_type), **(extra or {})}

    def inherit(self, provider_type: str, model: str, entry: CatalogEntry) -> CatalogEntry:
        """A user-declared ``entry`` merged over what the catalog knows for it.

        Over the shipped entry of ``provider_type`` for ``model`` (or an alias of it) when
        there is one: every key the entry sets wins, ``params`` and ``limits`` merge key by
        key. Else over the type's defaults, so ``params`` start from
        :meth:`standard_params`. A workflow entry is taken as written: its ``params`` map to
        the workflow's own inputs, which no standard mapping knows.
        """
        if entry.kind == "workflow":
            return entry
        shipped = self._shipped.get(provider_type, {})
        base = shipped.get(model) or shipped.get(self._shipped_aliases.get(model, ""))
        if base is None:
            defaults = self._defaults.get(provider_type) or CatalogDefaults()
            params = {**self.standard_params(provider_type), **(entry.params or {})}
            return merge_entry(entry, defaults).model_copy(update={"params": params})
        update: dict[str, Any] = {name: getattr(entry, name) for name in entry.model_fields_set}
        update["params"] = {**(base.params or {}), **(entry.params or {})}
        if "variants" not in entry.model_fields_set and entry.endpoint != base.endpoint:
            update["variants"] = None  # another endpoint: the shipped variants belong to the old one
        if entry.limits is not None and base.limits is not None:
            update["limits"] = base.limits.model_copy(
                update={name: getattr(entry.limits, name) for name in entry.limits.model_fields_set}
            )
        return base.model_copy(update=update)

    def shipped_types(self) -> list[str]:
        """Provider types with a shipped catalog (``fal``, ``modal``, ``replicate``)."""
        return sorted(self._shipped)

    def user_entries_for(self, provider: str) -> Mapping[str, tuple[str, CatalogEntry]]:
        """Entries that ``catalogs:`` files declare for ``provider``: (file, entry) by model,
        not yet merged over anything."""
        return self._user.get(provider, {})

    @property
    def models(self) -> Mapping[str, ModelSpec]:
        """Every model by canonical name."""
        return self._models

    def resolve(self, name: str) -> str | None:
        """The canonical model name for ``name`` or one of its aliases; None if unknown."""
        if name in self._models:
            return name
        return self._aliases.get(name)

    def entries_for(self, provider: str) -> Mapping[str, CatalogEntry]:
        """Catalog entries declared for a provider type or key, by model."""
        return self._entries.get(provider, {})


def _default_capabilities(kind: str) -> set[Capability]:
    if kind == "video":
        return {Capability.TEXT_TO_VIDEO}
    if kind == "upscale":
        return {Capability.UPSCALE}
    if kind == "remove-background":
        return {Capability.REMOVE_BACKGROUND}
    if kind == "workflow":
        return set()  # a workflow takes what its inputs declare
    return {Capability.TEXT_TO_IMAGE}


@functools.cache
def _shipped_files() -> tuple[tuple[str, CatalogFile], ...]:
    folder = shipped_catalog_dir()
    return tuple((path.name, load_catalog_file(path)) for path in sorted(folder.glob("*.yaml")))


def build_deployment(
    *,
    provider: str,
    provider_type: str,
    model: str,
    entry: CatalogEntry,
    spec: ModelSpec | None,
    price_override: Price | None = None,
    source: str | None = None,
) -> Deployment:
    """A :class:`Deployment` from a catalog entry, filling gaps from the model's shipped spec."""
    capabilities = entry.capabilities
    kind = entry.kind or (spec.kind if spec else "image")
    if capabilities is None:
        capabilities = list(spec.capabilities) if spec else list(_default_capabilities(kind))
    price = entry.price or price_override
    raw = entry.params or {}
    return Deployment(
        provider=provider,
        provider_type=provider_type,
        model=model,
        endpoint=entry.endpoint,
        kind=kind,
        capabilities=frozenset(capabilities),
        limits=entry.limits or Limits(),
        params={name: param_target(value) for name, value in raw.items()},
        pricing=price.to_pricing() if price else None,
        gpu_seconds_per_output=entry.gpu_seconds_per_output,
        source=source,
        rules={name: value for name, value in raw.items() if isinstance(value, ParamRule)},
        inputs=dict(entry.inputs or {}),
    )
