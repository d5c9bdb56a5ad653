"""The simulated provider's container autoscaler: a queue in front of scaling containers.

Time is whatever clock the caller reads (the simulated backend passes its bound clock,
so a :class:`~genrouter.testing.FakeClock` or a virtual event loop drives it). Every
method takes ``now`` and the model is plain data, so it is exact and repeatable.

**Placement.** A job submitted at ``now`` is placed at once, first come first served,
in the slot (``concurrency_per_container`` per container) that frees first; a starting
container's slots free when it turns warm. Its start time is fixed there and then, so
the job's outcome stays a pure function of its id (which encodes the queue delay).

**Scale up.** When a job finds no free slot, the autoscaler wants
``ceil((busy slots + queued jobs) / concurrency_per_container)`` containers (the job
included) and starts the missing ones at once, each warm ``cold_start_s`` later, up to
``max_containers``; queued jobs then take whichever slot frees first, the new
container's included.

**Scale down.** A container idle (no job running or placed on it) for ``scaledown_s``
leaves, longest idle first, as long as more than ``min_containers`` remain. It is
billed from the moment it started booting until it left (:meth:`container_seconds`).

**Cancel.** A cancelled job frees its slot from ``max(now, its start)`` unless a later
job was already placed behind it (then the slot keeps its plan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from genrouter.backends.simulated._settings import Autoscale
from genrouter.routing.capacity import CapacityFacts

__all__ = ["AutoscaleModel", "Placement"]


@dataclass(slots=True)
class _Container:
    started_at: float
    ready_at: float
    slots: list[float]
    """When each slot is next free (a slot never frees before ``ready_at``)."""
    retired_at: float | None = None

    def idle_since(self) -> float:
        return max(self.ready_at, *self.slots)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where and when a job submitted at ``submitted_at`` will run."""

    submitted_at: float
    start_at: float
    container: int
    slot: int

    @property
    def queued_s(self) -> float:
        """Seconds the job waits for its slot."""
        return self.start_at - self.submitted_at


@dataclass(slots=True)
class _Job:
    start_at: float
    completes_at: float
    container: int
    slot: int


@dataclass(slots=True)
class AutoscaleModel:
    """Containers that scale with the queue (see the module docstring)."""

    spec: Autoscale
    origin: float
    containers: list[_Container] = field(default_factory=list)
    _jobs: dict[str, _Job] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = self.spec.concurrency_per_container
        for _ in range(self.spec.min_containers):
            self.containers.append(_Container(self.origin, self.origin, [self.origin] * c))

    # -- bookkeeping ------------------------------------------------------------------

    def _live(self) -> list[tuple[int, _Container]]:
        return [(i, c) for i, c in enumerate(self.containers) if c.retired_at is None]

    def advance(self, now: float) -> None:
        """Retire containers idle for ``scaledown_s`` by ``now`` (at the time each left)."""
        spec = self.spec
        while True:
            live = self._live()
            if len(live) <= spec.min_containers:
                return
            idle = [(c.idle_since(), i) for i, c in live if c.idle_since() + spec.scaledown_s <= now]
            if not idle:
                return
            since, index = min(idle)
            self.containers[index].retired_at = since + spec.scaledown_s
        # (unreachable)

    def _prune(self, now: float) -> None:
        done = [rid for rid, job in self._jobs.items() if job.completes_at <= now]
        for rid in done:
            del self._jobs[rid]

    # -- placement -----------------------------------------------------------------------

    def place(self, now: float) -> Placement:
        """Where a job submitted at ``now`` runs, scaling up first if it must queue.

        Call :meth:`commit` with the job's completion time before placing another.
        """
        self.advance(now)
        self._prune(now)
        spec = self.spec
        live = self._live()
        free_now = any(c.ready_at <= now and min(c.slots) <= now for _, c in live)
        if not free_now:
            busy = sum(1 for j in self._jobs.values() if j.start_at <= now)
            queued = sum(1 for j in self._jobs.values() if j.start_at > now) + 1
            wanted = min(spec.max_containers, math.ceil((busy + queued) / spec.concurrency_per_container))
            for _ in range(wanted - len(live)):
                ready = now + spec.cold_start_s
                self.containers.append(_Container(now, ready, [ready] * spec.concurrency_per_container))
            live = self._live()
        if not live:  # max_containers ≥ 1, so only min 0 with nothing started yet
            ready = now + spec.cold_start_s
            self.containers.append(_Container(now, ready, [ready] * spec.concurrency_per_container))
            live = self._live()
        best: tuple[float, int, int] | None = None
        for index, container in live:
            for slot, free_at in enumerate(container.slots):
                at = max(now, container.ready_at, free_at)
                if best is None or at < best[0]:
                    best = (at, index, slot)
        assert best is not None
        return Placement(now, best[0], best[1], best[2])

    def next_start(self, now: float) -> float:
        """When a job submitted at ``now`` would start on the containers there now (no scaling)."""
        self.advance(now)
        starts = [max(now, c.ready_at, free) for _, c in self._live() for free in c.slots]
        return min(starts, default=float("inf"))

    def commit(self, request_id: str, placement: Placement, completes_at: float) -> None:
        """Occupy the placed slot until ``completes_at``."""
        container = self.containers[placement.container]
        container.slots[placement.slot] = completes_at
        self._jobs[request_id] = _Job(placement.start_at, completes_at, placement.container, placement.slot)

    def cancel(self, request_id: str, now: float) -> None:
        """Free a cancelled job's slot (see the module docstring)."""
        job = self._jobs.pop(request_id, None)
        if job is None:
            return
        container = self.containers[job.container]
        if container.slots[job.slot] == job.completes_at:
            container.slots[job.slot] = max(now, job.start_at)

    # -- facts ----------------------------------------------------------------------------

    def facts(self, now: float, service_s: float | None = None) -> CapacityFacts:
        """Backlog, running jobs and containers at ``now``."""
        self.advance(now)
        self._prune(now)
        live = [c for _, c in self._live()]
        running = sum(1 for j in self._jobs.values() if j.start_at <= now)
        return CapacityFacts(
            backlog=len(self._jobs) - running,
            running=running,
            containers_warm=sum(1 for c in live if c.ready_at <= now),
            containers_starting=sum(1 for c in live if c.ready_at > now),
            concurrency_per_container=self.spec.concurrency_per_container,
            max_containers=self.spec.max_containers,
            cold_start_s=self.spec.cold_start_s,
            service_s=service_s,
        )

    def container_seconds(self, start: float, end: float) -> float:
        """Container-seconds (booting included) billed between ``start`` and ``end``."""
        self.advance(end)
        total = 0.0
        for c in self.containers:
            until = end if c.retired_at is None else min(end, c.retired_at)
            total += max(0.0, until - max(start, c.started_at))
        return total

    def reserve(self, containers: int, now: float) -> None:
        """Start containers now until ``containers`` are live (pre-warming, as an oracle would)."""
        self.advance(now)
        c = self.spec.concurrency_per_container
        for _ in range(min(containers, self.spec.max_containers) - len(self._live())):
            ready = now + self.spec.cold_start_s
            self.containers.append(_Container(now, ready, [ready] * c))
