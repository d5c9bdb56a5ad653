"""Catalog-driven translation of a :class:`GenerationRequest` into a provider's input.

A deployment's ``params`` maps request fields to the provider's input names
(``steps: num_inference_steps``) or to ``null`` when the provider has no such input.
:func:`translate_fields` handles the fields that map one to one; each backend then
handles its own vocabulary (sizes, media, LoRAs, formats) and finally merges
``provider_options``. Anything dropped or changed becomes a warning on the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from genrouter.catalog import Deployment
from genrouter.types import GenerationRequest

__all__ = ["DIRECT_FIELDS", "merge_provider_options", "requested_fields", "translate_fields"]

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
