"""Where routing state lives: deployment health, Retry-After blocks, disabled providers.

:class:`MemoryStateStore` keeps it in this process (the default). The interface is
synchronous on purpose: the planner reads it on every request and must not await;
a shared store keeps a local snapshot and synchronises in the background.
"""

from __future__ import annotations

from typing import Protocol

from genrouter.routing.health import DeploymentHealth

__all__ = ["MemoryStateStore", "StateStore"]


class StateStore(Protocol):
    """Routing state shared by every request of a router."""

    def health(self, deployment_key: str) -> DeploymentHealth:
        """The health record of a deployment (created empty on first use)."""
        ...

    def blocked_until(self, provider: str) -> float:
        """Clock time before which no request may go to ``provider`` (0 if none)."""
        ...

    def block(self, provider: str, until: float) -> None:
        """Honour a Retry-After: nothing goes to ``provider`` before ``until``."""
        ...

    def disabled_reason(self, provider: str) -> str | None:
        """Why ``provider`` is disabled (authentication or payment failure), or None."""
        ...

    def disable(self, provider: str, reason: str) -> None:
        """Disable ``provider`` until the config is reloaded."""
        ...


class MemoryStateStore:
    """In-process routing state."""

    def __init__(self) -> None:
        self._health: dict[str, DeploymentHealth] = {}
        self._blocked: dict[str, float] = {}
        self._disabled: dict[str, str] = {}

    def health(self, deployment_key: str) -> DeploymentHealth:
        """The health record of a deployment (created empty on first use)."""
        record = self._health.get(deployment_key)
        if record is None:
            record = self._health[deployment_key] = DeploymentHealth()
        return record

    def blocked_until(self, provider: str) -> float:
        """Clock time before which no request may go to ``provider`` (0 if none)."""
        return self._blocked.get(provider, 0.0)

    def block(self, provider: str, until: float) -> None:
        """Honour a Retry-After; a later block never shortens an earlier one."""
        if until > self._blocked.get(provider, 0.0):
            self._blocked[provider] = until

    def disabled_reason(self, provider: str) -> str | None:
        """Why ``provider`` is disabled, or None."""
        return self._disabled.get(provider)

    def disable(self, provider: str, reason: str) -> None:
        """Disable ``provider`` until the config is reloaded."""
        self._disabled[provider] = reason
