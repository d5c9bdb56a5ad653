"""The :class:`Backend` Protocol and the lazy registry of backends by provider type.

A backend drives one provider: it translates a :class:`GenerationRequest` into the
provider's input, submits it, polls it, fetches and normalises the result, and
cancels. It never retries: the router owns the one retry layer. Users add a
backend without inheriting anything, by matching the Protocol.

Optional capabilities a backend may add (``wait``, ``default_entries``, ``default_limits``,
``latency_hint``, ``unavailable_reason``, ``bind_clock``, ``capacity``, ``eager_start_safe``,
webhook verification) are small typed Protocols in :mod:`genrouter.backends.capabilities`,
checked once when the router is built.

The registry maps a provider ``type`` to ``"module:Class"``, its settings model, an install
hint and its webhook verifier, and imports the backend module only when a config uses that
type. It is the only list of provider types: the config's provider union is built from it.
Third parties register through the ``genrouter.backends`` entry-point group, or name
``"pkg.module:Class"`` as a provider's ``type``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from genrouter.backends.capabilities import SupportsWait
from genrouter.backends.fal._settings import FalSettings
from genrouter.backends.modal._settings import ModalSettings
from genrouter.backends.replicate._settings import ReplicateSettings
from genrouter.backends.settings import CustomSettings, ImportPathSettings, ProviderSettings
from genrouter.backends.simulated._settings import SimulatedSettings
from genrouter.errors import ConfigError
from genrouter.types import (
    GenerationRequest,
    GenerationResult,
    JobStatus,
    ProviderJob,
)

if TYPE_CHECKING:
    from genrouter.catalog import Deployment

__all__ = [
    "Backend",
    "BackendSpec",
    "ProviderJob",
    "SupportsWait",
    "backend_spec",
    "builtin_types",
    "known_types",
    "load_backend_class",
]


@runtime_checkable
class Backend(Protocol):
    """What the router needs from a provider backend.

    Errors are genrouter errors: :class:`~genrouter.errors.RateLimitedError`,
    :class:`~genrouter.errors.ProviderUnavailableError`,
    :class:`~genrouter.errors.AuthenticationError`,
    :class:`~genrouter.errors.InvalidRequestError` from ``submit``;
    :class:`~genrouter.errors.JobFailedError` (or ``InvalidRequestError``) from
    ``fetch_result`` of a job that failed. ``poll``, ``fetch_result`` and ``cancel``
    are idempotent; ``submit`` is not and is never retried blindly.
    """

    name: str
    """The provider's config key."""

    async def submit(
        self,
        deployment: Deployment,
        request: GenerationRequest,
        *,
        webhook_url: str | None = None,
    ) -> ProviderJob:
        """Submit the request; return once the provider accepted it."""
        ...

    async def poll(self, job: ProviderJob) -> JobStatus:
        """The job's current state."""
        ...

    async def fetch_result(self, job: ProviderJob) -> GenerationResult:
        """The result of a succeeded job; raises the job's error for a failed or cancelled one."""
        ...

    async def cancel(self, job: ProviderJob) -> None:
        """Ask the provider to stop the job. Harmless on a finished job."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """Where a provider type's backend lives, its settings schema, and how to install it."""

    provider_type: str
    target: str
    settings: type[ProviderSettings]
    extra: str | None = None
    """The pip extra that provides the backend's SDK, if any."""
    webhooks: str | None = None
    """``"module:Class"`` of the type's webhook verifier (a
    :class:`~genrouter.backends.capabilities.VerifiesWebhooks` built from ``name``, ``settings``
    and the router's key ``cache``); None when the type sends no signed webhooks."""


_BUILTIN: dict[str, BackendSpec] = {
    spec.provider_type: spec
    for spec in (
        BackendSpec(
            "fal",
            "genrouter.backends.fal:FalBackend",
            FalSettings,
            webhooks="genrouter.backends.fal._webhooks:FalWebhooks",
        ),
        BackendSpec(
            "replicate",
            "genrouter.backends.replicate:ReplicateBackend",
            ReplicateSettings,
            webhooks="genrouter.backends.replicate._webhooks:ReplicateWebhooks",
        ),
        BackendSpec(
            "modal",
            "genrouter.backends.modal:ModalBackend",
            ModalSettings,
            "modal",
            webhooks="genrouter.backends.modal._webhooks:ModalWebhooks",
        ),
        BackendSpec("simulated", "genrouter.backends.simulated:SimulatedBackend", SimulatedSettings),
        BackendSpec("custom", "", CustomSettings),
    )
}
"""The built-in provider types, in the order discovery and the config schema list them: the only
list of them. The config's provider-section union, its JSON Schema and the credential discovery
are built from it (and from entry-point plugins, :func:`known_types`)."""

IMPORT_PATH_SPEC = BackendSpec("import", "", ImportPathSettings)


def _entry_point_specs() -> dict[str, BackendSpec]:
    specs: dict[str, BackendSpec] = {}
    for ep in entry_points(group="genrouter.backends"):
        if ep.name not in _BUILTIN:
            specs[ep.name] = BackendSpec(ep.name, ep.value, ImportPathSettings)
    return specs


def builtin_types() -> Mapping[str, BackendSpec]:
    """The provider types genrouter ships, by name (``custom`` included; plugins not)."""
    return _BUILTIN


def known_types() -> Mapping[str, BackendSpec]:
    """Every registered provider type: built-in ones and entry-point plugins."""
    return {**_BUILTIN, **_entry_point_specs()}


def backend_spec(provider_type: str) -> BackendSpec:
    """The spec for a provider type; an import path gets the generic spec."""
    if provider_type in _BUILTIN:
        return _BUILTIN[provider_type]
    if ":" in provider_type:
        return IMPORT_PATH_SPEC
    plugins = _entry_point_specs()
    if provider_type in plugins:
        return plugins[provider_type]
    valid = ", ".join(sorted(known_types()))
    raise ConfigError(f"unknown provider type {provider_type!r}; use one of {valid} or 'pkg.module:Class'")


def load_backend_class(provider_type: str, *, key_path: str | None = None) -> type[Any]:
    """Import the backend class for a provider type (or ``"pkg.module:Class"`` path).

    A missing optional dependency raises :class:`ConfigError` with the exact
    ``pip install 'genrouter[extra]'`` command.
    """
    spec = backend_spec(provider_type)
    target = provider_type if spec is IMPORT_PATH_SPEC else spec.target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if spec.extra and exc.name and not exc.name.startswith("genrouter"):
            raise ConfigError(
                f"provider type {provider_type!r} needs the {exc.name!r} package: "
                f"pip install 'genrouter[{spec.extra}]'",
                key_path=key_path,
            ) from exc
        raise ConfigError(
            f"cannot import backend {target!r} for provider type {provider_type!r}: {exc}",
            key_path=key_path,
        ) from exc
    try:
        cls: type[Any] = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"backend module {module_name!r} has no class {attr!r}", key_path=key_path) from exc
    return cls


def load_target(target: str) -> Any:
    """The object a ``"module:attribute"`` path names (a registry entry's backend or verifier)."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
