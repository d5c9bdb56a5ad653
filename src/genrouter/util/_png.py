"""Deterministic placeholder PNGs, and the ``sim:`` URLs that name them.

The simulated provider returns artifacts whose URL encodes everything needed to
render the image (``sim://<provider>/<request-id>/<index>.png?w=…&h=…&seed=…``),
so a result read back from JSON in another process still downloads the same bytes.
"""

from __future__ import annotations

import random
import struct
import zlib
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = ["placeholder_png", "render_sim_url", "sim_url"]

_BANDS = 32


def placeholder_png(width: int, height: int, seed: int, index: int = 0) -> bytes:
    """A ``width``×``height`` RGB PNG: a seeded diagonal gradient, identical for identical inputs."""
    rng = random.Random(f"{seed}:{index}")
    start = [rng.randrange(256) for _ in range(3)]
    end = [rng.randrange(256) for _ in range(3)]
    # A handful of distinct rows, repeated in bands, keeps this O(width + height) in Python.
    rows: list[bytes] = []
    for band in range(_BANDS):
        shift = band / max(_BANDS - 1, 1)
        row = bytearray(b"\x00")
        for x in range(width):
            t = (x / max(width - 1, 1) + shift) / 2
            row += bytes(int(s + (e - s) * t) & 0xFF for s, e in zip(start, end, strict=True))
        rows.append(bytes(row))
    band_height = max(height // _BANDS, 1)
    raw = b"".join(rows[min(y // band_height, _BANDS - 1)] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def sim_url(provider: str, request_id: str, index: int, width: int, height: int, seed: int) -> str:
    """The ``sim:`` URL of a simulated output."""
    query = urlencode({"w": width, "h": height, "seed": seed})
    return f"sim://{provider}/{request_id}/{index}.png?{query}"


def render_sim_url(url: str) -> bytes:
    """Render the PNG a ``sim:`` URL names. Raises ``ValueError`` for a malformed URL."""
    parts = urlsplit(url)
    if parts.scheme != "sim":
        raise ValueError(f"not a sim: URL: {url!r}")
    query = parse_qs(parts.query)
    try:
        width = int(query["w"][0])
        height = int(query["h"][0])
        seed = int(query["seed"][0])
        index = int(parts.path.rsplit("/", 1)[-1].split(".", 1)[0])
    except (KeyError, ValueError, IndexError) as exc:
        raise ValueError(f"malformed sim: URL {url!r}: {exc}") from exc
    if not (1 <= width <= 16384 and 1 <= height <= 16384):
        raise ValueError(f"sim: URL size {width}x{height} out of range")
    return placeholder_png(width, height, seed, index)
