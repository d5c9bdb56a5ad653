"""The optional capabilities a backend may add to the :class:`~genrouter.backends.base.Backend`
Protocol, one small typed Protocol each, and :func:`capabilities_of`, which checks them once.

The router calls :func:`capabilities_of` for each provider when it is built and keeps the
:class:`Capabilities` it returns; nothing later asks a backend what it has. A hook that is
present with the wrong shape (``eager_start_safe = "yes"``, a ``latency_hint`` that is not
callable) is a :class:`~genrouter.errors.ConfigError` naming the provider then, not an
``AttributeError`` on some later request.

- :class:`SupportsWait`: ``wait(job, timeout_s) -> JobStatus``, waiting without polling;
- :class:`ServesDefaultEntries`: ``default_entries(catalog) -> {model: CatalogEntry}``, the
  deployments it serves when its config declares none (the simulated provider serves every
  image model; a backend whose attribute is None serves its type's shipped catalog);
- :class:`HasDefaultLimits`: ``default_limits: Limits`` for inline entries that declare none;
- :class:`HintsLatency`: ``latency_hint(deployment) -> float | None``, an expected p95 before
  any observation;
- :class:`ReportsUnavailable`: ``unavailable_reason: str | None``, why it cannot serve now
  (no credentials), shown by ``explain()`` as the exclusion reason;
- :class:`BindsClock`: ``bind_clock(clock)``, receiving the router's clock;
- :class:`~genrouter.routing.capacity.ReportsCapacity`: ``capacity(deployment)``, backlog and
  containers for spillover routing (cheap, synchronous);
- :class:`EagerStartSafe`: ``eager_start_safe: bool``, True when ``submit``/``wait``/
  ``fetch_result`` open no anyio or httpx cancel scope before their first ``await``, so on
  Python 3.11 the router may run a lane's first step in the caller's task;
- :class:`VerifiesWebhooks`: ``signs_webhook(headers)`` and ``verify_webhook(headers, body)``,
  for a backend that verifies its own provider's webhooks. Built-in provider types verify
  through their package's verifier (``backends/<type>/_webhooks.py``, named in the registry),
  so a test double standing in for their backend still has its deliveries verified.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from genrouter.errors import ConfigError
from genrouter.routing.capacity import ReportsCapacity

if TYPE_CHECKING:
    from genrouter.catalog import Catalog, CatalogEntry, Deployment, Limits
    from genrouter.engine._clock import Clock
    from genrouter.engine._webhook_hub import WebhookEvent
    from genrouter.routing.capacity import CapacityFacts
    from genrouter.types import JobStatus, ProviderJob

__all__ = [
    "BindsClock",
    "Capabilities",
    "EagerStartSafe",
    "HasDefaultLimits",
    "HintsLatency",
    "ReportsCapacity",
    "ReportsUnavailable",
    "ServesDefaultEntries",
    "SupportsWait",
    "VerifiesWebhooks",
    "capabilities_of",
]


@runtime_checkable
class SupportsWait(Protocol):
    """Optional: a backend that can wait for a job more cheaply than polling.

    ``wait`` returns the job's status once it is terminal or ``timeout_s`` passed,
    whichever is first (Modal's ``FunctionCall.get(timeout)``, a simulated clock).
    The router polls backends that do not have it.
    """

    async def wait(self, job: ProviderJob, timeout_s: float) -> JobStatus:
        """Wait for the job to finish, at most ``timeout_s`` seconds."""
        ...


@runtime_checkable
class ServesDefaultEntries(Protocol):
    """Optional: the catalog entries a provider serves when its config declares none."""

    def default_entries(self, catalog: Catalog) -> Mapping[str, CatalogEntry]:
        """Entries by model name (each merged over its type's shipped entry or mapping)."""
        ...


@runtime_checkable
class HasDefaultLimits(Protocol):
    """Optional: the :class:`~genrouter.catalog.Limits` of inline entries that declare none."""

    default_limits: Limits


@runtime_checkable
class HintsLatency(Protocol):
    """Optional: an expected p95 latency for a deployment before any observation."""

    def latency_hint(self, deployment: Deployment) -> float | None:
        """Seconds, or None for no hint."""
        ...


@runtime_checkable
class ReportsUnavailable(Protocol):
    """Optional: why the provider cannot serve now (read once, when the router is built)."""

    unavailable_reason: str | None


@runtime_checkable
class BindsClock(Protocol):
    """Optional: a backend that times itself by the router's clock."""

    def bind_clock(self, clock: Clock) -> None:
        """Use ``clock`` from now on."""
        ...


@runtime_checkable
class EagerStartSafe(Protocol):
    """Optional: True when a lane's first step may run in the caller's task (see module doc)."""

    eager_start_safe: bool


@runtime_checkable
class VerifiesWebhooks(Protocol):
    """Verifies one provider's webhook deliveries (a provider type's verifier, or a backend).

    ``verify_webhook`` takes the raw body and the headers (any mapping, names
    case-insensitive) and returns the delivery's event with ``provider`` set to the
    provider's config key; it raises :class:`~genrouter.errors.WebhookVerificationError`
    for a bad delivery and :class:`~genrouter.errors.ConfigError` when the provider's
    secret or keys are not configured.
    """

    def signs_webhook(self, headers: Mapping[str, str]) -> bool:
        """Whether ``headers`` carry this provider's signature scheme."""
        ...

    async def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, tolerance_s: float
    ) -> WebhookEvent:
        """The verified delivery's event."""
        ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one provider's backend offers beyond :class:`~genrouter.backends.base.Backend`.

    Each hook is None (or False) when the backend does not have it.
    """

    wait: Callable[[ProviderJob, float], Any] | None = None
    default_entries: Callable[[Catalog], Mapping[str, CatalogEntry]] | None = None
    default_limits: Limits | None = None
    latency_hint: Callable[[Deployment], float | None] | None = None
    unavailable_reason: str | None = None
    bind_clock: Callable[[Clock], None] | None = None
    capacity: Callable[[Deployment], CapacityFacts | None] | None = None
    eager_start_safe: bool = False
    webhooks: VerifiesWebhooks | None = None


_CALLABLE_HOOKS = ("wait", "default_entries", "latency_hint", "bind_clock", "capacity")


def capabilities_of(key: str, backend: object) -> Capabilities:
    """Check provider ``key``'s backend for each optional capability, once.

    A hook set to None counts as absent. A hook of the wrong shape raises
    :class:`ConfigError` naming the provider and the hook.
    """
    hooks: dict[str, Any] = {}
    for name in _CALLABLE_HOOKS:
        value = getattr(backend, name, None)
        if value is None:
            continue
        if not callable(value):
            raise _bad_hook(key, backend, name, "a method")
        hooks[name] = value
    limits = getattr(backend, "default_limits", None)
    if limits is not None:
        from genrouter.catalog import Limits

        if not isinstance(limits, Limits):
            raise _bad_hook(key, backend, "default_limits", "a genrouter.catalog.Limits")
        hooks["default_limits"] = limits
    reason = getattr(backend, "unavailable_reason", None)
    if reason is not None and not isinstance(reason, str):
        raise _bad_hook(key, backend, "unavailable_reason", "a string or None")
    eager = getattr(backend, "eager_start_safe", False)
    if not isinstance(eager, bool):
        raise _bad_hook(key, backend, "eager_start_safe", "True or False")
    webhooks = backend if isinstance(backend, VerifiesWebhooks) else None
    return Capabilities(**hooks, unavailable_reason=reason or None, eager_start_safe=eager, webhooks=webhooks)


def _bad_hook(key: str, backend: object, name: str, expected: str) -> ConfigError:
    return ConfigError(
        f"providers.{key}: {type(backend).__name__}.{name} must be {expected} "
        f"(got {type(getattr(backend, name)).__name__}); fix the backend or remove the attribute",
        key_path=f"providers.{key}",
    )
