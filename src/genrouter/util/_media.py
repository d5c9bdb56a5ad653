"""Reading and saving output media safely.

Downloads stream with a size cap and check the content type; ``data:`` URLs are
decoded in memory; ``sim:`` URLs render the simulated provider's placeholder.
Only ``https``, ``http``, ``data`` and ``sim`` URLs are read. Saved file names are
sanitised so a provider-controlled name can never escape the target directory.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes, urlsplit

from genrouter.errors import MediaError

if TYPE_CHECKING:
    from genrouter.types import Artifact

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MediaError",
    "extension_for",
    "read_artifact_bytes",
    "read_artifact_bytes_async",
    "safe_filename",
    "save_artifact",
]

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
"""Largest artifact genrouter downloads unless told otherwise (512 MiB)."""

_ALLOWED_MEDIA_PREFIXES = ("image/", "video/", "audio/", "application/octet-stream")
_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/svg+xml": "svg",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def sniff_content_type(data: bytes) -> str | None:
    """Content type from the first bytes, for the formats providers return."""
    for magic, content_type in _MAGIC:
        if data.startswith(magic):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    return None


def _cap(max_bytes: int | None) -> int:
    return DEFAULT_MAX_BYTES if max_bytes is None else max_bytes


def _local_bytes(url: str, max_bytes: int) -> bytes | None:
    """Bytes for ``data:`` and ``sim:`` URLs; None for URLs that need a download."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "data":
        data = _decode_data_url(url)
    elif scheme == "sim":
        from genrouter.util._png import render_sim_url

        try:
            data = render_sim_url(url)
        except ValueError as exc:
            raise MediaError(str(exc)) from exc
    elif scheme in ("http", "https"):
        return None
    else:
        raise MediaError(
            f"refusing to read artifact URL with scheme {scheme!r}; "
            "only https, http, data and sim URLs are read"
        )
    if len(data) > max_bytes:
        raise MediaError(f"artifact is {len(data)} bytes, over the {max_bytes}-byte cap")
    return data


def _decode_data_url(url: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise MediaError("malformed data: URL (no comma)")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"malformed data: URL: {exc}") from exc


def _check_content_type(header: str | None, url: str) -> None:
    if header is None:
        return
    media = header.split(";", 1)[0].strip().lower()
    if media and not media.startswith(_ALLOWED_MEDIA_PREFIXES):
        raise MediaError(f"artifact at {_short(url)} has content type {media!r}, not media")


def _short(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:200]


def read_artifact_bytes(artifact: Artifact, *, max_bytes: int | None, timeout_s: float) -> bytes:
    """Blocking read of an artifact's bytes (see :meth:`Artifact.read`)."""
    cap = _cap(max_bytes)
    local = _local_bytes(artifact.url, cap)
    if local is not None:
        return local
    import httpx

    chunks: list[bytes] = []
    size = 0
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=True) as client,
            client.stream("GET", artifact.url) as response,
        ):
            response.raise_for_status()
            _check_content_type(response.headers.get("content-type"), artifact.url)
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > cap:
                    raise MediaError(f"artifact at {_short(artifact.url)} exceeds {cap} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise MediaError(f"could not download {_short(artifact.url)}: {exc}") from exc
    return b"".join(chunks)


async def read_artifact_bytes_async(artifact: Artifact, *, max_bytes: int | None, timeout_s: float) -> bytes:
    """Async read of an artifact's bytes (see :meth:`Artifact.aread`)."""
    cap = _cap(max_bytes)
    local = _local_bytes(artifact.url, cap)
    if local is not None:
        return local
    import httpx

    chunks: list[bytes] = []
    size = 0
    try:
        async with (
            httpx.AsyncClient(timeout=timeout_s, follow_redirects=True) as client,
            client.stream("GET", artifact.url) as response,
        ):
            response.raise_for_status()
            _check_content_type(response.headers.get("content-type"), artifact.url)
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise MediaError(f"artifact at {_short(artifact.url)} exceeds {cap} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise MediaError(f"could not download {_short(artifact.url)}: {exc}") from exc
    return b"".join(chunks)


def extension_for(artifact: Artifact) -> str:
    """The file extension for an artifact: from its content type, else its URL, else its kind."""
    if artifact.content_type:
        media = artifact.content_type.split(";", 1)[0].strip().lower()
        if media in _EXTENSIONS:
            return _EXTENSIONS[media]
        guessed = mimetypes.guess_extension(media)
        if guessed:
            return guessed.lstrip(".")
    parts = urlsplit(artifact.url)
    if parts.scheme == "data":
        media = parts.path.split(";", 1)[0].split(",", 1)[0].lower()
        if media in _EXTENSIONS:
            return _EXTENSIONS[media]
    suffix = Path(parts.path).suffix.lstrip(".").lower()
    if suffix and suffix.isalnum() and len(suffix) <= 5:
        return suffix
    return {"image": "png", "video": "mp4", "audio": "mp3"}[artifact.kind.value]


def safe_filename(name: str) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]``, without leading dots; never empty."""
    cleaned = _UNSAFE_NAME.sub("_", Path(name).name).lstrip(".")
    return cleaned[:200] or "output"


def save_artifact(artifact: Artifact, path: Path, *, name: str | None) -> Path:
    """Write an artifact to ``path`` (a file) or inside it (a directory); return the file written."""
    data = read_artifact_bytes(artifact, max_bytes=None, timeout_s=60.0)
    if path.is_dir():
        stem = safe_filename(name) if name else uuid.uuid4().hex[:12]
        if "." not in stem:
            stem = f"{stem}.{extension_for(artifact)}"
        target = path / stem
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        target = path
    target.write_bytes(data)
    return target
