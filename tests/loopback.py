"""Shared fixtures for tests that drive an AsyncRouter against the loopback fal and Replicate fakes.

Registered for every test file by ``pytest_plugins`` in conftest.py; a file that needs a
differently configured fake defines its own fixture of the same name, which wins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from fakes.comfy import FakeComfy, start_comfy
from fakes.fal import DEFAULT_KEY, Behaviour, FakeFal, start_server
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer, serve
from genrouter import AsyncRouter

# fal's fake answers at once: no polls in the queue, none running.
NO_WAIT = Behaviour(queue_polls=0, progress_polls=0)


@pytest.fixture(scope="module")
def fal_server() -> Iterator[LoopbackServer]:
    """One fal fake server per test module; each test installs a fresh FakeFal on it."""
    server = start_server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicate_server() -> Iterator[LoopbackServer]:
    """One Replicate fake server per test module; each test installs a fresh FakeReplicate on it."""
    with serve(FakeReplicate()) as running:
        yield running


@pytest.fixture(scope="module")
def comfy_server() -> Iterator[LoopbackServer]:
    """One ComfyUI fake server per test module; each test installs a fresh FakeComfy on it."""
    server = start_comfy()
    yield server
    server.stop()


@pytest.fixture
def comfy(comfy_server: LoopbackServer) -> FakeComfy:
    """A fresh FakeComfy on the module's ComfyUI server."""
    fake = FakeComfy()
    comfy_server.handler = fake
    return fake


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    """A fresh FakeFal (default key) that answers without queue or progress polls."""
    return install_fal(fal_server, behaviour=NO_WAIT)


@pytest.fixture
def replicate(replicate_server: LoopbackServer) -> FakeReplicate:
    """A fresh FakeReplicate on the module's Replicate server."""
    fake = FakeReplicate()
    replicate_server.handler = fake
    return fake


def install_fal(server: LoopbackServer, **options: Any) -> FakeFal:
    """A fresh FakeFal built with ``options``, installed as ``server``'s handler."""
    fake = FakeFal(**options)
    server.handler = fake
    return fake


def fal_section(server: LoopbackServer, api_key: str = DEFAULT_KEY, **extra: Any) -> dict[str, Any]:
    """A ``fal`` provider section pointed at the fake on ``server`` (``extra`` merged in)."""
    return {"api_key": api_key, "base_url": server.url, **extra}


def replicate_section(server: LoopbackServer, **extra: Any) -> dict[str, Any]:
    """A ``replicate`` provider section pointed at the fake on ``server`` (``extra`` merged in)."""
    return {"api_token": TOKEN, "base_url": server.url, **extra}


class Routers:
    """Builds AsyncRouters from config and closes every one it built."""

    def __init__(self) -> None:
        self._made: list[AsyncRouter] = []

    def __call__(self, source: dict[str, Any], **options: Any) -> AsyncRouter:
        router = AsyncRouter.from_config(source, **options)
        self._made.append(router)
        return router

    async def aclose(self) -> None:
        for router in self._made:
            await router.aclose()


@pytest.fixture
async def routers() -> AsyncIterator[Routers]:
    """A router builder whose routers are closed when the test ends."""
    made = Routers()
    yield made
    await made.aclose()
