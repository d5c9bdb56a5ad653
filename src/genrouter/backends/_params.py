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
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from genrouter.backends._uploads import read_media
from genrouter.catalog import PROMPTLESS_KINDS, Deployment
from genrouter.errors import InvalidRequestError
from genrouter.types import GenerationRequest, MediaInput
from genrouter.util._media import sniff_content_type

__all__ = [
    "DIRECT_FIELDS",
    "MEDIA_FIELDS",
    "media_data_url",
    "media_inputs",
    "media_targets",
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
    read = await read_media(value, field, provider=provider)
    if isinstance(read, str):
        return read
    data, guessed, _name = read
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidRequestError(
            f"{field}: {len(data)} bytes is over the {max_bytes}-byte limit for inline "
            "inputs; pass an https URL",
            field=field,
            provider=provider,
        )
    content_type = sniff_content_type(data) or guessed or "application/octet-stream"
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


MEDIA_FIELDS = ("image", "mask")
"""Single media inputs; ``images`` (a list) is mapped by :func:`media_inputs`."""


def media_targets(target: str | None) -> list[str]:
    """The provider inputs ``images`` maps to: one list input (``image_urls``), or one input
    per image in order (``first_frame_url,last_frame_url``, from a YAML list)."""
    if not target:
        return []
    return [part.strip() for part in target.split(",") if part.strip()]


async def media_inputs(
    request: GenerationRequest,
    deployment: Deployment,
    url_for: Callable[[MediaInput, str], Awaitable[str]],
    *,
    provider: str,
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """(provider inputs, warnings, input name → request field) for ``image``, ``mask`` and ``images``.

    ``url_for(value, field)`` turns one input into a URL (inline, uploaded or passed
    through; see :mod:`genrouter.backends._uploads`); the inputs are resolved at once.
    ``images`` goes to its mapping's one input as a list, or, when it maps to several
    inputs, the first image to the first input and so on (extra images are dropped,
    with a warning). Where ``image`` maps to the same list input (``image_urls``), it
    goes first in that list; where it maps to the same input as one of the images
    (``image_url`` as the first frame), that image is sent and the clash is warned.
    """
    params = deployment.params
    where = f"{provider} ({deployment.endpoint})"
    wanted: list[tuple[str, str, MediaInput]] = []  # (target, request field, value)
    warnings: list[str] = []
    for name in MEDIA_FIELDS:
        value: MediaInput | None = getattr(request, name)
        if value is None:
            continue
        target = params.get(name)
        if target:
            wanted.append((target, name, value))
        else:
            warnings.append(f"{where} has no input for {name}; the {name} given was ignored")
    lists: dict[str, list[int]] = {}
    if request.images:
        targets = media_targets(params.get("images"))
        if not targets:
            warnings.append(f"{where} has no input for images; {len(request.images)} image(s) were ignored")
        elif len(targets) == 1:
            lists[targets[0]] = [i for i, (t, _, _) in enumerate(wanted) if t == targets[0]]
            for index, value in enumerate(request.images):
                lists[targets[0]].append(len(wanted))
                wanted.append((targets[0], f"images[{index}]", value))
        else:
            for index, value in enumerate(request.images[: len(targets)]):
                clash = [field for target, field, _ in wanted if target == targets[index]]
                if clash:
                    warnings.append(
                        f"{where} takes {clash[0]} and images[{index}] as one input "
                        f"({targets[index]}); images[{index}] was sent"
                    )
                wanted.append((targets[index], f"images[{index}]", value))
            if len(request.images) > len(targets):
                warnings.append(
                    f"{where} takes {len(targets)} images ({', '.join(targets)}); "
                    f"{len(request.images) - len(targets)} more were ignored"
                )
    urls = await asyncio.gather(*(url_for(value, field) for _, field, value in wanted))
    payload: dict[str, Any] = {}
    names: dict[str, str] = {}
    in_lists = {i for indexes in lists.values() for i in indexes}
    for index, ((target, field, _), url) in enumerate(zip(wanted, urls, strict=True)):
        if index not in in_lists:
            payload[target] = url
            names[target] = field.split("[", 1)[0]
    for target, indexes in lists.items():
        payload[target] = [urls[i] for i in indexes]
        names[target] = "images"
    return payload, warnings, names
