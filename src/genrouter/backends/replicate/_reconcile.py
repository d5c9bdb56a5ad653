"""Finding a prediction whose create call lost its answer (Replicate has no idempotency key).

A create whose answer never came (a reset connection, a read timeout, a 502/504 from the
gateway) may or may not have made a prediction. Resubmitting blindly can bill twice;
giving up fails a request that may be running. Replicate lists predictions newest first,
100 a page, for every key of the account (``GET /v1/predictions?created_after=…``, with
each one's ``input``, and a ``next`` URL to the older page), so the backend looks for one
with exactly the input it sent, created since just before it sent it, following ``next``
until a page reaches back past that time (at most :data:`RECONCILE_MAX_PAGES` pages):

- found → that prediction is the job (nothing is resubmitted, nothing is orphaned);
- not found in two complete looks, a listing that fails or has too many pages, or an
  input holding ``data:`` URLs (Replicate does not store those, so it can never match)
  → the outcome stays unknown: :class:`SubmitOutcomeUnknownError` stands, and the
  router never sends this request to that provider again (it fails over instead). A
  missed match must never become a second, billed prediction.

Predictions this backend has already handed out are never matched twice, so two
requests with identical inputs in one process cannot adopt the same prediction. Two
processes sending identical inputs within the same moment could; inputs with a seed
(or any difference) never collide.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CLOCK_SLACK_S",
    "RECONCILE_LISTS",
    "RECONCILE_MAX_PAGES",
    "RECONCILE_MAX_WAIT_S",
    "RECONCILE_PAUSE_S",
    "ClaimedPredictions",
    "created_after",
    "holds_data_url",
    "matching_prediction",
    "past_cutoff",
]

RECONCILE_LISTS = 3
"""Listings tried before the outcome is left unknown (transient errors only)."""

RECONCILE_MAX_PAGES = 50
"""Pages (100 predictions each) one look reads before giving up (the outcome stays unknown)."""

RECONCILE_PAUSE_S = 0.3
"""Pause between listings, and before the confirming second look."""

RECONCILE_MAX_WAIT_S = 10.0
"""Longest Retry-After a listing waits out; beyond it the outcome is left unknown.

Reconciling is part of a submit that a caller is waiting on; a listing told to come back
in an hour (or, from a broken proxy, in centuries) would hang it, and the router fails
over safely on an unknown outcome anyway.
"""

CLOCK_SLACK_S = 30.0
"""How far before our send time the listing starts: our clock and Replicate's differ."""


def created_after(sent_at_epoch: float) -> str:
    """The ``created_after`` filter (RFC 3339, UTC) for a create sent at ``sent_at_epoch``."""
    moment = datetime.fromtimestamp(sent_at_epoch - CLOCK_SLACK_S, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def holds_data_url(value: Any) -> bool:
    """Whether an input holds a ``data:`` URL anywhere (Replicate does not store those)."""
    if isinstance(value, str):
        return value.startswith("data:")
    if isinstance(value, dict):
        return any(holds_data_url(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_data_url(v) for v in value)
    return False


def past_cutoff(results: Iterable[Any], cutoff_epoch: float) -> bool:
    """Whether a page (newest first) reaches back to a prediction created before ``cutoff_epoch``."""
    for prediction in results:
        created = prediction.get("created_at") if isinstance(prediction, dict) else None
        if isinstance(created, str):
            try:
                moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
            except ValueError:
                continue
            if moment.timestamp() < cutoff_epoch:
                return True
    return False


def matching_prediction(
    results: Iterable[Any], payload: dict[str, Any], version: str | None, claimed: ClaimedPredictions
) -> dict[str, Any] | None:
    """The newest unclaimed prediction with exactly ``payload`` as input (and ``version``)."""
    for prediction in results:
        if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
            continue
        if prediction["id"] in claimed or prediction.get("input") != payload:
            continue
        if version is not None and prediction.get("version") != version:
            continue
        if prediction.get("source", "api") != "api":
            continue
        return prediction
    return None


class ClaimedPredictions:
    """Ids of predictions this backend created or adopted recently (a bounded set)."""

    def __init__(self, size: int = 4096) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, prediction_id: str) -> None:
        """Remember ``prediction_id`` (forgetting the oldest past ``size``)."""
        self._ids[prediction_id] = None
        self._ids.move_to_end(prediction_id)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __contains__(self, prediction_id: object) -> bool:
        return prediction_id in self._ids
