"""Webhook signature verification (Replicate, fal, the self-hosted Modal class) and an ASGI receiver.

Both verifiers take the raw request body (never re-serialised JSON) and the
headers (any mapping; names are case-insensitive), and return a normalised
:class:`WebhookEvent`. Anything wrong raises :class:`WebhookVerificationError`,
whose message names the problem and never the secret.

**Replicate** signs with `Standard Webhooks <https://www.standardwebhooks.com>`_
(``shared/reference/replicate.md`` §4): ``webhook-signature`` holds space-separated
``v1,<base64>`` entries, each an HMAC-SHA256 of ``"{webhook-id}.{webhook-timestamp}.{body}"``
keyed with the base64-decoded part of the ``whsec_`` secret. The MAC is computed by
the ``standardwebhooks`` package and compared in constant time against every ``v1``
entry (so a rotated secret's signatures verify); other versions are ignored.

**fal** signs with Ed25519 (``shared/reference/fal.md`` §4): the signature
(``X-Fal-Webhook-Signature``, hex) covers
``request_id + "\\n" + user_id + "\\n" + timestamp + "\\n" + hex(sha256(body))`` taken from
``X-Fal-Webhook-Request-Id``, ``X-Fal-Webhook-User-Id`` and ``X-Fal-Webhook-Timestamp``.
Every public key given is tried (fal rotates them); ``cryptography`` does the
Ed25519 check. Keys come as a JWKS mapping, a list of JWKs, or raw keys (32 bytes,
or base64url/hex text). :class:`JwksCache` fetches fal's JWKS
(:data:`FAL_JWKS_URL`) with httpx and keeps it at most 24 h; when no key matches and
the keys are older than five minutes it fetches once more, so a new key is picked
up without letting forged deliveries trigger a fetch each.

**Modal** (genrouter's own ``deploy/modal`` class) signs with Standard Webhooks too, keyed
with the Modal section's ``webhook_secret``; its body is ``{"type", "timestamp", "data": {"id",
"status", "error", "result"}}`` (``deploy/modal/_webhooks.py``), ``id`` being the call id.

All reject a signed timestamp more than ``tolerance_s`` (default 300 s) before or
after now: a captured delivery cannot be replayed later.

:meth:`AsyncRouter.handle_webhook` verifies with the provider's configured secret
or keys and records the event; :func:`asgi_app` serves ``POST /webhooks/{provider}``
(needs ``starlette``: ``pip install 'genrouter[server]'``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import SecretStr

from genrouter.backends.settings import FalSettings, ModalSettings, ReplicateSettings
from genrouter.engine._webhook_hub import WebhookEvent, WebhookHub, WebhookVerificationError
from genrouter.errors import ConfigError, GenRouterError
from genrouter.types import JobState
from genrouter.webhooks._standard import (
    DEFAULT_TOLERANCE_S,
    _json_object,
    _lower,
    _required,
    _text,
    _timestamp,
    verify_modal_webhook,
    verify_replicate_webhook,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from genrouter.router import AsyncRouter

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "FAL_JWKS_URL",
    "JwksCache",
    "PublicKeys",
    "WebhookEvent",
    "WebhookHub",
    "WebhookVerificationError",
    "asgi_app",
    "load_public_keys",
    "providers_for",
    "respond_to_webhook",
    "verify_fal_webhook",
    "verify_modal_webhook",
    "verify_provider_webhook",
    "verify_replicate_webhook",
]

FAL_JWKS_URL = "https://rest.fal.ai/.well-known/jwks.json"
"""fal's webhook public keys; ``providers.<fal>.webhook_jwks_url`` replaces it."""

JWKS_MAX_AGE_S = 24 * 3600.0
"""Longest fetched keys are used before they are fetched again."""

JWKS_REFRESH_AFTER_S = 300.0
"""Keys at least this old are fetched again once when a signature matches none of them."""

MAX_BODY_BYTES = 10 * 1024 * 1024
"""Largest webhook body :func:`asgi_app` reads (10 MiB)."""

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
    request_id, user_id, stamp_text, signature_hex = _required(_lower(headers), *_FAL_HEADERS)
    stamp = _timestamp(stamp_text, "x-fal-webhook-timestamp", tolerance_s, now)
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
    data = _json_object(body, "expected a fal webhook payload")
    rid = data.get("request_id")
    ids = {rid, data.get("gateway_request_id")}
    if rid is not None and signed.request_id not in ids:
        raise WebhookVerificationError(
            "signature verified, but the body's request_id differs from x-fal-webhook-request-id"
        )
    status = data.get("status")
    error = _text(data.get("error"))
    payload = data.get("payload")
    error_type = data.get("error_type")
    if error_type is None and isinstance(payload, dict):
        error_type = payload.get("error_type")
    if status == "OK":
        state = JobState.SUCCEEDED
        error = _text(data.get("payload_error"))
    elif status == "ERROR":
        state = JobState.CANCELLED if error_type in _FAL_CANCELLED else JobState.FAILED
        error = error or _text(data.get("payload_error")) or _text(payload) or "failed"
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


# -- the router's verifier ------------------------------------------------------------------------


async def verify_provider_webhook(
    router: AsyncRouter,
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> WebhookEvent:
    """Verify a delivery for the provider configured as ``provider`` (its type picks the scheme).

    Raises :class:`ConfigError` for an unknown provider, one whose type sends no
    verifiable webhooks, or a missing secret; :class:`WebhookVerificationError` for a
    delivery that fails verification.
    """
    section = router.config.providers.get(provider)
    if section is None:
        raise ConfigError(
            f"webhook for unknown provider {provider!r}; configured: {', '.join(router.config.providers)}",
            key_path="providers",
        )
    if isinstance(section, ReplicateSettings):
        secret = _webhook_secret(
            section.webhook_secret,
            provider,
            "copy it from Replicate's GET /v1/webhooks/default/secret (whsec_...)",
        )
        return verify_replicate_webhook(
            headers, body, secret=secret, tolerance_s=tolerance_s, provider=provider
        )
    if isinstance(section, ModalSettings):
        secret = _webhook_secret(
            section.webhook_secret,
            provider,
            "use the whsec_... value the deployment signs with (GENROUTER_WEBHOOK_SECRET in its "
            "Modal secret; see deploy/modal/README.md)",
        )
        return verify_modal_webhook(headers, body, secret=secret, tolerance_s=tolerance_s, provider=provider)
    if isinstance(section, FalSettings):
        return await _verify_fal_configured(router.webhooks, provider, section, headers, body, tolerance_s)
    raise ConfigError(
        f"provider {provider!r} (type {section.type}) sends no signed webhooks genrouter can verify",
        key_path=f"providers.{provider}.type",
    )


def _webhook_secret(secret: SecretStr | None, provider: str, fix: str) -> SecretStr:
    """A section's Standard Webhooks secret; ConfigError saying how to get one when it is unset."""
    if secret is None or not secret.get_secret_value():
        raise ConfigError(
            f"providers.{provider}.webhook_secret is not set; {fix}",
            key_path=f"providers.{provider}.webhook_secret",
        )
    return secret


async def _verify_fal_configured(
    hub: WebhookHub,
    provider: str,
    section: FalSettings,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float,
) -> WebhookEvent:
    signed = _fal_signed(headers, body, tolerance_s, None)
    if section.webhook_public_keys is not None:
        slot = f"fal-keys:{provider}"
        keys = hub.key_cache.get(slot)
        if keys is None:
            try:
                keys = hub.key_cache[slot] = load_public_keys(section.webhook_public_keys)
            except ConfigError as exc:
                raise ConfigError(
                    f"providers.{provider}.webhook_public_keys: {exc}",
                    key_path=f"providers.{provider}.webhook_public_keys",
                ) from exc
        _fal_check(signed, keys)
        return _fal_event(signed, body, provider)
    cache = hub.key_cache.get("jwks")
    if not isinstance(cache, JwksCache):
        cache = hub.key_cache["jwks"] = JwksCache()
    url = section.webhook_jwks_url or FAL_JWKS_URL
    try:
        _fal_check(signed, await cache.keys(url))
    except _NoKeyMatched:
        if not cache.can_refresh(url):
            raise
        _fal_check(signed, await cache.refresh(url))
    return _fal_event(signed, body, provider)


# -- ASGI receiver ------------------------------------------------------------------------------------


def providers_for(router: AsyncRouter, headers: Mapping[str, str]) -> list[str]:
    """The configured providers whose signature scheme ``headers`` carry, in config order.

    A webhook URL is chosen before routing picks a provider, so a receiver without
    the provider in its path tries each of these (see :func:`asgi_app`).
    """
    lowered = _lower(headers)
    kind: type[FalSettings] | tuple[type[ReplicateSettings], type[ModalSettings]] | None = None
    if "x-fal-webhook-signature" in lowered:
        kind = FalSettings
    elif "webhook-signature" in lowered:  # Standard Webhooks: Replicate and the Modal class
        kind = (ReplicateSettings, ModalSettings)
    if kind is None:
        return []
    return [key for key, section in router.config.providers.items() if isinstance(section, kind)]


async def respond_to_webhook(
    router: AsyncRouter, provider: str | None, headers: Mapping[str, str], body: bytes
) -> tuple[int, dict[str, Any]]:
    """Verify and record one delivery; the HTTP status and JSON body to answer with.

    For receivers in any framework (:func:`asgi_app` uses it). ``provider`` None means
    "find it from the signature headers" (:func:`providers_for`); the delivery is then
    recorded for every provider it verifies with. Answers: 200
    ``{"ok": true, "provider_request_id", "state", "duplicate"}`` for a verified
    delivery (duplicates too, so the provider stops retrying); 401 when verification
    fails; 404 for an unknown provider; 503 when keys could not be fetched or the
    provider's webhook settings are missing (the provider delivers again later).
    """
    if provider is None:
        providers = providers_for(router, headers)
        if not providers:
            return 404, {"ok": False, "error": "no configured provider signs webhooks like this"}
    elif provider in router.config.providers:
        providers = [provider]
    else:
        return 404, {"ok": False, "error": f"unknown provider {provider!r}"}
    events: list[WebhookEvent] = []
    failure: GenRouterError | None = None
    for key in providers:
        try:
            events.append(await router.handle_webhook(key, headers, body))
        except (WebhookVerificationError, ConfigError) as exc:
            failure = failure if isinstance(failure, WebhookVerificationError) else exc
    if not events:
        retry_later = isinstance(failure, ConfigError) or (failure is not None and failure.retryable)
        return (503 if retry_later else 401), {"ok": False, "error": str(failure)}
    event = events[0]
    return 200, {
        "ok": True,
        "provider_request_id": event.provider_request_id,
        "state": event.state.value,
        "duplicate": event.duplicate,
    }


def asgi_app(
    router: AsyncRouter, *, path: str = "/webhooks", max_body_bytes: int = MAX_BODY_BYTES
) -> Starlette:
    """A Starlette app that receives webhooks: ``POST {path}/{provider}`` and ``POST {path}``.

    Without a provider in the path, the headers say which scheme signed the delivery
    and it is verified against each provider of that type (:func:`providers_for`).
    Answers as :func:`respond_to_webhook` says, and 413 for a body over
    ``max_body_bytes`` (not read further). Run it on the router's event loop (mount
    it in the app that owns the router). Needs ``starlette``.
    """
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"genrouter.webhooks.asgi_app needs the {exc.name!r} package: pip install 'genrouter[server]'"
        ) from exc

    too_large = {"ok": False, "error": f"body over {max_body_bytes} bytes"}

    async def receive(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return JSONResponse(too_large, status_code=413)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return JSONResponse(too_large, status_code=413)
            chunks.append(chunk)
        provider = request.path_params.get("provider")
        status, payload = await respond_to_webhook(router, provider, request.headers, b"".join(chunks))
        return JSONResponse(payload, status_code=status)

    base = path.rstrip("/")
    return Starlette(
        routes=[
            Route(base + "/{provider}", receive, methods=["POST"]),
            Route(base or "/", receive, methods=["POST"]),
        ]
    )
