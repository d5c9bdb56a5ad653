"""fal's storage API: uploading an input file to fal's CDN for a URL to pass as an input.

The protocol is the one fal_client 1.0.3 speaks (``fal_client/client.py``:
``AsyncCDNTokenManager``, ``_async_upload_v3``, ``AsyncMultipartUpload``):

1. ``POST {rest_url}/storage/auth/token?storage_type=fal-cdn-v3`` with the API key
   (``Authorization: Key ...``) and body ``{}`` → ``{token, token_type, base_url,
   expires_at}``. The token is reused until a minute before ``expires_at``.
2. Up to :data:`MULTIPART_THRESHOLD` (100 MiB): ``POST {base_url}/files/upload`` with
   ``Authorization: <token_type> <token>``, the file's ``Content-Type`` and
   ``X-Fal-File-Name``, the bytes as the body → ``{access_url}``.
3. Above it, multipart in :data:`MULTIPART_CHUNK_BYTES` (10 MiB) parts:
   ``POST {base_url}/files/upload/multipart`` (same headers, no body) →
   ``{access_url, uploadId}``; ``PUT {access_url}/multipart/{uploadId}/{n}`` for parts
   1..N → an ``ETag`` header each; ``POST {access_url}/multipart/{uploadId}/complete``
   with ``{"parts": [{"partNumber": n, "etag": ...}]}``. The file is at ``access_url``.

The API key goes only to ``rest_url`` (with the backend's own client); the upload host
gets the short-lived token, through a client that holds no credentials. Nothing here is
retried: a failed upload fails the submit (retryable), and the next attempt uploads
again.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from genrouter.backends._http import error_for_status, read_json, send
from genrouter.backends._uploads import LocalMedia
from genrouter.errors import InvalidRequestError, ProviderUnavailableError
from genrouter.util._secrets import register_secret, scrub

__all__ = [
    "DEFAULT_REST_URL",
    "MAX_UPLOAD_BYTES",
    "MULTIPART_CHUNK_BYTES",
    "MULTIPART_THRESHOLD",
    "FalStorage",
]

DEFAULT_REST_URL = "https://rest.fal.ai"
"""fal's REST host, which issues storage tokens; ``providers.<fal>.rest_url`` replaces it."""

MULTIPART_THRESHOLD = 100 * 1024 * 1024
"""Files larger than this go up in parts (fal_client's threshold)."""

MULTIPART_CHUNK_BYTES = 10 * 1024 * 1024
"""Size of each part of a multipart upload (fal_client's)."""

MULTIPART_CONCURRENCY = 4
"""Parts of one file sent at once."""

MAX_UPLOAD_BYTES = 1024 * 1024 * 1024
"""Default largest input genrouter uploads to fal (1 GiB; fal documents no limit)."""

_TOKEN_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class _Token:
    header: str
    base_url: str
    expires_at: datetime


class FalStorage:
    """Uploads to fal's CDN for one fal backend (see the module docstring).

    ``api``: the backend's client (it carries the API key); ``cdn``: a client without
    credentials for the upload host.
    """

    def __init__(
        self, *, provider: str, api: httpx.AsyncClient, cdn: httpx.AsyncClient, rest_url: str
    ) -> None:
        self.provider = provider
        self._api = api
        self._cdn = cdn
        self._token_url = f"{rest_url.rstrip('/')}/storage/auth/token"
        self._token: _Token | None = None
        self._lock = asyncio.Lock()

    async def upload(self, media: LocalMedia) -> str:
        """Upload ``media`` and return its ``access_url``."""
        token = await self._current_token()
        try:
            if len(media.data) > MULTIPART_THRESHOLD:
                return await self._multipart(media, token)
            response = await self._cdn.post(
                f"{token.base_url}/files/upload", content=media.data, headers=self._headers(token, media)
            )
            return self._access_url(self._checked(response, "upload"))
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"{self.provider}: uploading an input to fal storage failed ({type(exc).__name__})",
                provider=self.provider,
            ) from exc

    async def aclose(self) -> None:
        """Close the upload client."""
        await self._cdn.aclose()

    # -- token -------------------------------------------------------------------------

    async def _current_token(self) -> _Token:
        async with self._lock:
            token = self._token
            if token is None or datetime.now(UTC) >= token.expires_at - _TOKEN_MARGIN:
                token = self._token = await self._new_token()
            return token

    async def _new_token(self) -> _Token:
        response = await send(
            self._api,
            "POST",
            self._token_url,
            provider=self.provider,
            idempotent=True,
            json_body={},
            params={"storage_type": "fal-cdn-v3"},
        )
        if response.is_error:
            raise error_for_status(
                response, provider=self.provider, message=f"storage token: {response.text[:300]}"
            )
        body = read_json(response, provider=self.provider)
        try:
            token, kind, base = (str(body[k]) for k in ("token", "token_type", "base_url"))
            expires = datetime.fromisoformat(str(body["expires_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderUnavailableError(
                f"{self.provider}: fal's storage token answer is malformed ({type(exc).__name__})",
                provider=self.provider,
            ) from exc
        register_secret(token)
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return _Token(header=f"{kind} {token}", base_url=base.rstrip("/"), expires_at=expires)

    # -- upload ------------------------------------------------------------------------

    @staticmethod
    def _headers(token: _Token, media: LocalMedia) -> dict[str, str]:
        return {
            "Authorization": token.header,
            "Content-Type": media.content_type,
            "X-Fal-File-Name": media.file_name,
            "Accept": "application/json",
        }

    async def _multipart(self, media: LocalMedia, token: _Token) -> str:
        created = self._checked(
            await self._cdn.post(
                f"{token.base_url}/files/upload/multipart", headers=self._headers(token, media)
            ),
            "multipart upload",
        )
        access_url = self._access_url(created)
        upload_id = created.get("uploadId")
        if not isinstance(upload_id, str) or not upload_id:
            raise ProviderUnavailableError(
                f"{self.provider}: fal storage started a multipart upload without an uploadId",
                provider=self.provider,
            )
        base = f"{access_url}/multipart/{upload_id}"
        data = media.data
        count = math.ceil(len(data) / MULTIPART_CHUNK_BYTES)
        slots = asyncio.Semaphore(MULTIPART_CONCURRENCY)
        auth = {"Authorization": token.header}

        async def part(number: int) -> dict[str, Any]:
            chunk = data[(number - 1) * MULTIPART_CHUNK_BYTES : number * MULTIPART_CHUNK_BYTES]
            async with slots:
                response = await self._cdn.put(
                    f"{base}/{number}",
                    content=chunk,
                    headers={**auth, "Content-Type": media.content_type, "Accept-Encoding": "identity"},
                )
            if response.is_error or not response.headers.get("etag"):
                self._checked(response, f"part {number}")
                raise ProviderUnavailableError(
                    f"{self.provider}: fal storage answered part {number} without an ETag",
                    provider=self.provider,
                )
            return {"partNumber": number, "etag": response.headers["etag"]}

        parts = await asyncio.gather(*(part(n) for n in range(1, count + 1)))
        self._checked(
            await self._cdn.post(f"{base}/complete", json={"parts": parts}, headers=auth),
            "multipart complete",
        )
        return access_url

    def _checked(self, response: httpx.Response, what: str) -> dict[str, Any]:
        status = response.status_code
        if status == 413:
            raise InvalidRequestError(
                f"{self.provider}: fal storage refused the input as too large (HTTP 413)",
                provider=self.provider,
                status_code=status,
            )
        if response.is_error:
            if status in (401, 403):
                self._token = None  # expired or revoked: the next upload asks for a new one
            raise ProviderUnavailableError(
                scrub(f"{self.provider}: fal storage {what} answered HTTP {status}: {response.text[:200]}"),
                provider=self.provider,
                status_code=status,
                retryable=status >= 500 or status in (401, 403, 408, 429),
            )
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderUnavailableError(
                f"{self.provider}: fal storage {what} answered something that is not a JSON object",
                provider=self.provider,
            )
        return body

    def _access_url(self, body: dict[str, Any]) -> str:
        url = body.get("access_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ProviderUnavailableError(
                f"{self.provider}: fal storage answered without an access_url", provider=self.provider
            )
        return url
