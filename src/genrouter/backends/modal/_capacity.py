"""Capacity facts of a live Modal deployment, for spillover routing.

Modal's ``Function.get_current_stats()`` reports ``backlog`` (inputs waiting) and
``num_total_runners`` (containers up), and newer clients ``num_running_inputs``. The
router reads capacity synchronously while planning, so :class:`ModalCapacity` serves
the last answer and refreshes it in the background at most every ``ttl_s`` (default
2 s); until the first answer arrives it reports nothing, and routing uses the observed
p95. A transport without ``current_stats`` (the in-process one) reports nothing.

Mapping: ``backlog`` → backlog; ``num_total_runners`` → warm containers (Modal does not
say which are still booting); ``num_running_inputs`` → running, else one per runner
(as if every container were busy, which errs towards spilling); one input per
container (the class's ``@modal.concurrent`` setting is not reported); no known
ceiling; the section's ``cold_start_s`` as the cold start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from genrouter.routing.capacity import CapacityFacts

__all__ = ["ModalCapacity", "facts_from_stats"]


def facts_from_stats(stats: Mapping[str, Any], cold_start_s: float | None) -> CapacityFacts:
    """:class:`CapacityFacts` from a ``current_stats`` mapping (see the module docstring)."""
    runners = int(stats.get("num_total_runners") or 0)
    running = stats.get("num_running_inputs")
    return CapacityFacts(
        backlog=int(stats.get("backlog") or 0),
        running=runners if running is None else int(running),
        containers_warm=runners,
        cold_start_s=cold_start_s,
    )


class ModalCapacity:
    """The latest facts per model id, refreshed in the background (see the module docstring)."""

    def __init__(self, transport: Callable[[], Any], cold_start_s: float | None, ttl_s: float = 2.0) -> None:
        self._transport = transport
        self._cold_start_s = cold_start_s
        self._ttl_s = ttl_s
        self._facts: dict[str, tuple[float, CapacityFacts | None]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    def use_cold_start(self, seconds: float) -> None:
        """Predict with this cold start from now on (the class's measured starts), cached facts too."""
        self._cold_start_s = seconds
        for model_id, (at, facts) in list(self._facts.items()):
            if facts is not None:
                self._facts[model_id] = (at, dataclasses.replace(facts, cold_start_s=seconds))

    def facts(self, model_id: str) -> CapacityFacts | None:
        """The cached facts for ``model_id``; starts a refresh when they are stale."""
        cached = self._facts.get(model_id)
        if (
            cached is None or time.monotonic() - cached[0] >= self._ttl_s
        ) and model_id not in self._refreshing:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._refreshing[model_id] = loop.create_task(self._refresh(model_id))
        return None if cached is None else cached[1]

    async def _refresh(self, model_id: str) -> None:
        try:
            query = getattr(self._transport(), "current_stats", None)
            facts = None
            if query is not None:
                try:
                    facts = facts_from_stats(await query(model_id), self._cold_start_s)
                except Exception:  # stats are advice: a failed query must never fail routing
                    facts = None
            self._facts[model_id] = (time.monotonic(), facts)
        finally:
            self._refreshing.pop(model_id, None)

    async def aclose(self) -> None:
        """Stop refreshes in flight."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
