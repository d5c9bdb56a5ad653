"""fal's webhooks: Ed25519 signatures (``shared/reference/fal.md`` §4), checked against the
provider section's ``webhook_public_keys`` or the JWKS at ``webhook_jwks_url`` (fal's own by
default), fetched with httpx and cached.

The signature (``X-Fal-Webhook-Signature``, hex) covers
``request_id + "\\n" + user_id + "\\n" + timestamp + "\\n" + hex(sha256(body))``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from genrouter.backends._webhooks import (
    error_text,
    json_object,
    lower_headers,
    required_headers,
    signed_timestamp,
)
from genrouter.backends.fal._settings import FalSettings
from genrouter.engine._webhook_hub import DEFAULT_TOLERANCE_S, WebhookEvent
from genrouter.errors import ConfigError, WebhookVerificationError
from genrouter.types import JobState

__all__ = [
    "FAL_JWKS_URL",
    "FalWebhooks",
    "JwksCache",
    "PublicKeys",
    "load_public_keys",
    "verify_fal_webhook",
]

FAL_JWKS_URL = "https://rest.fal.ai/.well-known/jwks.json"
"""fal's webhook public keys; ``providers.<fal>.webhook_jwks_url`` replaces it."""

JWKS_MAX_AGE_S = 24 * 3600.0
"""Longest fetched keys are used before they are fetched again."""

JWKS_REFRESH_AFTER_S = 300.0
"""Keys at least this old are fetched again once when a signature matches none of them."""

PublicKeys = Mapping[str, Any] | Sequence[Any] | bytes | str | Ed25519PublicKey
"""A JWKS mapping, one JWK, a list of JWKs or raw keys, or one raw key."""

_FAL_CANCELLED = frozenset({"client_cancelled"})


# -- fal (Ed25519) ---------------------------------------------------------------------------------


class _NoKeyMatched(WebhookVerificationError):
    """The signature is well formed but no public key verifies it (maybe keys rotated)."""


_FAL_HEADERS = (
    "x-fal-webhook-request-id",
    "x-fal-webhook-user-id",
    "x-fal-webhook-timestamp",
    "x-fal-webhook-signature",
)


@dataclass(frozen=True, slots=True)
class _FalSigned:
    request_id: str
    stamp: int
    signature: bytes
    message: bytes


def _fal_signed(headers: Mapping[str, str], body: bytes, tolerance_s: float, now: float | None) -> _FalSigned:
    """The checked headers and the signed message, before any key is looked at."""
    request_id, user_id, stamp_text, signature_hex = required_headers(lower_headers(headers), *_FAL_HEADERS)
    stamp = signed_timestamp(stamp_text, "x-fal-webhook-timestamp", tolerance_s, now)
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError as exc:
        raise WebhookVerificationError("x-fal-webhook-signature is not hex") from exc
    if len(signature) != 64:
        raise WebhookVerificationError(
            f"x-fal-webhook-signature has {len(signature)} bytes; an Ed25519 signature has 64"
        )
    message = "\n".join((request_id, user_id, stamp_text, hashlib.sha256(body).hexdigest())).encode()
    return _FalSigned(request_id, stamp, signature, message)


def _fal_check(signed: _FalSigned, keys: Sequence[Ed25519PublicKey]) -> None:
    for key in keys:
        try:
            key.verify(signed.signature, signed.message)
        except InvalidSignature:
            continue
        return
    raise _NoKeyMatched(
        f"x-fal-webhook-signature matches none of the {len(keys)} fal public key(s)"
        if keys
        else "no fal public keys to verify with"
    )


def _fal_event(signed: _FalSigned, body: bytes, provider: str) -> WebhookEvent:
    data = json_object(body, "expected a fal webhook payload")
    rid = data.get("request_id")
    ids = {rid, data.get("gateway_request_id")}
    if rid is not None and signed.request_id not in ids:
        raise WebhookVerificationError(
            "signature verified, but the body's request_id differs from x-fal-webhook-request-id"
        )
    status = data.get("status")
    error = error_text(data.get("error"))
    payload = data.get("payload")
    error_type = data.get("error_type")
    if error_type is None and isinstance(payload, dict):
        error_type = payload.get("error_type")
    if status == "OK":
        state = JobState.SUCCEEDED
        error = error_text(data.get("payload_error"))
    elif status == "ERROR":
        state = JobState.CANCELLED if error_type in _FAL_CANCELLED else JobState.FAILED
        error = error or error_text(data.get("payload_error")) or error_text(payload) or "failed"
    else:
        raise WebhookVerificationError(f"signature verified, but fal status {str(status)[:30]!r} is unknown")
    return WebhookEvent(
        provider=provider,
        provider_request_id=rid if isinstance(rid, str) and rid else signed.request_id,
        state=state,
        error=error,
        raw=data,
        timestamp=signed.stamp,
    )


def verify_fal_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    public_keys: PublicKeys,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
    provider: str = "fal",
) -> WebhookEvent:
    """Verify a fal delivery (Ed25519 over request id, user id, timestamp, sha256(body)).

    ``public_keys``: a JWKS mapping, a list of JWKs, or raw Ed25519 keys; every key
    is tried. ``now`` (Unix seconds, default the wall clock) and ``tolerance_s``
    bound the signed timestamp. Raises :class:`WebhookVerificationError`; key
    material that is not an Ed25519 public key raises :class:`ConfigError`.
    """
    signed = _fal_signed(headers, body, tolerance_s, now)
    _fal_check(signed, load_public_keys(public_keys))
    return _fal_event(signed, body, provider)


def load_public_keys(public_keys: PublicKeys) -> list[Ed25519PublicKey]:
    """Ed25519 public keys from a JWKS, JWKs, or raw keys (bytes, base64url or hex text).

    JWKs of other kinds (RSA, EC) are skipped; none left raises :class:`ConfigError`.
    """
    keys: list[Ed25519PublicKey] = []
    _collect(public_keys, keys)
    if not keys:
        raise ConfigError("no Ed25519 public keys found (expected JWKs with kty OKP and crv Ed25519)")
    return keys


def _collect(value: Any, keys: list[Ed25519PublicKey]) -> None:
    if isinstance(value, Ed25519PublicKey):
        keys.append(value)
    elif isinstance(value, bytes | bytearray):
        keys.append(_raw_key(bytes(value)))
    elif isinstance(value, str):
        keys.append(_raw_key(_decode_key_text(value)))
    elif isinstance(value, Mapping):
        if "keys" in value:
            _collect(value["keys"], keys)
        elif value.get("kty") == "OKP" and value.get("crv") == "Ed25519":
            x = value.get("x")
            if not isinstance(x, str):
                raise ConfigError("an Ed25519 JWK has no 'x' (the base64url public key)")
            keys.append(_raw_key(_decode_key_text(x)))
        elif "kty" not in value:
            raise ConfigError("expected a JWKS ({'keys': [...]}) or a JWK ({'kty': 'OKP', ...})")
    elif isinstance(value, Iterable):
        for item in value:
            _collect(item, keys)
    else:
        raise ConfigError(f"cannot read a public key from a {type(value).__name__}")


def _decode_key_text(text: str) -> bytes:
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("an Ed25519 public key is not base64url (or hex) text") from exc


def _raw_key(data: bytes) -> Ed25519PublicKey:
    if len(data) != 32:
        raise ConfigError(f"an Ed25519 public key has 32 bytes, not {len(data)}")
    return Ed25519PublicKey.from_public_bytes(data)


# -- fal's JWKS --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Fetched:
    keys: list[Ed25519PublicKey]
    at: float
    max_age_s: float


class JwksCache:
    """Fetched JWKS keys by URL, kept at most ``max_age_s`` (24 h; less if Cache-Control says so).

    ``refresh_after_s``: keys at least this old may be fetched again early when a
    signature matches none of them (key rotation). ``transport`` replaces the network
    (tests); ``clock`` returns monotonic seconds.
    """

    def __init__(
        self,
        *,
        max_age_s: float = JWKS_MAX_AGE_S,
        refresh_after_s: float = JWKS_REFRESH_AFTER_S,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.max_age_s = max_age_s
        self.refresh_after_s = refresh_after_s
        self.timeout_s = timeout_s
        self.transport = transport
        self.clock = clock
        self.fetches = 0
        self._cached: dict[str, _Fetched] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def keys(self, url: str) -> list[Ed25519PublicKey]:
        """The keys at ``url``: cached while fresh, else fetched."""
        cached = self._cached.get(url)
        if cached is not None and self.clock() - cached.at < cached.max_age_s:
            return cached.keys
        return await self._fetch(url, stale=cached)

    def can_refresh(self, url: str) -> bool:
        """Whether the keys for ``url`` are old enough to fetch again after a failed match."""
        cached = self._cached.get(url)
        return cached is None or self.clock() - cached.at >= self.refresh_after_s

    async def refresh(self, url: str) -> list[Ed25519PublicKey]:
        """Fetch the keys now (see :meth:`can_refresh`)."""
        return await self._fetch(url, stale=self._cached.get(url))

    async def _fetch(self, url: str, *, stale: _Fetched | None) -> list[Ed25519PublicKey]:
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            cached = self._cached.get(url)
            if cached is not None and cached is not stale:
                return cached.keys  # another delivery fetched while this one waited
            self.fetches += 1
            try:
                async with httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport) as client:
                    response = await client.get(url, headers={"Accept": "application/json"})
                response.raise_for_status()
                keys = load_public_keys(response.json())
            except (httpx.HTTPError, ValueError, ConfigError) as exc:
                raise WebhookVerificationError(
                    f"could not fetch webhook public keys from {url}: {type(exc).__name__}: {exc}",
                    retryable=True,
                ) from exc
            max_age = min(self.max_age_s, _cache_max_age(response.headers.get("cache-control")))
            self._cached[url] = _Fetched(keys, self.clock(), max_age)
            return keys


def _cache_max_age(header: str | None) -> float:
    match = re.search(r"max-age=(\d+)", header or "")
    return max(60.0, float(match.group(1))) if match else JWKS_MAX_AGE_S


class FalWebhooks:
    """Verifies deliveries for one ``type: fal`` provider with its configured keys.

    ``webhook_public_keys`` when set, else the JWKS at ``webhook_jwks_url`` (default
    :data:`FAL_JWKS_URL`). Parsed keys and the :class:`JwksCache` go in ``cache``, which
    lives as long as the router, so every fal provider of a router shares one fetch.
    """

    def __init__(self, *, name: str, settings: FalSettings, cache: MutableMapping[str, Any]) -> None:
        self.name = name
        self.settings = settings
        self.cache = cache

    def signs_webhook(self, headers: Mapping[str, str]) -> bool:
        """fal's deliveries carry ``x-fal-webhook-signature``."""
        return "x-fal-webhook-signature" in lower_headers(headers)

    async def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S
    ) -> WebhookEvent:
        """The delivery's event; ConfigError for configured keys that are not Ed25519 keys."""
        provider, section, hub_cache = self.name, self.settings, self.cache
        signed = _fal_signed(headers, body, tolerance_s, None)
        if section.webhook_public_keys is not None:
            slot = f"fal-keys:{provider}"
            keys = hub_cache.get(slot)
            if keys is None:
                try:
                    keys = hub_cache[slot] = load_public_keys(section.webhook_public_keys)
                except ConfigError as exc:
                    raise ConfigError(
                        f"providers.{provider}.webhook_public_keys: {exc}",
                        key_path=f"providers.{provider}.webhook_public_keys",
                    ) from exc
            _fal_check(signed, keys)
            return _fal_event(signed, body, provider)
        cache = hub_cache.get("jwks")
        if not isinstance(cache, JwksCache):
            cache = hub_cache["jwks"] = JwksCache()
        url = section.webhook_jwks_url or FAL_JWKS_URL
        try:
            _fal_check(signed, await cache.keys(url))
        except _NoKeyMatched:
            if not cache.can_refresh(url):
                raise
            _fal_check(signed, await cache.refresh(url))
        return _fal_event(signed, body, provider)
