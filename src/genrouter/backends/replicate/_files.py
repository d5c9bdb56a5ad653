"""Replicate's files API: ``POST /v1/files`` for inputs too large to send inline.

The request is ``multipart/form-data`` with the file in the part named ``content``
(as the ``replicate`` client sends it); Replicate answers 201 with the file object, and
a prediction's input refers to it by its ``urls.get``. Sent with the backend's own
client, so the token goes only to the configured API host. Not retried: a failed upload
fails the submit (retryable), and the next attempt uploads again.
"""

from __future__ import annotations

import httpx

from genrouter.backends._http import error_for_status
from genrouter.backends._uploads import LocalMedia
from genrouter.errors import InvalidRequestError, ProviderUnavailableError
from genrouter.util._secrets import scrub

__all__ = ["MAX_UPLOAD_BYTES", "upload_file"]

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
"""Default largest input uploaded to Replicate (100 MiB, Replicate's file size limit [DOC])."""


async def upload_file(client: httpx.AsyncClient, media: LocalMedia, *, provider: str) -> str:
    """Upload ``media`` with ``POST /v1/files``; return its ``urls.get``."""
    try:
        response = await client.post(
            "/v1/files",
            files={"content": (media.file_name, media.data, media.content_type)},
        )
    except httpx.TransportError as exc:
        raise ProviderUnavailableError(
            f"{provider}: uploading an input with POST /v1/files failed ({type(exc).__name__})",
            provider=provider,
        ) from exc
    if response.status_code == 413:
        raise InvalidRequestError(
            f"{provider}: Replicate refused the input file as too large (HTTP 413)",
            provider=provider,
            status_code=413,
        )
    if response.is_error:
        raise error_for_status(response, provider=provider, message=f"POST /v1/files: {response.text[:300]}")
    try:
        url = response.json()["urls"]["get"]
    except (ValueError, KeyError, TypeError):
        url = None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ProviderUnavailableError(
            scrub(f"{provider}: POST /v1/files answered without urls.get: {response.text[:200]}"),
            provider=provider,
        )
    return url
