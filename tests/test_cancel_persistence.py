"""A cancel is re-sent through a provider's outage, on the router's clock, and then given up."""

from __future__ import annotations

from dataclasses import dataclass

from genrouter import ProviderUnavailableError
from genrouter.engine._attempts import CANCEL_PERSIST_S, quiet_cancel
from genrouter.testing import FakeBackend, FakeClock
from genrouter.types import ProviderJob

JOB = ProviderJob(provider="a", endpoint="a/flux-dev", provider_request_id="a-1")


@dataclass
class DownUntil(FakeBackend):
    """Cancels fail with a 503 until ``up_at`` on ``clock``."""

    up_at: float = 0.0
    sends: int = 0

    async def cancel(self, job: ProviderJob) -> None:
        self.sends += 1
        assert self.clock is not None
        if self.clock.now() < self.up_at:
            raise ProviderUnavailableError("503", provider=self.name)
        self.cancelled.append(job.provider_request_id)


async def test_a_cancel_outlasts_a_ten_second_outage() -> None:
    """Cancels failing for 10 s keep being re-sent (backing off) until one lands."""
    clock = FakeClock()
    backend = DownUntil(name="a", clock=clock, up_at=clock.now() + 10)
    await quiet_cancel(backend, JOB, clock=clock)
    assert backend.cancelled == ["a-1"]
    assert 10 <= clock.now() - 1000 < 13
    assert max(clock.sleeps) <= 2.0


async def test_a_cancel_is_given_up_after_its_persistence_window() -> None:
    """A provider down for good gets cancels for CANCEL_PERSIST_S of the clock, then none."""
    clock = FakeClock()
    backend = DownUntil(name="a", clock=clock, up_at=float("inf"))
    await quiet_cancel(backend, JOB, clock=clock)
    assert backend.cancelled == []
    assert CANCEL_PERSIST_S <= clock.now() - 1000 < CANCEL_PERSIST_S + 2.5
