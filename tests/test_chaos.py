"""The chaos suite, reduced: 300 generations through fal and Replicate fakes that fail,
throttle, reset, hang and (fal) go down entirely for two seconds."""

from __future__ import annotations

import asyncio

import pytest

from fakes.chaos import ChaosReport, run_chaos


@pytest.fixture(scope="module")
def report() -> ChaosReport:
    return asyncio.run(run_chaos(300, 32, seed=0))


def test_no_lost_requests_and_retry_after_is_honoured(report: ChaosReport) -> None:
    summary = report.summary()
    assert report.lost == 0, summary
    assert report.retry_after_violations == 0, summary


def test_at_least_99_percent_succeed(report: ChaosReport) -> None:
    summary = report.summary()
    assert report.succeeded / report.requests >= 0.99, summary


def test_every_extra_billed_job_is_a_hedge_loser_whose_cancel_came_too_late(report: ChaosReport) -> None:
    """No job is billed twice through a retry, a timeout or an abandoned read: the only
    double bills left are hedge races where both jobs finished before the cancel landed."""
    assert report.books is not None
    billed: dict[str, list[tuple[str, str]]] = {}
    for provider, job_id, prompt, orphan, cancelled, state in report.books.jobs:
        if not orphan and not cancelled:
            billed.setdefault(prompt, []).append((f"{provider}:{job_id}", state))
    for prompt, jobs in billed.items():
        if len(jobs) > 1:
            cancels = [state for _, state in jobs if "cancel_sent=True" in state]
            assert len(cancels) >= len(jobs) - 1, (prompt, jobs)


@pytest.mark.xfail(
    reason="issue #7: a hedge loser that finishes before its cancel lands is billed too", strict=False
)
def test_zero_double_billing(report: ChaosReport) -> None:
    summary = report.summary()
    assert report.double_billed == 0, summary
