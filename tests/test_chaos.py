"""The chaos suite, reduced: 300 generations through fal and Replicate fakes that fail,
throttle, reset, hang and (fal) go down entirely for two seconds; once with the
reliability policy alone, once with hedging on top."""

from __future__ import annotations

import asyncio

import pytest

from fakes.chaos import ChaosReport, run_chaos


@pytest.fixture(scope="module")
def unhedged() -> ChaosReport:
    return asyncio.run(run_chaos(300, 32, seed=0, hedge=False))


@pytest.fixture(scope="module")
def hedged() -> ChaosReport:
    return asyncio.run(run_chaos(300, 32, seed=0, hedge=True))


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


def test_with_hedging_every_extra_billed_job_is_a_loser_whose_cancel_came_too_late(
    hedged: ChaosReport,
) -> None:
    """The only double bills hedging may add are races where both jobs finished before the
    loser's cancel landed: every extra billed job was sent a cancel."""
    assert hedged.books is not None
    billed: dict[str, list[tuple[str, str]]] = {}
    for provider, job_id, prompt, orphan, cancelled, state in hedged.books.jobs:
        if not orphan and not cancelled:
            billed.setdefault(prompt, []).append((f"{provider}:{job_id}", state))
    for prompt, jobs in billed.items():
        if len(jobs) > 1:
            cancels = [state for _, state in jobs if "cancel_sent=True" in state]
            assert len(cancels) >= len(jobs) - 1, (prompt, jobs)
