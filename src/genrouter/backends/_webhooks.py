"""What every provider's webhook verifier shares: header, timestamp and body checks, the
Standard Webhooks signature (Replicate and genrouter's ``deploy/modal`` class sign with it), the
event a verified job delivery reports, and the "secret not set" error.

Each provider's own scheme lives in its package (``backends/<type>/_webhooks.py``); the public
names are re-exported by :mod:`genrouter.webhooks`, whose docstring describes the schemes.
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

from genrouter.engine._webhook_hub import DEFAULT_TOLERANCE_S, WebhookEvent
from genrouter.errors import ConfigError, WebhookVerificationError
from genrouter.types import JobState
from genrouter.util._secrets import register_secret

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "check_standard_webhooks",
    "error_text",
    "job_event",
    "json_object",
    "lower_headers",
    "required_headers",
    "signed_timestamp",
    "signed_with_standard_webhooks",
    "webhook_secret",
]

_TIMESTAMP = re.compile(r"^(0|[1-9][0-9]{0,11})$")


# -- helpers ---------------------------------------------------------------------------------------


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def required_headers(headers: Mapping[str, str], *names: str) -> list[str]:
    values = [headers.get(name, "").strip() for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise WebhookVerificationError(f"missing webhook header(s): {', '.join(missing)}")
    return values


def signed_timestamp(value: str, name: str, tolerance_s: float, now: float | None) -> int:
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


def json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookVerificationError(f"signature verified, but the body is not JSON ({what})") from exc
    if not isinstance(data, dict):
        raise WebhookVerificationError(f"signature verified, but the body is not a JSON object ({what})")
    return data


def error_text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:2000] or None


def job_event(
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
        error=error_text(record.get("error")) if state is not JobState.SUCCEEDED else None,
        raw=raw,
        delivery_id=delivery[0],
        timestamp=delivery[1],
    )


def check_standard_webhooks(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | SecretStr,
    tolerance_s: float,
    now: float | None,
    who: str,
) -> tuple[str, int]:
    """Check a Standard Webhooks signature; the delivery id and signed timestamp."""
    lowered = lower_headers(headers)
    msg_id, stamp_text, signatures = required_headers(
        lowered, "webhook-id", "webhook-timestamp", "webhook-signature"
    )
    stamp = signed_timestamp(stamp_text, "webhook-timestamp", tolerance_s, now)
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


def signed_with_standard_webhooks(headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` carry a Standard Webhooks signature (``webhook-signature``)."""
    return "webhook-signature" in lower_headers(headers)


def webhook_secret(secret: SecretStr | None, provider: str, fix: str) -> SecretStr:
    """A section's Standard Webhooks secret; ConfigError saying how to get one when it is unset."""
    if secret is None or not secret.get_secret_value():
        raise ConfigError(
            f"providers.{provider}.webhook_secret is not set; {fix}",
            key_path=f"providers.{provider}.webhook_secret",
        )
    return secret
