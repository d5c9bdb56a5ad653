"""Batch input: JSONL lines → :class:`BatchItem` s, bad lines → :class:`LineError` s.

Re-exported by :mod:`genrouter.batch` (see it for the file format).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genrouter.catalog import PROMPTLESS_KINDS, Catalog
from genrouter.errors import ConfigError, InvalidRequestError
from genrouter.router import coerce_request
from genrouter.types import GenerationRequest

__all__ = [
    "MAX_ID_LENGTH",
    "BatchItem",
    "KindOf",
    "LineError",
    "parse_items",
    "read_items",
    "sanitise_id",
    "shipped_kind",
]

MAX_ID_LENGTH = 100

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One item to generate: its (sanitised) id, its request, and where it came from."""

    id: str
    request: GenerationRequest
    line: int = 0
    given_id: str | None = None


@dataclass(frozen=True, slots=True)
class LineError:
    """An input line that cannot run, and why."""

    line: int
    message: str
    id: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def sanitise_id(raw: str) -> str:
    """A file-name-safe id: ``[A-Za-z0-9._-]``, not starting with ``.`` or ``-``, ≤ 100 chars.

    An id that had to change gets ``-<8 hex of sha256(raw)>`` so distinct ids stay distinct.
    """
    clean = _UNSAFE_ID.sub("_", raw).lstrip(".-")[:MAX_ID_LENGTH]
    if clean == raw and clean and clean.split(".")[0].lower() not in _RESERVED_NAMES:
        return clean
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{clean[: MAX_ID_LENGTH - 9] or 'item'}-{digest}"


KindOf = Callable[[str], str | None]
"""A model's kind (``image``, ``upscale``...) by alias, or None where it is not known."""


@functools.lru_cache(maxsize=1)
def _shipped_catalog() -> Catalog:
    return Catalog.load()


def shipped_kind(model: str) -> str | None:
    """The kind of ``model`` in the shipped catalogs (None for a model they do not know)."""
    catalog = _shipped_catalog()
    spec = catalog.models.get(catalog.resolve(model) or model)
    return spec.kind if spec is not None else None


def _check_prompt(request: GenerationRequest, kind_of: KindOf) -> None:
    # A line's missing prompt is caught here, by line, where the model's kind is known;
    # the router refuses the rest (user aliases the shipped catalog does not know).
    if request.prompt is not None or ":" in request.model:
        return
    kind = kind_of(request.model)
    if kind is not None and kind not in PROMPTLESS_KINDS:
        raise InvalidRequestError(
            f"prompt: missing; {request.model!r} is a{'n' if kind == 'image' else ''} {kind} model "
            "and needs one (only upscale, remove-background and workflow models run without)",
            field="prompt",
        )


def _item(data: Any, line: int, model: str | None, kind_of: KindOf = shipped_kind) -> BatchItem:
    """One item from a parsed line; raises ``InvalidRequestError`` saying what is wrong."""
    if not isinstance(data, Mapping):
        raise InvalidRequestError(f"expected a JSON object, got {type(data).__name__}")
    fields = dict(data)
    raw_id = fields.pop("id", None)
    given: str | None = None
    if raw_id is not None:
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
            raise InvalidRequestError("id must be a non-empty string or an integer", field="id")
        given = str(raw_id)
    if fields.get("model") is None:
        if model is None:
            raise InvalidRequestError("no model: pass --model or give the line a model field", field="model")
        fields["model"] = model
    request = coerce_request(fields)
    _check_prompt(request, kind_of)
    return BatchItem(
        id=sanitise_id(given) if given is not None else f"line-{line}",
        request=request,
        line=line,
        given_id=given,
    )


def parse_items(
    lines: Iterable[str | Mapping[str, Any]],
    *,
    model: str | None = None,
    kind_of: KindOf = shipped_kind,
) -> tuple[list[BatchItem], list[LineError]]:
    """Items from JSONL lines (or parsed objects), and the lines that cannot run.

    Blank lines are skipped; line numbers count from 1. A repeated id (compared
    after sanitising, ignoring case) is an error on the later line. A line without a
    ``prompt`` is an error when ``kind_of`` says its model is an ``image`` or ``video``
    model (default: the shipped catalogs' kinds; :func:`run_batch` passes the router's).
    """
    items: list[BatchItem] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(lines, 1):
        if isinstance(entry, str):
            if not entry.strip():
                continue
            try:
                data: Any = json.loads(entry)
            except json.JSONDecodeError as exc:
                errors.append(LineError(number, f"not JSON: {exc.msg} at column {exc.colno}"))
                continue
        else:
            data = entry
        try:
            item = _item(data, number, model, kind_of)
        except InvalidRequestError as exc:
            raw_id = data.get("id") if isinstance(data, Mapping) else None
            errors.append(LineError(number, str(exc), None if raw_id is None else str(raw_id)))
            continue
        key = item.id.casefold()
        if key in seen:
            errors.append(LineError(number, f"id {item.id!r} is already used on line {seen[key]}", item.id))
            continue
        seen[key] = number
        items.append(item)
    return items, errors


def read_items(
    path: str | Path, *, model: str | None = None, kind_of: KindOf = shipped_kind
) -> tuple[list[BatchItem], list[LineError]]:
    """:func:`parse_items` over a JSONL file; an unreadable file raises ``ConfigError``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read batch input {str(path)!r}: {exc}") from exc
    return parse_items(text.splitlines(), model=model, kind_of=kind_of)
