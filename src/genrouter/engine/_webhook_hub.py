"""What verified webhooks said about jobs, and the ``result()`` calls waiting to hear it.

The router owns one :class:`WebhookHub`. :meth:`AsyncRouter.handle_webhook` records
each verified delivery here; :meth:`AsyncRouter.result` subscribes to the job it waits
on and is woken when a terminal event arrives. Recording is idempotent:

- a delivery seen before (same provider and delivery id) changes nothing;
- a terminal event is never replaced (the first terminal event wins);
- an event older in the job's life than the one recorded (``queued`` after
  ``running``) changes nothing, so out-of-order deliveries are harmless.

This module imports no cryptography (so ``genrouter`` can re-export these names for
free): signature checks live in :mod:`genrouter.webhooks`,
which the router imports only when a webhook arrives. The hub belongs to one event
loop (the router's): record and subscribe from that loop.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from genrouter.errors import ConfigError, WebhookVerificationError
from genrouter.types import GenerationResult, JobState

if TYPE_CHECKING:
    from genrouter.backends.capabilities import VerifiesWebhooks

__all__ = ["DEFAULT_TOLERANCE_S", "WebhookEvent", "WebhookHub", "WebhookVerificationError"]

DEFAULT_TOLERANCE_S = 300.0
"""How far a signed timestamp may be from now, either way (Standard Webhooks' and fal's 5 min)."""

_ORDER = {JobState.QUEUED: 0, JobState.RUNNING: 1}
_TERMINAL_RANK = 2


class WebhookEvent(BaseModel):
    """A verified webhook delivery, normalised across providers.

    ``provider`` is the provider's config key (the verifier's default, ``"fal"`` or
    ``"replicate"``, when called directly). ``result`` is None when the delivery does
    not carry a normalised result: the router fetches it through the backend when a
    waiting ``result()`` wakes. ``raw`` is the parsed body. ``delivery_id`` is the
    provider's id for the delivery (Replicate's ``webhook-id``, the same on every
    retry), ``timestamp`` the signed Unix time, and ``duplicate`` is True when
    :meth:`AsyncRouter.handle_webhook` had already recorded this delivery or a
    later state of the job.
    """

    model_config = ConfigDict(frozen=True)

    provider: str
    provider_request_id: str
    state: JobState
    result: GenerationResult | None = None
    error: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)
    delivery_id: str | None = None
    timestamp: int | None = None
    duplicate: bool = False


def _rank(state: JobState) -> int:
    return _TERMINAL_RANK if state.is_terminal else _ORDER.get(state, 0)


class WebhookHub:
    """The latest verified state of each job, and events that wake waiters on terminal ones.

    ``max_jobs`` bounds memory: the oldest jobs (and delivery ids) are forgotten first.
    ``key_cache`` holds what verifiers fetched (fal's JWKS), so it lives as long as
    the router. Each provider's verifier is registered with :meth:`add_provider`.
    """

    def __init__(self, *, max_jobs: int = 10_000) -> None:
        self.max_jobs = max_jobs
        self.key_cache: dict[str, Any] = {}
        self._providers: dict[str, tuple[str, Any, VerifiesWebhooks | None]] = {}
        self._verifiers: dict[str, VerifiesWebhooks | None] = {}
        self._jobs: OrderedDict[tuple[str, str], WebhookEvent] = OrderedDict()
        self._deliveries: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._waiters: dict[tuple[str, str], set[asyncio.Event]] = {}

    def add_provider(
        self, key: str, provider_type: str, settings: Any, own: VerifiesWebhooks | None = None
    ) -> None:
        """Say how provider ``key``'s deliveries are verified: by ``own`` (a backend that verifies
        its own webhooks), else by its type's verifier in the backend registry, imported and
        built from ``settings`` on the first delivery."""
        self._providers[key] = (provider_type, settings, own)
        self._verifiers.pop(key, None)

    def verifier(self, key: str) -> VerifiesWebhooks | None:
        """Provider ``key``'s verifier (None: its type sends no signed webhooks).

        Raises :class:`ConfigError` for a provider that is not configured.
        """
        if key in self._verifiers:
            return self._verifiers[key]
        entry = self._providers.get(key)
        if entry is None:
            raise ConfigError(
                f"webhook for unknown provider {key!r}; configured: {', '.join(self._providers)}",
                key_path="providers",
            )
        provider_type, settings, verifier = entry
        if verifier is None:
            from genrouter.backends.base import backend_spec, load_target

            target = backend_spec(provider_type).webhooks
            if target:
                verifier = load_target(target)(name=key, settings=settings, cache=self.key_cache)
        self._verifiers[key] = verifier
        return verifier

    async def verify(
        self, key: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S
    ) -> WebhookEvent:
        """Verify a delivery for provider ``key`` with its verifier; records nothing.

        Raises :class:`ConfigError` for an unknown provider, one whose type sends no
        verifiable webhooks, or a missing secret; :class:`WebhookVerificationError` for a
        delivery that fails verification.
        """
        verifier = self.verifier(key)
        if verifier is None:
            raise ConfigError(
                f"provider {key!r} (type {self._providers[key][0]}) sends no signed webhooks "
                "genrouter can verify",
                key_path=f"providers.{key}.type",
            )
        return await verifier.verify_webhook(headers, body, tolerance_s=tolerance_s)

    def providers_signing(self, headers: Mapping[str, str]) -> list[str]:
        """The providers whose signature scheme ``headers`` carry, in config order."""
        return [
            key
            for key in self._providers
            if (verifier := self.verifier(key)) is not None and verifier.signs_webhook(headers)
        ]

    def record(self, event: WebhookEvent) -> bool:
        """Record a verified event; False when it changed nothing (duplicate or stale).

        A terminal event sets every waiter subscribed to its job.
        """
        if event.delivery_id:
            delivery = (event.provider, event.delivery_id)
            if delivery in self._deliveries:
                return False
            self._remember(self._deliveries, delivery, None)
        key = (event.provider, event.provider_request_id)
        current = self._jobs.get(key)
        if current is not None and (current.state.is_terminal or _rank(event.state) < _rank(current.state)):
            return False
        self._remember(self._jobs, key, event)
        if event.state.is_terminal:
            for waiter in self._waiters.get(key, ()):
                waiter.set()
        return True

    def latest(self, provider: str, provider_request_id: str) -> WebhookEvent | None:
        """The event recorded for a job (its furthest state), or None."""
        return self._jobs.get((provider, provider_request_id))

    def finished(self, provider: str, provider_request_id: str) -> bool:
        """Whether a verified webhook said the job reached a terminal state."""
        event = self.latest(provider, provider_request_id)
        return event is not None and event.state.is_terminal

    def subscribe(self, provider: str, provider_request_id: str) -> asyncio.Event:
        """An event set when the job's terminal webhook arrives (already set if it has)."""
        waiter = asyncio.Event()
        if self.finished(provider, provider_request_id):
            waiter.set()
        self._waiters.setdefault((provider, provider_request_id), set()).add(waiter)
        return waiter

    def unsubscribe(self, provider: str, provider_request_id: str, waiter: asyncio.Event) -> None:
        """Stop waking ``waiter``."""
        key = (provider, provider_request_id)
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[key]

    def _remember(self, store: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > self.max_jobs:
            store.popitem(last=False)

    def __len__(self) -> int:
        return len(self._jobs)
