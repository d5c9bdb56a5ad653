"""Catalog-driven translation of a :class:`GenerationRequest` into a provider's input.

A deployment's ``params`` maps request fields to the provider's input names
(``steps: num_inference_steps``) or to ``null`` when the provider has no such input.
:func:`translate_fields` handles the fields that map one to one; each backend then
handles its own vocabulary (sizes, media, LoRAs, formats) and finally merges
``provider_options``. Anything dropped or changed becomes a warning on the result.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from genrouter._media import sniff_content_type
from genrouter.catalog import PROMPTLESS_KINDS, Deployment
from genrouter.errors import InvalidRequestError
from genrouter.types import GenerationRequest, MediaInput

__all__ = [
    "DIRECT_FIELDS",
    "media_data_url",
    "merge_provider_options",
    "requested_fields",
    "translate_fields",
]

DIRECT_FIELDS = (
    "prompt",
    "negative_prompt",
    "num_outputs",
    "seed",
    "steps",
    "guidance",
    "strength",
    "fps",
)
"""Request fields whose value passes through unchanged under the provider's name."""

_NOT_SENT: tuple[object, ...] = (None, [], {})


def requested_fields(request: GenerationRequest, names: Iterable[str]) -> list[str]:
    """The fields among ``names`` that the request actually sets."""
    return [n for n in names if getattr(request, n) not in _NOT_SENT]


def translate_fields(
    request: GenerationRequest,
    deployment: Deployment,
    *,
    provider: str,
    fields: Iterable[str] = DIRECT_FIELDS,
) -> tuple[dict[str, Any], list[str]]:
    """Map the request's one-to-one fields through ``deployment.params``.

    Returns the provider input so far and warnings for fields the deployment cannot
    take (mapped to null, or not mapped at all).
    """
    mapping = deployment.params
    payload: dict[str, Any] = {}
    warnings: list[str] = []
    for field in requested_fields(request, fields):
        target = mapping.get(field)
        if target is None:
            if field == "num_outputs" and request.num_outputs == 1:
                continue
            if field == "prompt" and deployment.kind in PROMPTLESS_KINDS:
                continue  # an upscaler takes no prompt: nothing was lost
            warnings.append(
                f"{provider} ({deployment.endpoint}) has no input for {field}; "
                f"{field}={getattr(request, field)!r} was ignored"
            )
            continue
        payload[target] = getattr(request, field)
    return payload, warnings


def merge_provider_options(payload: dict[str, Any], request: GenerationRequest, *keys: str) -> dict[str, Any]:
    """``payload`` updated with ``request.provider_options[key]`` for each key (later keys win).

    Pass the provider's config key and its type, so options can target either.
    """
    merged = dict(payload)
    for key in keys:
        options = request.provider_options.get(key)
        if options:
            merged.update(options)
    return merged


async def media_data_url(
    value: MediaInput, field: str, *, provider: str, max_bytes: int | None = None
) -> str:
    """An image input as a URL a provider can read.

    http(s) and ``data:`` URLs pass through; bytes and a ``pathlib.Path`` are sent inline
    as a ``data:`` URL (content type sniffed, else guessed from the file name). Any other
    string is refused, so a user-supplied string never makes genrouter read a local file.
    """
    guessed: str | None = None
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
        guessed = mimetypes.guess_type(value.name)[0]
    else:
        data = value
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidRequestError(
            f"{field}: {len(data)} bytes is over the {max_bytes}-byte limit for inline "
            "inputs; pass an https URL",
            field=field,
            provider=provider,
        )
    content_type = sniff_content_type(data) or guessed or "application/octet-stream"
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
