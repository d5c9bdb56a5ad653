"""Shared fixtures. Every test runs with the network blocked except loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from genrouter.engine import _testing_mode

# The loopback-fake fixtures many files share (fal_server, fal, replicate_server, replicate, comfy, routers).
pytest_plugins = ["loopback"]

_LOOPBACK = ("127.", "::1", "localhost")


def _guard(original: Any) -> Any:
    def connect(self: socket.socket, address: Any, *args: Any, **kwargs: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0])
            if not host.startswith(_LOOPBACK):
                raise RuntimeError(f"test tried to reach the network: {address!r}")
        return original(self, address, *args, **kwargs)

    return connect


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection outside loopback fails the test."""
    monkeypatch.setattr(socket.socket, "connect", _guard(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guard(socket.socket.connect_ex))


@pytest.fixture(autouse=True)
def _reset_testing_mode() -> Iterator[None]:
    """Each test starts with real backoff; tests opt in to set_testing()."""
    yield
    _testing_mode.enabled = False


@pytest.fixture(autouse=True)
def _no_provider_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see real credentials or a config from the environment."""
    for name in (
        "FAL_KEY",
        "FAL_KEY_ID",
        "FAL_KEY_SECRET",
        "REPLICATE_API_TOKEN",
        "MODAL_TOKEN_ID",
        "MODAL_TOKEN_SECRET",
        "GENROUTER_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
