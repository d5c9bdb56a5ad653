"""Where routing state lives: deployment health, Retry-After blocks, disabled providers.

:class:`MemoryStateStore` keeps it in this process (the default). The interface is
synchronous on purpose: the planner reads it on every request and must not await;
a shared store keeps a local snapshot and synchronises in the background.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from genrouter.routing.health import DeploymentHealth

if TYPE_CHECKING:
    from genrouter.config import CircuitBreakerPolicy

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

    def spend(self, scope: str, period: str) -> Decimal:
        """Dollars spent by ``scope`` (a provider, or ``*``) in ``period``."""
        ...

    def add_spend(self, scope: str, period: str, amount: Decimal) -> None:
        """Add ``amount`` to ``scope``'s spend in ``period``."""
        ...

    def observe_success(
        self,
        deployment_key: str,
        latency_s: float,
        now: float,
        *,
        queued_s: float | None = None,
        running_s: float | None = None,
    ) -> None:
        """Record a success (latency, and queue/run time when known)."""
        ...

    def observe_failure(self, deployment_key: str, now: float, breaker: CircuitBreakerPolicy) -> None:
        """Record a failure that counts against the deployment's circuit breaker."""
        ...


class MemoryStateStore:
    """In-process routing state."""

    def __init__(self) -> None:
        self._health: dict[str, DeploymentHealth] = {}
        self._blocked: dict[str, float] = {}
        self._disabled: dict[str, str] = {}
        self._spend: dict[tuple[str, str], Decimal] = {}

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

    def spend(self, scope: str, period: str) -> Decimal:
        """Dollars spent by ``scope`` in ``period``."""
        return self._spend.get((scope, period), Decimal(0))

    def add_spend(self, scope: str, period: str, amount: Decimal) -> None:
        """Add ``amount`` to ``scope``'s spend in ``period``."""
        key = (scope, period)
        self._spend[key] = self._spend.get(key, Decimal(0)) + amount

    def observe_success(
        self,
        deployment_key: str,
        latency_s: float,
        now: float,
        *,
        queued_s: float | None = None,
        running_s: float | None = None,
    ) -> None:
        """Record a success (latency, and queue/run time when known)."""
        self.health(deployment_key).record_success(latency_s, now, queued_s=queued_s, running_s=running_s)

    def observe_failure(self, deployment_key: str, now: float, breaker: CircuitBreakerPolicy) -> None:
        """Record a failure that counts against the deployment's circuit breaker."""
        self.health(deployment_key).record_failure(
            now,
            breaker.failure_threshold,
            breaker.cooldown_s,
            failure_rate_threshold=breaker.failure_rate_threshold,
            minimum_requests=breaker.minimum_requests,
            window_s=breaker.window_s,
        )
