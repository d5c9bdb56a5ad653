"""Properties of the progress and reservation arithmetic (hypothesis)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from genrouter import BudgetExceededError
from genrouter.config import Budget
from genrouter.engine._progress import new_lines
from genrouter.routing.budgets import BudgetGuard
from genrouter.routing.reservations import Hold
from genrouter.routing.store import MemoryStateStore


@given(
    total=st.integers(min_value=0, max_value=40),
    window=st.integers(min_value=1, max_value=10),
    data=st.data(),
)
def test_new_lines_are_exactly_the_lines_added_since_the_last_tail(
    total: int, window: int, data: st.DataObject
) -> None:
    """Between two tails of one growing log (distinct lines), the new lines are those added."""
    log = [f"line {n}" for n in range(total)]
    before_end = data.draw(st.integers(min_value=0, max_value=total))
    now_end = data.draw(st.integers(min_value=before_end, max_value=total))
    before, now = log[:before_end][-window:], log[:now_end][-window:]
    assert new_lines(before, now) == log[max(before_end, now_end - window) : now_end]


AMOUNTS = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("0.5"), places=3)


@given(
    limit=st.decimals(min_value=Decimal(0), max_value=Decimal(2), places=2),
    steps=st.lists(st.tuples(st.sampled_from(["reserve", "settle", "release"]), AMOUNTS), max_size=60),
)
def test_spend_and_holds_never_pass_the_limit_when_costs_match_estimates(
    limit: Decimal, steps: list[tuple[str, Decimal]]
) -> None:
    """Whatever order holds are taken, settled at their estimate or released: spend + holds <= limit."""
    store = MemoryStateStore()
    guard = BudgetGuard([Budget(limit_usd=limit, period="total")], store)
    holds: list[Hold] = []

    async def play() -> None:
        for action, amount in steps:
            if action == "reserve":
                try:
                    hold = await guard.reserve("a", amount)
                except BudgetExceededError:
                    continue
                assert hold is not None
                holds.append(hold)
            elif holds:
                hold = holds.pop(0)
                hold.settle_cost(hold.amount) if action == "settle" else hold.release()
            assert store.spend("*", "total") + guard.ledger.held("*", "total") <= limit

    asyncio.run(play())
