"""Media inputs as URLs a provider can read: passed through, inlined, or uploaded once.

Every backend that takes images owns one :class:`MediaResolver` (so one per provider
key per router). For each input (``image``, ``mask``, each of ``images``):

- an ``http(s)://`` or ``data:`` URL string passes through unchanged; any other
  string is refused, so a user-supplied string never makes genrouter read a file;
- bytes or a ``pathlib.Path`` over the provider's hard cap (``max_bytes``) raise
  :class:`InvalidRequestError` naming the field and the limit;
- up to ``inline_max_bytes`` they are sent inline as a ``data:`` URL (content type
  sniffed from the bytes, else guessed from the file name);
- larger ones are uploaded with the backend's ``upload`` function, keyed by the
  SHA-256 of the content: the first request uploads, every later one (retries, hedges,
  fallbacks back to this provider, batch items, concurrent requests) reuses the URL.
  A failed or cancelled upload is forgotten, so the next request tries again; an upload
  whose every waiter was cancelled (deadline, hedge won) is cancelled too.

Uploads run inside the submitting request: they are bounded by the time the router
says is left (:func:`genrouter.engine._deadline.remaining_s`) and cancelled with the request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import mimetypes
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from genrouter.engine._deadline import remaining_s
from genrouter.errors import InvalidRequestError, ProviderUnavailableError
from genrouter.types import MediaInput
from genrouter.util._media import sniff_content_type

__all__ = ["LocalMedia", "MediaResolver", "Upload", "data_url", "load_media"]

CACHE_ENTRIES = 1024
"""Uploaded URLs remembered per backend (least recently used forgotten first)."""


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """A local input's bytes, what they are, and their content hash."""

    data: bytes
    content_type: str
    file_name: str
    digest: str


Upload = Callable[[LocalMedia], Awaitable[str]]
"""A provider's upload: the media in, the URL the provider will read it from out."""


async def read_media(value: MediaInput, field: str, *, provider: str) -> str | tuple[bytes, str | None, str]:
    """A URL string as is (checked), or a local input's ``(bytes, type guessed from its name, name)``.

    http(s) and ``data:`` URLs pass through; any other string is refused, so a user-supplied
    string never makes genrouter read a local file. A ``pathlib.Path`` is read in a thread.
    """
    if isinstance(value, str):
        if urlsplit(value).scheme.lower() in ("http", "https", "data"):
            return value
        raise InvalidRequestError(
            f"{field}: {value[:80]!r} is not an http(s) or data: URL; pass bytes or a pathlib.Path "
            "for a local file",
            field=field,
            provider=provider,
        )
    if isinstance(value, Path):
        try:
            data = await asyncio.to_thread(value.read_bytes)
        except OSError as exc:
            raise InvalidRequestError(
                f"{field}: cannot read {str(value)!r} ({exc.strerror or exc}); "
                "pass a URL, bytes or a readable file",
                field=field,
                provider=provider,
            ) from exc
        return data, mimetypes.guess_type(value.name)[0], value.name or "upload"
    return value, None, "upload"


async def load_media(value: MediaInput, field: str, *, provider: str) -> str | LocalMedia:
    """A URL string as is (checked), or a local input's bytes (read in a thread)."""
    read = await read_media(value, field, provider=provider)
    if isinstance(read, str):
        return read
    data, guessed, name = read
    content_type = sniff_content_type(data) or guessed or "application/octet-stream"
    if "." not in name:
        extension = mimetypes.guess_extension(content_type) or ".bin"
        name = f"{name}{extension}"
    return LocalMedia(data, content_type, name, hashlib.sha256(data).hexdigest())


def data_url(media: LocalMedia) -> str:
    """``data:<type>;base64,...`` for ``media``."""
    return f"data:{media.content_type};base64,{base64.b64encode(media.data).decode('ascii')}"


@dataclass(slots=True)
class _Pending:
    task: asyncio.Task[str]
    waiters: int = 0


@dataclass(slots=True)
class MediaResolver:
    """Media inputs → URLs for one provider (see the module docstring).

    ``inline_max_bytes``: the largest input sent inline; ``max_bytes``: the largest
    accepted at all; ``upload``: the provider's upload (None: the provider has no
    storage, and inputs over ``inline_max_bytes`` are refused).
    """

    provider: str
    inline_max_bytes: int
    max_bytes: int
    upload: Upload | None
    uploads: int = 0
    """Uploads started (a test and benchmark figure)."""
    _done: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _pending: dict[str, _Pending] = field(default_factory=dict)

    async def url(self, value: MediaInput, field: str) -> str:
        """The URL the provider gets for the input ``value`` of request field ``field``."""
        loaded = await load_media(value, field, provider=self.provider)
        if isinstance(loaded, str):
            return loaded
        size = len(loaded.data)
        if size > self.max_bytes:
            raise InvalidRequestError(
                f"{field}: {size} bytes is over {self.provider}'s limit of {self.max_bytes} bytes "
                "for an input file; pass a smaller file or an https URL",
                field=field,
                provider=self.provider,
            )
        if size <= self.inline_max_bytes or self.upload is None:
            if size > self.inline_max_bytes:
                raise InvalidRequestError(
                    f"{field}: {size} bytes is over {self.provider}'s inline limit of "
                    f"{self.inline_max_bytes} bytes; pass an https URL",
                    field=field,
                    provider=self.provider,
                )
            return data_url(loaded)
        return await self._uploaded(loaded, field)

    async def _uploaded(self, media: LocalMedia, field: str) -> str:
        key = media.digest
        done = self._done.get(key)
        if done is not None:
            self._done.move_to_end(key)
            return done
        pending = self._pending.get(key)
        if pending is None:
            assert self.upload is not None
            self.uploads += 1
            task = asyncio.ensure_future(self.upload(media))
            pending = self._pending[key] = _Pending(task)
            task.add_done_callback(lambda t: self._settle(key, t))
        pending.waiters += 1
        try:
            return await self._wait(pending.task, field)
        except BaseException:  # cancelled, or out of time
            if pending.waiters == 1 and not pending.task.done():
                pending.task.cancel()  # nobody else wants it
            raise
        finally:
            pending.waiters -= 1

    async def _wait(self, task: asyncio.Task[str], field: str) -> str:
        left = remaining_s()
        if left is None:
            return await asyncio.shield(task)
        try:
            async with asyncio.timeout(max(left, 0.0)):
                return await asyncio.shield(task)
        except TimeoutError:
            raise ProviderUnavailableError(
                f"{self.provider}: uploading {field} did not finish before the request's deadline",
                provider=self.provider,
                retryable=False,
            ) from None

    def _settle(self, key: str, task: asyncio.Task[str]) -> None:
        self._pending.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        self._done[key] = task.result()
        while len(self._done) > CACHE_ENTRIES:
            self._done.popitem(last=False)
