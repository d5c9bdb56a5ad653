"""Webhooks of genrouter's own ``deploy/modal`` class: Standard Webhooks deliveries of a job
event, verified with the Modal section's ``webhook_secret``."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from pydantic import SecretStr

from genrouter.backends._webhooks import (
    check_standard_webhooks,
    job_event,
    json_object,
    signed_with_standard_webhooks,
    webhook_secret,
)
from genrouter.backends.modal._settings import ModalSettings
from genrouter.engine._webhook_hub import DEFAULT_TOLERANCE_S, WebhookEvent
from genrouter.errors import WebhookVerificationError
from genrouter.types import JobState

__all__ = ["ModalWebhooks", "verify_modal_webhook"]

_MODAL_STATES = {
    "succeeded": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
}


def verify_modal_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | SecretStr,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
    provider: str = "modal",
) -> WebhookEvent:
    """Verify a delivery from the ``deploy/modal`` class (Standard Webhooks HMAC-SHA256).

    The body is ``{"type", "timestamp", "data": {"id": <call id>, "status", "error", "result"}}``
    (``deploy/modal/_webhooks.py``); ``provider_request_id`` is the Modal call id, as in the
    :class:`~genrouter.types.ProviderJob`. ``secret``, ``now`` and ``tolerance_s`` as for
    :func:`verify_replicate_webhook`.
    """
    msg_id, stamp = check_standard_webhooks(headers, body, secret, tolerance_s, now, "Modal")
    envelope = json_object(body, "expected a genrouter Modal job event")
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise WebhookVerificationError("signature verified, but the body has no 'data' object")
    return job_event(
        provider,
        data,
        _MODAL_STATES,
        raw=envelope,
        delivery=(msg_id, stamp),
        missing="the event has no call id or status",
        noun="job",
    )


class ModalWebhooks:
    """Verifies deliveries for one ``type: modal`` provider with its ``webhook_secret``."""

    def __init__(self, *, name: str, settings: ModalSettings, cache: MutableMapping[str, Any]) -> None:
        self.name = name
        self.settings = settings

    def signs_webhook(self, headers: Mapping[str, str]) -> bool:
        """The ``deploy/modal`` class signs with Standard Webhooks (``webhook-signature``)."""
        return signed_with_standard_webhooks(headers)

    async def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S
    ) -> WebhookEvent:
        """The delivery's event; ConfigError when ``webhook_secret`` is not set."""
        secret = webhook_secret(
            self.settings.webhook_secret,
            self.name,
            "use the whsec_... value the deployment signs with (GENROUTER_WEBHOOK_SECRET in its "
            "Modal secret; see deploy/modal/README.md)",
        )
        return verify_modal_webhook(headers, body, secret=secret, tolerance_s=tolerance_s, provider=self.name)
