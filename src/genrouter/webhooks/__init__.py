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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from genrouter.backends.fal._webhooks import (
    FAL_JWKS_URL,
    JwksCache,
    PublicKeys,
    load_public_keys,
    verify_fal_webhook,
)
from genrouter.backends.modal._webhooks import verify_modal_webhook
from genrouter.backends.replicate._webhooks import verify_replicate_webhook
from genrouter.engine._webhook_hub import DEFAULT_TOLERANCE_S, WebhookEvent, WebhookHub
from genrouter.errors import ConfigError, GenRouterError, WebhookVerificationError

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

MAX_BODY_BYTES = 10 * 1024 * 1024
"""Largest webhook body :func:`asgi_app` reads (10 MiB)."""


async def verify_provider_webhook(
    router: AsyncRouter,
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> WebhookEvent:
    """Verify a delivery for the provider configured as ``provider``, recording nothing.

    The provider's verifier checks it (:meth:`WebhookHub.verify`): its backend's own, or
    its type's (``backends/<type>/_webhooks.py``). Raises :class:`ConfigError` for an
    unknown provider, one whose type sends no verifiable webhooks, or a missing secret;
    :class:`WebhookVerificationError` for a delivery that fails verification.
    """
    return await router.webhooks.verify(provider, headers, body, tolerance_s=tolerance_s)


def providers_for(router: AsyncRouter, headers: Mapping[str, str]) -> list[str]:
    """The configured providers whose signature scheme ``headers`` carry, in config order.

    A webhook URL is chosen before routing picks a provider, so a receiver without
    the provider in its path tries each of these (see :func:`asgi_app`).
    """
    return router.webhooks.providers_signing(headers)


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
    elif provider in router.backends:
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
