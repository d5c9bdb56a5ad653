"""Finding a prediction whose create call lost its answer (Replicate has no idempotency key).

A create whose answer never came (a reset connection, a read timeout, a 502/504 from the
gateway) may or may not have made a prediction. Resubmitting blindly can bill twice;
giving up fails a request that may be running. Replicate lists predictions newest first
(``GET /v1/predictions?created_after=…``, with each one's ``input``), so the backend
looks for one with exactly the input it sent, created since just before it sent it:

- found → that prediction is the job (nothing is resubmitted, nothing is orphaned);
- every listing answered and none matched → nothing was created: the create is safe to
  send again, so the error becomes a retryable :class:`ProviderUnavailableError`;
- the listings themselves failed → still unknown: the original error stands.

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
    "RECONCILE_MAX_WAIT_S",
    "RECONCILE_PAUSE_S",
    "ClaimedPredictions",
    "created_after",
    "matching_prediction",
]

RECONCILE_LISTS = 3
"""Listings tried before the outcome is left unknown (transient errors only)."""

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
