"""``on_progress`` and ``status()``: state, queue position, new log lines and elapsed time."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import genrouter
from fakes.fal import Behaviour, FakeFal
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer, serve
from genrouter import Artifact, AsyncRouter, GenerationRequest, JobState, Progress, Router
from genrouter.testing import FakeClock, FunctionBackend
from loopback import install_fal

KEY = "fal-key-progress-0123456789"


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    """fal's queue: two polls in the queue (positions 1 then 0), two running, then done."""
    return install_fal(fal_server, api_key=KEY, behaviour=Behaviour(queue_polls=2, progress_polls=2))


@pytest.fixture
def replicate() -> Iterator[LoopbackServer]:
    with serve(FakeReplicate()) as running:
        yield running


def fal_config(server: LoopbackServer) -> dict[str, Any]:
    return {"version": 1, "providers": {"fal": {"api_key": KEY, "base_url": server.url}}}


def replicate_config(server: LoopbackServer) -> dict[str, Any]:
    return {"version": 1, "providers": {"replicate": {"api_token": TOKEN, "base_url": server.url}}}


def states(seen: list[Progress]) -> list[JobState]:
    """The states in order, each run of one state counted once."""
    out: list[JobState] = []
    for progress in seen:
        if not out or out[-1] is not progress.state:
            out.append(progress.state)
    return out


async def test_on_progress_sees_queued_running_succeeded_with_a_queue_position(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """A fal job reports queued (with its queue position), then running, then succeeded."""
    seen: list[Progress] = []
    async with AsyncRouter.from_config(fal_config(fal_server), clock=FakeClock()) as router:
        await router.generate("a fox", model="flux-dev", on_progress=seen.append)
    assert states(seen) == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    assert [p.queue_position for p in seen if p.state is JobState.QUEUED] == [1, 0]
    assert {p.provider for p in seen} == {"fal"}
    assert [p.elapsed_s for p in seen] == sorted(p.elapsed_s for p in seen)
    assert seen[-1].elapsed_s > 0


async def test_on_progress_passes_each_log_line_once(fal_server: LoopbackServer, fal: FakeFal) -> None:
    """Log lines reach the callback as they arrive, none twice."""
    seen: list[Progress] = []
    async with AsyncRouter.from_config(fal_config(fal_server), clock=FakeClock()) as router:
        await router.generate("a fox", model="flux-dev", on_progress=seen.append)
    lines = [line for p in seen for line in p.logs]
    assert lines == ["poll 3", "poll 4", "poll 5"]


async def test_an_async_callback_is_awaited(fal_server: LoopbackServer, fal: FakeFal) -> None:
    """The async API accepts a coroutine function as on_progress."""
    seen: list[JobState] = []

    async def callback(progress: Progress) -> None:
        await asyncio.sleep(0)
        seen.append(progress.state)

    async with AsyncRouter.from_config(fal_config(fal_server), clock=FakeClock()) as router:
        await router.generate("a fox", model="flux-dev", on_progress=callback)
    assert seen[0] is JobState.QUEUED
    assert seen[-1] is JobState.SUCCEEDED


async def test_a_callback_that_raises_does_not_break_the_request(
    fal_server: LoopbackServer, fal: FakeFal, caplog: pytest.LogCaptureFixture
) -> None:
    """The request succeeds; the callback's error is logged once, however often it raises."""
    calls: list[Progress] = []

    def callback(progress: Progress) -> None:
        calls.append(progress)
        raise RuntimeError("my progress bar broke")

    with caplog.at_level(logging.WARNING, logger="genrouter"):
        async with AsyncRouter.from_config(fal_config(fal_server), clock=FakeClock()) as router:
            result = await router.generate("a fox", model="flux-dev", on_progress=callback)
    assert result.outputs
    assert len(calls) > 1
    warnings = [r for r in caplog.records if "on_progress" in r.getMessage()]
    assert len(warnings) == 1


def test_the_sync_router_calls_a_plain_callback(fal_server: LoopbackServer, fal: FakeFal) -> None:
    """Router.generate(on_progress=fn) reports the same states, blocking, on the router's loop thread."""
    seen: list[Progress] = []
    threads: set[str] = set()

    def callback(progress: Progress) -> None:
        seen.append(progress)
        threads.add(threading.current_thread().name)

    with Router.from_config(fal_config(fal_server), clock=FakeClock()) as router:
        router.generate("a fox", model="flux-dev", on_progress=callback)
    assert states(seen) == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    assert threads == {"genrouter-portal"}


async def test_agenerate_takes_on_progress(
    fal_server: LoopbackServer, fal: FakeFal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """genrouter.agenerate(..., on_progress=fn) with a discovered config file."""
    path = tmp_path / "genrouter.yaml"
    path.write_text(f"version: 1\nproviders:\n  fal:\n    api_key: {KEY}\n    base_url: {fal_server.url}\n")
    monkeypatch.setenv("GENROUTER_CONFIG", str(path))
    seen: list[Progress] = []
    await genrouter.agenerate("a fox", model="flux-dev", on_progress=seen.append)
    assert states(seen)[-1] is JobState.SUCCEEDED
    assert JobState.QUEUED in states(seen)
    router = genrouter._default_async.pop(asyncio.get_running_loop())
    await router.aclose()


def test_generate_takes_on_progress(
    fal_server: LoopbackServer, fal: FakeFal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """genrouter.generate(..., on_progress=fn), blocking, with a discovered config file."""
    path = tmp_path / "genrouter.yaml"
    path.write_text(f"version: 1\nproviders:\n  fal:\n    api_key: {KEY}\n    base_url: {fal_server.url}\n")
    monkeypatch.setenv("GENROUTER_CONFIG", str(path))
    monkeypatch.setattr(genrouter, "_default_sync", None)
    seen: list[Progress] = []
    try:
        genrouter.generate("a fox", model="flux-dev", on_progress=seen.append)
    finally:
        if genrouter._default_sync is not None:
            genrouter._default_sync.close()
    assert states(seen) == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]


async def test_replicate_logs_arrive_once_each(replicate: LoopbackServer) -> None:
    """Replicate's cumulative logs reach the callback as new lines only."""
    seen: list[Progress] = []
    async with AsyncRouter.from_config(replicate_config(replicate), clock=FakeClock()) as router:
        await router.generate("a fox", model="flux-dev", on_progress=seen.append)
    lines = [line for p in seen for line in p.logs]
    assert lines
    assert len(lines) == len(set(lines))
    assert states(seen)[-1] is JobState.SUCCEEDED


async def test_status_reports_the_queue_position(fal_server: LoopbackServer, fal: FakeFal) -> None:
    """status() of a queued fal job carries its queue position; of a running one, its logs."""
    async with AsyncRouter.from_config(fal_config(fal_server), clock=FakeClock()) as router:
        handle = await router.submit("a fox", model="flux-dev")
        queued = await router.status(handle)
        assert queued.state is JobState.QUEUED
        assert queued.queue_position == 1
        await router.status(handle)
        running = await router.status(handle)
        assert running.state is JobState.RUNNING
        assert running.logs == ["poll 3"]
        await router.cancel(handle)


async def test_status_reports_replicate_logs(replicate: LoopbackServer) -> None:
    """status() of a Replicate prediction that has started carries its log lines."""
    async with AsyncRouter.from_config(replicate_config(replicate), clock=FakeClock()) as router:
        handle = await router.submit("a fox", model="flux-dev")
        status = await router.status(handle)
        while not status.logs and not status.state.is_terminal:
            status = await router.status(handle)
        assert status.logs


async def test_result_takes_on_progress(fal_server: LoopbackServer, fal: FakeFal) -> None:
    """result(handle, on_progress=fn) reports the job it waits for."""
    seen: list[Progress] = []
    async with AsyncRouter.from_config(fal_config(fal_server), clock=FakeClock()) as router:
        handle = await router.submit("a fox", model="flux-dev")
        await router.result(handle, on_progress=seen.append)
    assert states(seen) == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]


async def test_a_backend_that_waits_instead_of_polling_reports_progress_too() -> None:
    """A backend with wait() (like Modal's long poll) reports what each wait returns."""

    async def instant(request: GenerationRequest) -> list[Artifact]:
        return [Artifact(url="data:image/png;base64,iVBORw0KGgo=", content_type="image/png")]

    cfg = {
        "version": 1,
        "providers": {"gpu": {"type": "custom", "models": {"flux-dev": {"endpoint": "gpu/flux-dev"}}}},
    }
    seen: list[Progress] = []
    backend = FunctionBackend(instant, name="gpu")
    async with AsyncRouter.from_config(cfg, backends={"gpu": backend}) as router:
        await router.generate("a fox", model="flux-dev", on_progress=seen.append)
    assert [(p.provider, p.state) for p in seen][-1] == ("gpu", JobState.SUCCEEDED)
