"""Which deployments a configured provider serves, built from the catalogs and its section.

Every user-declared entry (inline ``models:`` in a provider section, or a ``catalogs:``
file) is merged over the shipped entry for the same provider type and model when there
is one, else over the type's standard mapping (:meth:`Catalog.inherit`), on every
provider type alike. Each entry's ``variants`` become deployments of their own.

Passthrough models (``"<provider-key>:<endpoint>"``) get a one-off deployment here too.
Nothing in this module knows a provider's name: types differ only through their catalogs
and the optional backend capabilities (``default_entries``, ``default_limits``; see
:mod:`genrouter.backends.capabilities`).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from genrouter.catalog import (
    IMAGE_INPUT_KINDS,
    PROMPTLESS_KINDS,
    Capability,
    Catalog,
    CatalogEntry,
    Deployment,
    Kind,
    Limits,
    build_deployment,
)
from genrouter.errors import ConfigError, InvalidRequestError, NoRouteError
from genrouter.types import GenerationRequest

if TYPE_CHECKING:
    from genrouter.backends.capabilities import Capabilities

__all__ = [
    "PassthroughDeployments",
    "needs_image",
    "needs_prompt",
    "provider_deployments",
    "split_passthrough",
]

PASSTHROUGH_KEPT = 256
"""Passthrough deployments remembered per router (their health and circuit state persist)."""


def _entries(
    catalog: Catalog, key: str, section: Any, capabilities: Capabilities
) -> dict[str, tuple[CatalogEntry, str | None]]:
    """(entry, where it was declared) by model name, user entries merged over the shipped ones."""
    ptype: str = section.type
    default_entries = capabilities.default_entries
    out: dict[str, tuple[CatalogEntry, str | None]] = {}
    if default_entries is not None:
        for model, entry in default_entries(catalog).items():
            out[model] = (catalog.inherit(ptype, model, entry), None)
    else:
        user = catalog.user_entries_for(ptype)
        for model, entry in catalog.entries_for(ptype).items():
            where = f"catalog {user[model][0]}: models.{model}" if model in user else None
            out[model] = (entry, where)
    if key != ptype:
        for model, (source, entry) in catalog.user_entries_for(key).items():
            out[model] = (catalog.inherit(ptype, model, entry), f"catalog {source}: models.{model}")
    models: Mapping[str, CatalogEntry] = section.models
    for model, entry in models.items():
        out[model] = (catalog.inherit(ptype, model, entry), f"providers.{key}.models.{model}")
    return out


def _check_prompt(deployment: Deployment, where: str | None) -> None:
    """A model that takes a prompt must map it somewhere, or it can never work."""
    if deployment.kind in PROMPTLESS_KINDS or deployment.params.get("prompt"):
        return
    place = where or f"providers.{deployment.provider}.models.{deployment.model}"
    raise ConfigError(
        f"{place}: model {deployment.model!r} takes a prompt but its params map prompt to no "
        f"input of {deployment.provider} ({deployment.endpoint}); set params: {{prompt: <input name>}}",
        key_path=place,
    )


def provider_deployments(
    catalog: Catalog, key: str, section: Any, capabilities: Capabilities
) -> list[Deployment]:
    """Every deployment provider ``key`` serves, variants included, in catalog order."""
    price_override = getattr(section, "price", None)
    default_limits = capabilities.default_limits
    deployments: list[Deployment] = []
    for model, (entry, where) in _entries(catalog, key, section, capabilities).items():
        name = catalog.resolve(model) or model
        inline = where is not None and where.startswith("providers.")
        for each in entry.expanded():
            spec = catalog.models.get(name)
            workflow = (each.kind or (spec.kind if spec else None)) == "workflow"
            if each.limits is None and default_limits is not None and not workflow:
                each = each.model_copy(update={"limits": default_limits})
            deployment = build_deployment(
                provider=key,
                provider_type=section.type,
                model=name,
                entry=each,
                spec=spec,
                price_override=price_override,
                source=f"providers.{key}.models" if inline else None,
            )
            _check_prompt(deployment, where)
            deployments.append(deployment)
    return deployments


def needs_image(request: GenerationRequest, kind: str) -> None:
    """An ``upscale`` or ``remove-background`` request without an ``image`` is invalid."""
    if kind in IMAGE_INPUT_KINDS and request.image is None:
        raise InvalidRequestError(
            f"image: {request.model!r} is a {kind} model and needs an image (a URL, bytes or a Path)",
            field="image",
        )


def needs_prompt(request: GenerationRequest, kind: str, *, passthrough: bool = False) -> None:
    """An ``image`` or ``video`` request without a ``prompt`` is invalid.

    Upscalers, background removers and workflows take none (a workflow that needs one
    declares it as a required input). A passthrough endpoint is the caller's to vouch
    for: genrouter cannot know whether it takes a prompt, so the provider decides.
    """
    if request.prompt is None and kind not in PROMPTLESS_KINDS and not passthrough:
        raise InvalidRequestError(
            f"prompt: {request.model!r} is a{'n' if kind == 'image' else ''} {kind} model and needs "
            "a prompt; pass prompt='...' (only upscale, remove-background and workflow models "
            "run without one)",
            field="prompt",
        )


def split_passthrough(model: str, providers: Mapping[str, Any]) -> tuple[str, str]:
    """``("fal", "fal-ai/flux-pro/kontext")`` from ``"fal:fal-ai/flux-pro/kontext"``.

    The provider key is the part before the first ``:`` (so Replicate's
    ``replicate:owner/name:<version>`` keeps its version). A prefix that is no configured
    provider key is a :class:`NoRouteError` naming the configured keys.
    """
    key, _, endpoint = model.partition(":")
    if key not in providers or not endpoint:
        configured = ", ".join(providers) or "none"
        why = f"{key!r} is not a configured provider key" if endpoint else "no endpoint after ':'"
        raise NoRouteError(
            f"model {model!r} is not in the catalog and, as a passthrough "
            f"'<provider-key>:<endpoint>', {why}; configured providers: {configured}"
        )
    return key, endpoint


class PassthroughDeployments:
    """One-off deployments for ``"<provider-key>:<endpoint>"`` models, built on first use.

    A passthrough uses the provider type's standard mapping (with its catalog's
    ``defaults.passthrough_params``: the usual media input names), the backend's default
    limits, every capability (the caller vouches for the endpoint), and no price: its
    cost is unknown unless the provider reports one. It has no fallback.
    """

    def __init__(
        self, catalog: Catalog, providers: Mapping[str, Any], capabilities: Mapping[str, Capabilities]
    ) -> None:
        self._catalog = catalog
        self._providers = providers
        self._capabilities = capabilities
        self._made: OrderedDict[str, Deployment] = OrderedDict()

    def get(self, model: str, request: GenerationRequest | None = None) -> Deployment:
        """The deployment for passthrough ``model`` (a :class:`NoRouteError` for a bad prefix)."""
        kind = _kind_of(request)
        cache_key = f"{kind}|{model}"
        made = self._made.get(cache_key)
        if made is not None:
            self._made.move_to_end(cache_key)
            return made
        key, endpoint = split_passthrough(model, self._providers)
        section = self._providers[key]
        limits: Limits = self._capabilities[key].default_limits or Limits()
        entry = CatalogEntry(
            endpoint=endpoint,
            kind=kind,
            capabilities=list(Capability),
            limits=limits,
            params=self._catalog.passthrough_params(section.type),
        )
        deployment = build_deployment(
            provider=key, provider_type=section.type, model=model, entry=entry, spec=None
        )
        deployment = dataclasses.replace(deployment, passthrough=True)
        self._made[cache_key] = deployment
        while len(self._made) > PASSTHROUGH_KEPT:
            self._made.popitem(last=False)
        return deployment

    def find(self, model: str, endpoint: str) -> Deployment | None:
        """A passthrough deployment already made for ``model`` at ``endpoint``, if any."""
        for deployment in self._made.values():
            if deployment.model == model and deployment.endpoint == endpoint:
                return deployment
        return None


def _kind_of(request: GenerationRequest | None) -> Kind:
    if request is not None and (request.duration_s is not None or request.fps is not None):
        return "video"
    return "image"
