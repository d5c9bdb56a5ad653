"""The output Volume: large outputs written to a folder, returned as paths and signed download URLs.

With ``GENROUTER_OUTPUT_DIR`` set (``app.py`` mounts the outputs Volume there), a result
whose outputs together exceed ``output_inline_max_bytes``, or whose request asked
``output_volume: true``, carries no bytes: each output is written to
``<output_dir>/<YYYY-MM-DD>/<random id>-<i>.<ext>`` and the result lists
``output_paths`` (relative to the Volume's root, for ``modal volume get``) and, when the
deployment has a public URL (``GENROUTER_PUBLIC_URL``, its ``downloads`` endpoint) and a signing
secret (``GENROUTER_WEBHOOK_SECRET``), ``output_urls``:
``<public_url>?path=<path>&expires=<unix s>&sig=<hex HMAC-SHA256 of "path:expires">``,
valid for ``GENROUTER_DOWNLOAD_TTL_S`` (default 24 h). The web endpoint serves them
(:func:`verify_download`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["DEFAULT_TTL_S", "download_url", "place", "verify_download"]

DEFAULT_TTL_S = 24 * 3600
_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
}


def _mac(secret: str, path: str, expires: int) -> str:
    return hmac.new(secret.encode(), f"{path}:{expires}".encode(), hashlib.sha256).hexdigest()


def download_url(
    base_url: str, secret: str, path: str, *, ttl_s: int = DEFAULT_TTL_S, now: float | None = None
) -> str:
    """A signed URL for ``path`` in the output Volume, valid ``ttl_s`` seconds."""
    expires = int(time.time() if now is None else now) + ttl_s
    sig = _mac(secret, path, expires)
    return f"{base_url}?path={quote(path)}&expires={expires}&sig={sig}"


def verify_download(
    root: str, secret: str, path: str, expires: str, sig: str, *, now: float | None = None
) -> Path:
    """The file a signed download URL names; ``PermissionError`` if forged or expired,
    ``FileNotFoundError`` if absent."""
    if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
        raise PermissionError("download link expired")
    if not hmac.compare_digest(_mac(secret, path, int(expires)), sig):
        raise PermissionError("download link signature does not match")
    base = Path(root).resolve()
    target = (base / path).resolve()
    if base not in target.parents:
        raise PermissionError("download path leaves the output folder")
    if not target.is_file():
        raise FileNotFoundError(path)
    return target


def place(result: dict[str, Any], wanted: bool | None, config: Any, *, entry_id: str = "") -> None:
    """Move ``result["outputs"]`` to the output folder when asked or too large (see the module)."""
    folder = getattr(config, "output_dir", None)
    outputs = result.get("outputs") or []
    size = sum(len(o) for o in outputs)
    if not folder or wanted is False or (wanted is None and size <= config.output_inline_max_bytes):
        return
    day = datetime.now(tz=UTC).strftime("%Y-%m-%d")
    stem = os.urandom(8).hex()
    extension = _EXTENSIONS.get(str(result.get("content_type")), "bin")
    paths = []
    for i, data in enumerate(outputs):
        relative = f"{day}/{stem}-{i}.{extension}"
        target = Path(folder) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        paths.append(relative)
    result["outputs"] = []
    result["output_paths"] = paths
    result["output_bytes"] = size
    secret = getattr(config, "webhook_secret", "")
    base_url = getattr(config, "public_url", None)
    if base_url and secret:
        ttl = int(getattr(config, "download_ttl_s", DEFAULT_TTL_S))
        result["output_urls"] = [download_url(base_url, secret, p, ttl_s=ttl) for p in paths]
    else:
        result.setdefault("warnings", []).append(
            "outputs are in the output Volume (output_paths); set GENROUTER_PUBLIC_URL and "
            "GENROUTER_WEBHOOK_SECRET for download links"
        )
