"""Replicate's webhooks: Standard Webhooks deliveries of a prediction, verified with the
provider section's ``webhook_secret`` (``shared/reference/replicate.md`` §4)."""

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

# A delivery carries a prediction as the API returns it: the backend's own status map reads it.
from genrouter.backends.replicate._backend import _STATES as _REPLICATE_STATES
from genrouter.backends.replicate._settings import ReplicateSettings
from genrouter.engine._webhook_hub import DEFAULT_TOLERANCE_S, WebhookEvent

__all__ = ["ReplicateWebhooks", "verify_replicate_webhook"]


def verify_replicate_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | SecretStr,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
    provider: str = "replicate",
) -> WebhookEvent:
    """Verify a Replicate delivery (Standard Webhooks HMAC-SHA256) and return its event.

    ``secret`` is the ``whsec_…`` signing secret; ``now`` (Unix seconds, default the
    wall clock) and ``tolerance_s`` bound the signed timestamp. Raises
    :class:`WebhookVerificationError`; a secret that is not base64 raises
    :class:`~genrouter.errors.ConfigError`.
    """
    msg_id, stamp = check_standard_webhooks(headers, body, secret, tolerance_s, now, "Replicate")
    prediction = json_object(body, "expected a Replicate prediction")
    return job_event(
        provider,
        prediction,
        _REPLICATE_STATES,
        raw=prediction,
        delivery=(msg_id, stamp),
        missing="the body is not a prediction (no id/status)",
        noun="prediction",
    )


class ReplicateWebhooks:
    """Verifies deliveries for one ``type: replicate`` provider with its ``webhook_secret``."""

    def __init__(self, *, name: str, settings: ReplicateSettings, cache: MutableMapping[str, Any]) -> None:
        self.name = name
        self.settings = settings

    def signs_webhook(self, headers: Mapping[str, str]) -> bool:
        """Replicate signs with Standard Webhooks (``webhook-signature``)."""
        return signed_with_standard_webhooks(headers)

    async def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S
    ) -> WebhookEvent:
        """The delivery's event; ConfigError when ``webhook_secret`` is not set."""
        secret = webhook_secret(
            self.settings.webhook_secret,
            self.name,
            "copy it from Replicate's GET /v1/webhooks/default/secret (whsec_...)",
        )
        return verify_replicate_webhook(
            headers, body, secret=secret, tolerance_s=tolerance_s, provider=self.name
        )
