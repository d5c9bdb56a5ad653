"""Deadlines pushed to providers: fal's X-Fal-Request-Timeout and Replicate's Cancel-After
carry the time left at each submission. Through AsyncRouter against the loopback fakes,
on a FakeClock (backoff sleeps advance it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fakes.fal import Behaviour, FakeFal
from fakes.replicate import FakeReplicate, problem
from fakes.server import LoopbackServer
from genrouter import AsyncRouter
from genrouter.testing import FakeClock
from loopback import Routers, fal_section, replicate_section

Build = Callable[..., AsyncRouter]
RETRY = {"max_attempts": 2, "initial_backoff_s": 5, "max_backoff_s": 5, "jitter": 0}


@pytest.fixture
def make(fal_server: LoopbackServer, replicate_server: LoopbackServer, routers: Routers) -> Build:
    def build(order: list[str], **policy: Any) -> AsyncRouter:
        source = {
            "version": 1,
            "providers": {"fal": fal_section(fal_server), "replicate": replicate_section(replicate_server)},
            "routing": {"default": {"strategy": "priority", "order": order, **policy}},
        }
        return routers(source, clock=FakeClock())

    return build


def fal_timeouts(server: LoopbackServer) -> list[str | None]:
    return [
        r.header("x-fal-request-timeout")
        for r in server.requests
        if r.method == "POST" and r.path.startswith("/fal-ai/")
    ]


async def test_a_fal_submit_carries_the_remaining_deadline(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """deadline_s 30 at submission → X-Fal-Request-Timeout: 30."""
    fal_server.requests.clear()
    await make(["fal"]).generate("a fox", model="flux-dev", deadline_s=30)
    assert fal_timeouts(fal_server) == ["30"]


async def test_a_fal_retry_carries_the_time_left(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """After a 503 and 5 s of backoff, the retry's header says 25, not 30."""
    fal.by_prompt["a fox"] = Behaviour(queue_polls=0, progress_polls=0, submit_errors=(503,))
    fal_server.requests.clear()
    await make(["fal"], retry=RETRY).generate("a fox", model="flux-dev", deadline_s=30)
    assert fal_timeouts(fal_server) == ["30", "25"]


async def test_the_fal_header_is_whole_seconds_and_at_least_one(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """0.4 s left is sent as 1; 12.9 s as 12."""
    fal_server.requests.clear()
    router = make(["fal"])
    await router.generate("a fox", model="flux-dev", deadline_s=0.4)
    await router.generate("a fox", model="flux-dev", deadline_s=12.9)
    assert fal_timeouts(fal_server) == ["1", "12"]


async def test_the_policy_deadline_is_pushed_too(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """Without a request deadline, the policy's timeouts.deadline_s is what is left."""
    fal_server.requests.clear()
    await make(["fal"], timeouts={"deadline_s": 90, "attempt_s": 60}).generate("a fox", model="flux-dev")
    assert fal_timeouts(fal_server) == ["90"]


async def test_a_replicate_failover_carries_the_time_left(
    fal: FakeFal, replicate: FakeReplicate, make: Build
) -> None:
    """fal fails twice over 5 s of backoff; Replicate's create then gets Cancel-After: 25s."""
    fal.by_prompt["a fox"] = Behaviour(submit_status=503)
    result = await make(["fal", "replicate"], retry=RETRY).generate("a fox", model="flux-dev", deadline_s=30)
    assert result.provider == "replicate"
    assert [c.header("cancel-after") for c in replicate.creates] == ["25s"]


async def test_a_replicate_retry_carries_the_time_left(replicate: FakeReplicate, make: Build) -> None:
    """A create refused with a 500, retried after 5 s: Cancel-After 30s, then 25s."""
    replicate.create_faults = [problem(500, "Internal server error")]
    await make(["replicate"], retry=RETRY).generate("a fox", model="flux-dev", deadline_s=30)
    assert [c.header("cancel-after") for c in replicate.creates] == ["30s", "25s"]


async def test_a_submitted_job_without_a_request_deadline_gets_no_provider_deadline(
    fal: FakeFal, fal_server: LoopbackServer, replicate: FakeReplicate, make: Build
) -> None:
    """router.submit() without deadline_s: the job may outlive the policy deadline, so none is sent."""
    fal_server.requests.clear()
    await make(["fal"]).submit("a fox", model="flux-dev")
    await make(["replicate"]).submit("a fox", model="flux-dev")
    assert fal_timeouts(fal_server) == [None]
    assert [c.header("cancel-after") for c in replicate.creates] == [None]
