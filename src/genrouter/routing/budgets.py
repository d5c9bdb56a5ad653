"""Spend caps per provider and period (``budgets:`` in the config).

Spend is recorded from each result's cost and kept in the state store, so with a
Redis store several processes share one budget. A deployment is excluded once its
provider's spend (or the global spend) has reached a cap, or when the request's
estimated cost would cross it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from genrouter.config import Budget
from genrouter.routing.store import StateStore

__all__ = ["ALL_PROVIDERS", "BudgetGuard", "period_key"]

ALL_PROVIDERS = "*"
"""The scope of a budget that covers every provider."""


def period_key(period: str, at: datetime) -> str:
    """The calendar period (UTC) ``at`` falls in: ``2026-12-02T07``, ``2026-12-02``, ``2026-W49``…"""
    at = at.astimezone(UTC)
    if period == "hour":
        return at.strftime("%Y-%m-%dT%H")
    if period == "day":
        return at.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = at.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return at.strftime("%Y-%m")
    return "total"


class BudgetGuard:
    """Checks and records spend against the configured budgets."""

    def __init__(
        self,
        budgets: Sequence[Budget],
        store: StateStore,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.budgets = list(budgets)
        self.store = store
        self._wall_clock = wall_clock

    def __bool__(self) -> bool:
        return bool(self.budgets)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall_clock(), UTC)

    def _covering(self, provider: str) -> list[Budget]:
        return [b for b in self.budgets if b.provider in (None, provider)]

    def exclusion(self, provider: str, estimate: Decimal | None) -> str | None:
        """Why ``provider`` cannot take a request costing ``estimate`` now, or None."""
        now = self._now()
        for budget in self._covering(provider):
            scope = budget.provider or ALL_PROVIDERS
            spent = self.store.spend(scope, period_key(budget.period, now))
            label = f"{budget.provider or 'all providers'} per {budget.period}"
            if spent >= budget.limit_usd:
                return f"budget reached: ${spent} of ${budget.limit_usd} for {label}"
            if estimate is not None and spent + estimate > budget.limit_usd:
                return (
                    f"budget would be exceeded: ${spent} + est. ${estimate} > ${budget.limit_usd} for {label}"
                )
        return None

    def record(self, provider: str, amount: Decimal | None) -> None:
        """Add a result's cost to every budget that covers its provider."""
        if amount is None or not self.budgets:
            return
        now = self._now()
        for budget in self._covering(provider):
            scope = budget.provider or ALL_PROVIDERS
            self.store.add_spend(scope, period_key(budget.period, now), amount)
