"""HTTP plumbing shared by the hosted-API backends (fal, Replicate).

One ``httpx.AsyncClient`` per backend, and one place that turns transport failures
and HTTP statuses into genrouter errors. The rule that matters most: a request
that is **not idempotent** (a submit) and failed after it may have reached the
provider raises :class:`~genrouter.errors.SubmitOutcomeUnknownError`, which the
router never retries on that provider, so a job is never created twice by us.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import time
import weakref
from collections.abc import Awaitable, Mapping
from typing import Any

import httpx

from genrouter.engine._abandoned import ABANDONED_ANSWERS
from genrouter.errors import (
    AuthenticationError,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)
from genrouter.util._secrets import scrub

__all__ = [
    "MAX_ERROR_BODY",
    "error_for_status",
    "make_client",
    "parse_retry_after",
    "read_json",
    "send",
]

MAX_CONCURRENT_REQUESTS = 16
"""Requests one backend client sends at once; more wait their turn here, not inside httpcore.

httpcore scans its whole pool for every request it assigns, so its CPU cost per request
grows with the pool: 16 connections carried ~30 % more requests per CPU-second than 64
in the chaos benchmark (loopback, one core), at lower tail latency."""

URGENT_HEADROOM = 4
"""Connections beyond the limiter kept for urgent requests (cancels), which skip its queue."""

_LIMITERS: weakref.WeakKeyDictionary[httpx.AsyncClient, asyncio.Semaphore] = weakref.WeakKeyDictionary()

MAX_ERROR_BODY = 2_000
"""Characters of a provider's error body kept in an error message."""

_SECONDS_IN_TEXT = re.compile(r"(?:~|in\s+|after\s+)(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", re.I)


def make_client(
    *,
    base_url: str,
    timeout_s: float,
    headers: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = MAX_CONCURRENT_REQUESTS + URGENT_HEADROOM,
) -> httpx.AsyncClient:
    """The backend's one client: no redirects to other hosts, bounded pool, no retries."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers),
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        transport=transport,
        follow_redirects=False,
    )


async def _heard_if_abandoned(call: Awaitable[httpx.Response], provider: str) -> httpx.Response:
    listener = ABANDONED_ANSWERS.get()
    if listener is None:
        return await call
    answer = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(answer)
    except asyncio.CancelledError:
        listener.abandoned(provider, answer)
        raise


def parse_retry_after(headers: Mapping[str, str], text: str | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), else from the body text.

    Replicate's 429 body says "resets in ~30s"; fal sends no header. None when unknown.
    """
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            # Neither seconds nor an HTTP date (e.g. "abc"): treated as absent.
            try:
                parsed = email.utils.parsedate_to_datetime(value) if value else None
            except (TypeError, ValueError, OverflowError):
                parsed = None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
        else:
            if math.isfinite(seconds):
                return max(0.0, seconds)
    if text:
        match = _SECONDS_IN_TEXT.search(text)
        if match:
            return float(match.group(1))
    return None


def _body_text(response: httpx.Response) -> str:
    try:
        return response.text[:MAX_ERROR_BODY]
    except (UnicodeDecodeError, httpx.ResponseNotRead):
        return "<unreadable body>"


def error_for_status(
    response: httpx.Response,
    *,
    provider: str,
    message: str | None = None,
    provider_request_id: str | None = None,
    retryable: bool | None = None,
    fields: list[tuple[str, str]] | None = None,
) -> GenRouterError:
    """The genrouter error for an HTTP error status (the caller raises it).

    401/403/402 → AuthenticationError; 400/422 → InvalidRequestError; 404 →
    JobFailedError; 408/409/429 → RateLimitedError (429) or ProviderUnavailableError;
    5xx → ProviderUnavailableError. ``retryable`` overrides the default when the
    provider said (``X-Fal-Retryable``).
    """
    status = response.status_code
    text = message or _body_text(response)
    detail = scrub(f"HTTP {status} from {provider}: {text}")
    if status in (401, 402, 403):
        return AuthenticationError(
            detail, provider=provider, status_code=status, provider_request_id=provider_request_id
        )
    if status in (400, 422):
        return InvalidRequestError(
            detail,
            provider=provider,
            status_code=status,
            provider_request_id=provider_request_id,
            fields=fields or (),
            field=fields[0][0] if fields else None,
        )
    if status == 429:
        return RateLimitedError(
            detail,
            provider=provider,
            status_code=status,
            provider_request_id=provider_request_id,
            retry_after=parse_retry_after(response.headers, text),
        )
    if status == 404:
        return JobFailedError(
            detail, provider=provider, status_code=status, provider_request_id=provider_request_id
        )
    if status in (408, 409) or status >= 500:
        return ProviderUnavailableError(
            detail,
            provider=provider,
            status_code=status,
            provider_request_id=provider_request_id,
            retryable=retryable,
            retry_after=parse_retry_after(response.headers, None),
        )
    return ProviderError(
        detail,
        provider=provider,
        status_code=status,
        provider_request_id=provider_request_id,
        retryable=False,
    )


def request_slots(client: httpx.AsyncClient) -> asyncio.Semaphore:
    """The ``MAX_CONCURRENT_REQUESTS`` slots of ``client``.

    A caller that builds a large body may take a slot first and build it inside, then
    :func:`send` with ``slot_held=True``: ten thousand submits waiting for a slot then
    hold no bodies. It must make no other request through ``client`` while it holds one.
    """
    limiter = _LIMITERS.get(client)
    if limiter is None:
        limiter = _LIMITERS[client] = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
    return limiter


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    idempotent: bool,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    urgent: bool = False,
    slot_held: bool = False,
) -> httpx.Response:
    """Send one request (never retried here) and return the response, whatever its status.

    ``urgent`` requests (cancels: every moment a losing job runs may bill it) skip the
    queue of requests waiting for one of the client's ``MAX_CONCURRENT_REQUESTS`` slots;
    ``slot_held`` says the caller already holds one (:func:`request_slots`).

    Transport failures become genrouter errors: nothing sent (connect errors, pool
    timeouts) → retryable :class:`ProviderUnavailableError`; possibly received by the
    provider → retryable for idempotent requests, :class:`SubmitOutcomeUnknownError`
    for the rest.
    """
    kwargs: dict[str, Any] = {}
    if timeout_s is not None:
        kwargs["timeout"] = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
    try:
        # httpcore's pool scans every waiting request on each assignment; thousands of
        # jobs polling at once would make that quadratic and stall the event loop.
        if urgent:
            return await client.request(method, url, json=json_body, headers=headers, params=params, **kwargs)
        if slot_held:
            call = client.request(method, url, json=json_body, headers=headers, params=params, **kwargs)
            return await _heard_if_abandoned(call, provider)
        async with request_slots(client):
            call = client.request(method, url, json=json_body, headers=headers, params=params, **kwargs)
            return await _heard_if_abandoned(call, provider)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise ProviderUnavailableError(
            f"{provider}: could not connect ({type(exc).__name__}: {exc})", provider=provider
        ) from exc
    except httpx.TransportError as exc:
        if idempotent:
            raise ProviderUnavailableError(
                f"{provider}: {method} {_path(url)} failed ({type(exc).__name__}: {exc})", provider=provider
            ) from exc
        raise SubmitOutcomeUnknownError(
            f"{provider}: the submit may have reached the provider but its answer was lost "
            f"({type(exc).__name__}: {exc}); not resubmitted to this provider",
            provider=provider,
        ) from exc


def _path(url: str) -> str:
    return httpx.URL(url).path if "://" in url else url.split("?", 1)[0]


def read_json(response: httpx.Response, *, provider: str) -> Any:
    """The response's JSON body, or a ProviderUnavailableError naming what was wrong with it."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProviderUnavailableError(
            scrub(
                scrub(
                    f"{provider}: malformed JSON in HTTP {response.status_code} answer: "
                    f"{_body_text(response)[:200]!r}"
                ),
            ),
            provider=provider,
            status_code=response.status_code,
        ) from exc
