"""Standard Webhooks deliveries (Replicate, genrouter's ``deploy/modal`` class), and the header,
timestamp and body checks every signature scheme in :mod:`genrouter.webhooks` shares.

Public names are re-exported by :mod:`genrouter.webhooks`; see its docstring for the schemes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

# A delivery carries a prediction as the API returns it: the backend's own status map reads it.
from genrouter.backends.replicate._backend import _STATES as _REPLICATE_STATES
from genrouter.engine._webhook_hub import WebhookEvent, WebhookVerificationError
from genrouter.errors import ConfigError
from genrouter.types import JobState
from genrouter.util._secrets import register_secret

__all__ = ["DEFAULT_TOLERANCE_S", "verify_modal_webhook", "verify_replicate_webhook"]

DEFAULT_TOLERANCE_S = 300.0
"""How far a signed timestamp may be from now, either way (Standard Webhooks' and fal's 5 min)."""

_TIMESTAMP = re.compile(r"^(0|[1-9][0-9]{0,11})$")
_MODAL_STATES = {
    "succeeded": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
}


# -- helpers ---------------------------------------------------------------------------------------


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _required(headers: Mapping[str, str], *names: str) -> list[str]:
    values = [headers.get(name, "").strip() for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise WebhookVerificationError(f"missing webhook header(s): {', '.join(missing)}")
    return values


def _timestamp(value: str, name: str, tolerance_s: float, now: float | None) -> int:
    if not _TIMESTAMP.match(value):
        raise WebhookVerificationError(f"{name} is not Unix seconds: {value[:20]!r}")
    stamp = int(value)
    current = time.time() if now is None else now
    if stamp < current - tolerance_s:
        raise WebhookVerificationError(
            f"{name} is {current - stamp:.0f}s old, more than the {tolerance_s:g}s tolerance (a replay?)"
        )
    if stamp > current + tolerance_s:
        raise WebhookVerificationError(
            f"{name} is {stamp - current:.0f}s in the future, more than the {tolerance_s:g}s tolerance"
        )
    return stamp


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookVerificationError(f"signature verified, but the body is not JSON ({what})") from exc
    if not isinstance(data, dict):
        raise WebhookVerificationError(f"signature verified, but the body is not a JSON object ({what})")
    return data


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:2000] or None


# -- Replicate (Standard Webhooks) -------------------------------------------------------------------


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
    msg_id, stamp = _standard_webhooks_check(headers, body, secret, tolerance_s, now, "Replicate")
    prediction = _json_object(body, "expected a Replicate prediction")
    return _job_event(
        provider,
        prediction,
        _REPLICATE_STATES,
        raw=prediction,
        delivery=(msg_id, stamp),
        missing="the body is not a prediction (no id/status)",
        noun="prediction",
    )


def _job_event(
    provider: str,
    record: dict[str, Any],
    states: Mapping[str, JobState],
    *,
    raw: dict[str, Any],
    delivery: tuple[str, int],
    missing: str,
    noun: str,
) -> WebhookEvent:
    """The event a verified Standard Webhooks delivery reports: ``record``'s ``id`` and ``status``.

    ``missing`` completes the error for a record without them, ``noun`` names the status kind.
    """
    rid, status = record.get("id"), record.get("status")
    if not isinstance(rid, str) or not rid or not isinstance(status, str):
        raise WebhookVerificationError(f"signature verified, but {missing}")
    state = states.get(status)
    if state is None:
        raise WebhookVerificationError(f"signature verified, but {noun} status {status[:30]!r} is unknown")
    return WebhookEvent(
        provider=provider,
        provider_request_id=rid,
        state=state,
        error=_text(record.get("error")) if state is not JobState.SUCCEEDED else None,
        raw=raw,
        delivery_id=delivery[0],
        timestamp=delivery[1],
    )


def _standard_webhooks_check(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | SecretStr,
    tolerance_s: float,
    now: float | None,
    who: str,
) -> tuple[str, int]:
    """Check a Standard Webhooks signature; the delivery id and signed timestamp."""
    lowered = _lower(headers)
    msg_id, stamp_text, signatures = _required(
        lowered, "webhook-id", "webhook-timestamp", "webhook-signature"
    )
    stamp = _timestamp(stamp_text, "webhook-timestamp", tolerance_s, now)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookVerificationError("webhook body is not UTF-8") from exc
    expected = _standard_webhooks_mac(secret, msg_id, stamp, text, who)
    matched = False
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Check every entry (no early exit) so timing says nothing about which matched.
        matched |= hmac.compare_digest(candidate, expected)
    if not matched:
        raise WebhookVerificationError("webhook-signature: no v1 signature matches the webhook secret")
    return msg_id, stamp


def _standard_webhooks_mac(secret: str | SecretStr, msg_id: str, stamp: int, text: str, who: str) -> bytes:
    """HMAC-SHA256 of ``id.timestamp.body`` as the ``standardwebhooks`` package signs it."""
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    register_secret(raw)
    try:
        signer = Webhook(raw.strip())
    except Exception as exc:
        raise ConfigError(
            f"the {who} webhook secret is not a Standard Webhooks secret ('whsec_' + base64)"
            + ("; copy it from GET /v1/webhooks/default/secret" if who == "Replicate" else ""),
            key_path="webhook_secret",
        ) from exc
    signed = signer.sign(msg_id=msg_id, timestamp=datetime.fromtimestamp(stamp, tz=UTC), data=text)
    return base64.b64decode(signed.partition(",")[2])


# -- Modal (genrouter's own deployment; Standard Webhooks) ------------------------------------------


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
    msg_id, stamp = _standard_webhooks_check(headers, body, secret, tolerance_s, now, "Modal")
    envelope = _json_object(body, "expected a genrouter Modal job event")
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise WebhookVerificationError("signature verified, but the body has no 'data' object")
    return _job_event(
        provider,
        data,
        _MODAL_STATES,
        raw=envelope,
        delivery=(msg_id, stamp),
        missing="the event has no call id or status",
        noun="job",
    )
