"""Standard Webhooks deliveries from a Modal deployment: sign, build the body, POST with retries.

Standard library only (no ``modal``, no ``standardwebhooks``), so any class in this folder
(the diffusion class, the ComfyUI class) can import it inside its container.

A delivery is an HTTP ``POST`` of a JSON body with three headers
(https://www.standardwebhooks.com):

- ``webhook-id``: ``msg_<call id>``, the same on every retry of one job's delivery, so a
  receiver that already recorded it ignores the repeat;
- ``webhook-timestamp``: Unix seconds when the attempt was signed;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the
  base64-decoded part of the ``whsec_...`` secret (``GENROUTER_WEBHOOK_SECRET`` in the container;
  genrouter verifies with the Modal section's ``webhook_secret``).

The body (:func:`job_body`)::

    {"type": "job.succeeded" | "job.failed",
     "timestamp": "2026-12-07T23:50:00Z",
     "data": {"id": "<call id>", "status": "succeeded" | "failed", "error": null | "...",
              "result": {...the result dict; outputs as base64 strings...}}}

Outputs larger than ``max_inline_bytes`` in total are left out of the body
(``outputs_omitted``: how many); the receiver then fetches the result from Modal by call id,
as genrouter does, or uses ``output_paths``/``output_urls`` when the deployment writes outputs
to a Volume.

:class:`WebhookSender` posts in its own threads (the GPU never waits on a receiver), retrying
connection errors, 429 and 5xx answers after 1 s, 5 s and 30 s (four attempts in all), each
attempt signed afresh so a receiver's timestamp tolerance is met.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures as cf
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "DEFAULT_MAX_INLINE_BYTES",
    "RETRY_DELAYS_S",
    "SECRET_ENV",
    "WebhookSender",
    "check_url",
    "job_body",
    "message_id",
    "sign",
    "signed_headers",
    "signing_key",
]

log = logging.getLogger("genrouter.webhooks")

SECRET_ENV = "GENROUTER_WEBHOOK_SECRET"
"""The container's environment variable holding the ``whsec_...`` signing secret (a Modal Secret)."""

DEFAULT_MAX_INLINE_BYTES = 6 * 1024 * 1024
"""Largest total of output bytes carried in a delivery body (before base64: 8 MiB after, under
the 10 MiB body limit of genrouter's receiver, ``genrouter.webhooks.MAX_BODY_BYTES``)."""

RETRY_DELAYS_S = (1.0, 5.0, 30.0)
"""Waits before the second, third and fourth attempt."""


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64); ``ValueError`` if malformed."""
    text = secret.strip()
    text = text.removeprefix("whsec_")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{SECRET_ENV} is not a Standard Webhooks secret ('whsec_' + base64)") from None
    if len(key) < 16:
        raise ValueError(f"{SECRET_ENV} decodes to {len(key)} bytes; use at least 16 (24 to 64 is usual)")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``"{msg_id}.{timestamp}.{body}"``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signed_headers(secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers (plus ``content-type``) for one attempt."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, msg_id, stamp, body),
    }


def message_id(call_id: str) -> str:
    """The delivery id of a job's webhook: the same for every attempt and retry."""
    return f"msg_{call_id}"


def check_url(url: Any) -> str:
    """``url`` if it is an absolute http(s) URL with a host; else ``ValueError`` naming it."""
    if not isinstance(url, str):
        raise ValueError(f"webhook_url must be a string, not {type(url).__name__}")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"webhook_url {url[:200]!r} is not an http(s) URL with a host")
    return url


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def job_body(
    call_id: str,
    result: Mapping[str, Any] | None = None,
    *,
    error: str | None = None,
    max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES,
    now: float | None = None,
) -> bytes:
    """The JSON body announcing that job ``call_id`` ended: with ``result``, or failed with ``error``.

    A result dict with an ``{"error": {"type", "message"}}`` entry (what the class returns for
    a failed request) is a failure too. Outputs (bytes) become base64 strings, unless together
    they exceed ``max_inline_bytes``: then they are left out and ``outputs_omitted`` says how many.
    """
    data: dict[str, Any] = {"id": call_id}
    if result is not None and isinstance(result.get("error"), Mapping):
        item = result["error"]
        error = f"{item.get('type', 'RuntimeError')}: {item.get('message', '')}"
        result = None
    if result is None:
        data.update(status="failed", error=error or "failed", result=None)
    else:
        shown = dict(result)
        outputs: Sequence[Any] = shown.get("outputs") or []
        size = sum(len(o) for o in outputs if isinstance(o, bytes | bytearray))
        if size > max_inline_bytes:
            shown["outputs"] = []
            shown["outputs_omitted"] = len(outputs)
        data.update(status="succeeded", error=None, result=_jsonable(shown))
    stamp = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    envelope = {
        "type": f"job.{data['status']}",
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": data,
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def _sleep(seconds: float) -> None:
    """Wait in this (delivery) thread; never on an event loop."""
    threading.Event().wait(seconds)


Opener = Callable[[urllib.request.Request, float], int]
"""Sends one request and returns the HTTP status (raising ``OSError`` on a connection failure)."""


def _urlopen(request: urllib.request.Request, timeout_s: float) -> int:
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


class WebhookSender:
    """Posts signed deliveries in background threads, retrying transient failures.

    ``secret`` is the ``whsec_...`` signing secret (checked here: a malformed one raises
    ``ValueError`` at construction). ``delays_s`` are the waits between attempts;
    ``timeout_s`` bounds each attempt; ``sleep`` and ``opener`` replace ``time.sleep`` and
    urllib (tests). Retries wait in the sender's own threads, never on an event loop.
    """

    def __init__(
        self,
        secret: str,
        *,
        delays_s: Sequence[float] = RETRY_DELAYS_S,
        timeout_s: float = 10.0,
        threads: int = 2,
        sleep: Callable[[float], None] = _sleep,
        opener: Opener = _urlopen,
    ) -> None:
        signing_key(secret)
        self._secret = secret
        self.delays_s = tuple(delays_s)
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._opener = opener
        self._pool = cf.ThreadPoolExecutor(max(1, threads), thread_name_prefix="genrouter-webhook")

    def __repr__(self) -> str:
        return f"WebhookSender(delays_s={self.delays_s!r}, timeout_s={self.timeout_s!r})"

    def deliver(self, url: str, body: bytes, msg_id: str) -> int:
        """POST ``body`` to ``url`` until it is accepted (2xx), refused (other 4xx) or attempts run out.

        Returns the last HTTP status, or 0 when the receiver could not be reached at all.
        """
        check_url(url)
        status = 0
        for attempt in range(len(self.delays_s) + 1):
            if attempt:
                self._sleep(self.delays_s[attempt - 1])
            headers = signed_headers(self._secret, msg_id, body)
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                status = self._opener(request, self.timeout_s)
            except OSError as exc:
                log.warning("webhook %s: attempt %d failed: %s", msg_id, attempt + 1, exc)
                status = 0
                continue
            if 200 <= status < 300:
                return status
            if status != 429 and 400 <= status < 500:
                log.warning("webhook %s: the receiver refused it (%d); not retried", msg_id, status)
                return status
            log.warning("webhook %s: attempt %d answered %d", msg_id, attempt + 1, status)
        return status

    def send(self, url: str, body: bytes, msg_id: str) -> cf.Future[int]:
        """:meth:`deliver` in a background thread; the future gives the last status."""
        return self._pool.submit(self.deliver, url, body, msg_id)

    def close(self, wait: bool = True) -> None:
        """Stop the threads (after the deliveries in progress, with ``wait``)."""
        self._pool.shutdown(wait=wait)
