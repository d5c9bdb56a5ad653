"""Matching a lost create to its prediction: exact input, version, source, never twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from genrouter.backends.replicate._reconcile import (
    CLOCK_SLACK_S,
    ClaimedPredictions,
    created_after,
    matching_prediction,
)

PAYLOAD = {"prompt": "a fox", "num_outputs": 1}


def prediction(pid: str, payload: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "input": dict(payload or PAYLOAD), "version": "v1", "source": "api", **extra}


def test_the_newest_prediction_with_the_same_input_matches() -> None:
    results = [prediction("new"), prediction("old")]
    assert matching_prediction(results, PAYLOAD, None, ClaimedPredictions()) == results[0]


def test_a_different_input_never_matches() -> None:
    results = [prediction("x", {"prompt": "a fox", "num_outputs": 2})]
    assert matching_prediction(results, PAYLOAD, None, ClaimedPredictions()) is None


def test_a_claimed_prediction_is_skipped_for_the_next_one() -> None:
    claimed = ClaimedPredictions()
    claimed.add("new")
    results = [prediction("new"), prediction("old")]
    assert matching_prediction(results, PAYLOAD, None, claimed) == results[1]


def test_the_version_must_match_when_one_was_sent() -> None:
    results = [prediction("x")]
    assert matching_prediction(results, PAYLOAD, "v2", ClaimedPredictions()) is None
    assert matching_prediction(results, PAYLOAD, "v1", ClaimedPredictions()) == results[0]


def test_predictions_made_on_the_website_are_not_ours() -> None:
    results = [prediction("x", source="web")]
    assert matching_prediction(results, PAYLOAD, None, ClaimedPredictions()) is None


def test_malformed_entries_are_ignored() -> None:
    results: list[Any] = [None, "x", {"id": 3, "input": PAYLOAD}, prediction("ok")]
    assert matching_prediction(results, PAYLOAD, None, ClaimedPredictions()) == results[-1]


def test_the_claimed_set_forgets_the_oldest_past_its_size() -> None:
    claimed = ClaimedPredictions(size=2)
    for pid in ("a", "b", "c"):
        claimed.add(pid)
    assert "a" not in claimed
    assert "b" in claimed
    assert "c" in claimed


@given(st.floats(min_value=1e9, max_value=4e9, allow_nan=False))
def test_created_after_is_utc_rfc3339_before_the_send_time(sent_at: float) -> None:
    text = created_after(sent_at)
    assert text.endswith("Z")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    assert abs(parsed - (sent_at - CLOCK_SLACK_S)) < 1e-3
