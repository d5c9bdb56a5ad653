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
    assert report.succeeded / report.requests >= 0.90, summary


@pytest.mark.xfail(
    reason="issue #7: best-effort cancels lost to faults leave extra jobs billed", strict=False
)
def test_zero_double_billing_and_full_success(report: ChaosReport) -> None:
    summary = report.summary()
    assert report.double_billed == 0, summary
    assert report.succeeded / report.requests >= 0.99, summary
