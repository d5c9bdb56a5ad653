"""Spend caps per provider and period (``budgets:`` in the config).

Spend is recorded from each result's cost and kept in the state store, so with a
Redis store several processes share one budget. A deployment is excluded once its
provider's spend (or the global spend) plus the reservations held on it has reached
a cap, or when the request's estimated cost would cross it. Each submission reserves
its estimate first and settles to its cost when it ends
(:mod:`genrouter.routing.reservations`), so concurrent requests cannot all pass the
same check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from genrouter.config import Budget
from genrouter.engine._clock import Clock, MonotonicClock
from genrouter.routing.reservations import BudgetLine, Hold, Ledger, MemoryLedger, refused
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
        *,
        clock: Clock | None = None,
    ) -> None:
        self.budgets = list(budgets)
        self.store = store
        self._wall_clock = wall_clock
        shared = getattr(store, "reservation_ledger", None)
        self.ledger: Ledger = shared() if shared is not None else MemoryLedger(store)
        """Where reservations are held: Redis for a shared store, else this process."""
        self._clock: Clock = clock or MonotonicClock()
        self._kept: dict[tuple[str, str], tuple[Hold, float]] = {}

    def __bool__(self) -> bool:
        return bool(self.budgets)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall_clock(), UTC)

    def _covering(self, provider: str) -> list[Budget]:
        return [b for b in self.budgets if b.provider in (None, provider)]

    def exclusion(self, provider: str, estimate: Decimal | None) -> str | None:
        """Why ``provider`` cannot take a request costing ``estimate`` now, or None."""
        if self._kept:
            self._sweep_kept()
        now = self._now()
        for budget in self._covering(provider):
            scope = budget.provider or ALL_PROVIDERS
            period = period_key(budget.period, now)
            spent = self.store.spend(scope, period)
            held = self.ledger.held(scope, period)
            label = f"{budget.provider or 'all providers'} per {budget.period}"
            figures = f"${spent}" + (f" spent + ${held} reserved" if held else "")
            if spent + held >= budget.limit_usd:
                return f"budget reached: {figures} of ${budget.limit_usd} for {label}"
            if estimate is not None and spent + held + estimate > budget.limit_usd:
                limit = budget.limit_usd
                return f"budget would be exceeded: {figures} + est. ${estimate} > ${limit} for {label}"
        return None

    def record(self, provider: str, amount: Decimal | None) -> None:
        """Add a result's cost to every budget that covers its provider."""
        if amount is None or not self.budgets:
            return
        now = self._now()
        for budget in self._covering(provider):
            scope = budget.provider or ALL_PROVIDERS
            self.store.add_spend(scope, period_key(budget.period, now), amount)

    def _lines(self, provider: str) -> list[BudgetLine]:
        now = self._now()
        return [
            BudgetLine(
                b.provider or ALL_PROVIDERS,
                period_key(b.period, now),
                b.limit_usd,
                f"{b.provider or 'all providers'} per {b.period}",
            )
            for b in self._covering(provider)
        ]

    async def reserve(self, provider: str, estimate: Decimal | None) -> Hold | None:
        """Hold ``estimate`` on every budget covering ``provider``; None when none does.

        Raises :class:`~genrouter.errors.BudgetExceededError` (not retryable there)
        when spend + reservations + estimate would exceed a limit.
        """
        lines = self._lines(provider)
        if not lines:
            return None
        if self._kept:
            self._sweep_kept()
        amount = estimate if estimate is not None and estimate > 0 else Decimal(0)
        hold = Hold(self, provider, lines, amount)
        reason = await self.ledger.reserve(hold.id, lines, amount)
        if reason is not None:
            raise refused(provider, reason)
        return hold

    def keep(self, hold: Hold, provider_request_id: str, keep_s: float) -> None:
        """A submitted job keeps its hold until :meth:`settle_job`, :meth:`release_job`, or
        ``keep_s`` (its deadline: by then the provider has been told to stop it) has passed.

        A job collected after that still has its cost recorded; the cap only keeps a job
        nobody collects (webhook users) from holding budget forever.
        """
        self._sweep_kept()
        self._kept[(hold.provider, provider_request_id)] = (hold, self._clock.now() + keep_s)

    def _sweep_kept(self) -> None:
        now = self._clock.now()
        for key, (hold, until) in list(self._kept.items()):
            if until > now:
                break  # kept in the order taken: the rest are younger (near enough)
            del self._kept[key]
            hold.release()

    def settle_job(self, provider: str, provider_request_id: str, amount: Decimal | None) -> None:
        """A collected job's cost: settles its hold, or is recorded (a job from another router)."""
        kept = self._kept.pop((provider, provider_request_id), None)
        if kept is not None:
            kept[0].settle_cost(amount)
        else:
            self.record(provider, amount)

    def release_job(self, provider: str, provider_request_id: str) -> None:
        """A cancelled or failed job's hold is dropped."""
        kept = self._kept.pop((provider, provider_request_id), None)
        if kept is not None:
            kept[0].release()
