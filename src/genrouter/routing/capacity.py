"""Capacity facts a backend reports about a deployment, for spillover routing.

A backend that knows how busy a deployment is (a self-hosted GPU class that
autoscales, or the simulated provider with ``autoscale:``) implements
:class:`ReportsCapacity`: ``capacity(deployment)`` returns :class:`CapacityFacts`
(or None when it knows nothing now). It is synchronous and must be cheap: the router
reads it while planning every request. A backend whose facts come from a remote call
(Modal's ``get_current_stats``) serves a cached value and refreshes it in the
background.

Nothing here knows a provider: the facts are plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from genrouter.catalog import Deployment

__all__ = ["CapacityFacts", "ReportsCapacity"]


@dataclass(frozen=True, slots=True)
class CapacityFacts:
    """How busy a deployment is now, as its provider sees it.

    ``backlog``: accepted jobs waiting for a slot; ``running``: jobs in a slot;
    ``containers_warm``: containers able to serve now; ``containers_starting``: containers
    booting (ready within ``cold_start_s``); ``concurrency_per_container``: jobs one
    container runs at once; ``max_containers``: the autoscaler's ceiling (None: unknown,
    taken as no scaling beyond the containers there now); ``cold_start_s``: how long a new
    container takes to serve (None: unknown, taken as never within the SLO);
    ``service_s``: the backend's own idea of one job's run time (None: the router's
    observations decide).
    """

    backlog: int
    running: int
    containers_warm: int
    containers_starting: int = 0
    concurrency_per_container: int = 1
    max_containers: int | None = None
    cold_start_s: float | None = None
    service_s: float | None = None

    def describe(self) -> str:
        """One line: ``backlog 3, running 4, containers 4 warm + 2 starting``."""
        return (
            f"backlog {self.backlog}, running {self.running}, containers "
            f"{self.containers_warm} warm + {self.containers_starting} starting"
        )


@runtime_checkable
class ReportsCapacity(Protocol):
    """A backend that reports :class:`CapacityFacts` for its deployments."""

    def capacity(self, deployment: Deployment) -> CapacityFacts | None:
        """The deployment's capacity facts now (cheap, no I/O on the caller's path)."""
        ...
