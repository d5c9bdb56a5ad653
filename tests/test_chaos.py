"""The chaos suite, reduced: 300 generations on product defaults through fal and Replicate
fakes and a simulated third provider that fail, throttle, reset, hang and (fal) go down
entirely for two seconds; once with the reliability policy alone, once with hedging on top."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fakes.chaos import ChaosReport, run_chaos
from genrouter import AttemptOutcome


@pytest.fixture(scope="module")
def unhedged() -> ChaosReport:
    return asyncio.run(run_chaos(300, 32, seed=0, hedge=False))


HEDGED_TRACE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def hedged() -> ChaosReport:
    return asyncio.run(run_chaos(300, 32, seed=0, hedge=True, trace=HEDGED_TRACE))


@pytest.fixture(params=["unhedged", "hedged"])
def report(request: pytest.FixtureRequest) -> ChaosReport:
    result: ChaosReport = request.getfixturevalue(request.param)
    return result


def test_no_lost_requests_and_retry_after_is_honoured(report: ChaosReport) -> None:
    summary = report.summary()
    assert report.lost == 0, summary
    assert report.retry_after_violations == 0, summary


def test_at_least_99_percent_succeed(report: ChaosReport) -> None:
    summary = report.summary()
    assert report.succeeded / report.requests >= 0.99, summary


def test_without_hedging_nothing_is_billed_twice(unhedged: ChaosReport) -> None:
    """Retries, timeouts, lost answers and failed reads never leave a second billed job."""
    summary = unhedged.summary()
    assert unhedged.double_billed == 0, summary


def test_with_hedging_every_extra_billed_job_lost_a_hedge_race(hedged: ChaosReport) -> None:
    """The only double bills hedging may add are races both jobs finished: every extra
    billed job belongs to an attempt the result records as ``hedge_lost``."""
    assert hedged.books is not None
    billed: dict[str, list[str]] = {}
    for _provider, job_id, prompt, orphan, cancelled, _state in hedged.books.jobs:
        if not orphan and not cancelled:
            billed.setdefault(prompt, []).append(job_id)
    for prompt, jobs in billed.items():
        if len(jobs) > 1:
            result = HEDGED_TRACE[prompt]
            lost = {a.provider_request_id for a in result.attempts if a.outcome is AttemptOutcome.HEDGE_LOST}
            winner = result.provider_request_id
            assert all(job in lost for job in jobs if job != winner), (prompt, jobs, result.attempts)
