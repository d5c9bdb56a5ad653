"""Spend caps per provider and period."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from genrouter import BudgetExceededError, ConfigError
from genrouter.config import Budget, parse_config
from genrouter.routing.budgets import BudgetGuard, period_key
from genrouter.routing.store import MemoryStateStore
from genrouter.testing import FakeBackend
from routing_helpers import router_over

AT = datetime(2026, 12, 2, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "key"),
    [
        ("hour", "2026-12-02T07"),
        ("day", "2026-12-02"),
        ("week", "2026-W49"),
        ("month", "2026-12"),
        ("total", "total"),
    ],
)
def test_period_keys_are_calendar_periods_in_utc(period: str, key: str) -> None:
    """Spend is bucketed by UTC calendar period."""
    assert period_key(period, AT) == key


def test_a_provider_at_its_cap_is_excluded() -> None:
    """Once spend reaches the limit, the provider is excluded with the figures."""
    store = MemoryStateStore()
    guard = BudgetGuard(
        [Budget(provider="a", limit_usd=Decimal("1"), period="day")], store, lambda: AT.timestamp()
    )
    guard.record("a", Decimal("1"))
    reason = guard.exclusion("a", Decimal("0.01"))
    assert reason is not None
    assert "budget reached" in reason
    assert guard.exclusion("b", Decimal("0.01")) is None


def test_a_request_that_would_cross_the_cap_is_excluded() -> None:
    """Spend plus the estimate may not exceed the limit."""
    store = MemoryStateStore()
    guard = BudgetGuard([Budget(provider="a", limit_usd=Decimal("1"))], store, lambda: AT.timestamp())
    guard.record("a", Decimal("0.95"))
    assert guard.exclusion("a", Decimal("0.01")) is None
    assert "would be exceeded" in (guard.exclusion("a", Decimal("0.10")) or "")


def test_a_global_budget_covers_every_provider() -> None:
    """A budget without provider counts everyone's spend."""
    store = MemoryStateStore()
    guard = BudgetGuard([Budget(limit_usd=Decimal("1"))], store, lambda: AT.timestamp())
    guard.record("a", Decimal("0.6"))
    guard.record("b", Decimal("0.6"))
    assert guard.exclusion("c", None) is not None


def test_a_new_period_starts_from_zero() -> None:
    """Yesterday's spend does not count today."""
    store = MemoryStateStore()
    now = [AT.timestamp()]
    guard = BudgetGuard([Budget(provider="a", limit_usd=Decimal("1"))], store, lambda: now[0])
    guard.record("a", Decimal("1"))
    now[0] += 24 * 3600
    assert guard.exclusion("a", Decimal("0.5")) is None


async def test_an_exhausted_provider_is_skipped_for_the_next() -> None:
    """With a's cap reached, requests go to b."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = router_over(a, b, budgets=[{"provider": "a", "limit_usd": "0.02", "period": "day"}])
    providers = [(await router.generate("a fox", model="flux-dev")).provider for _ in range(4)]
    assert providers == ["a", "a", "b", "b"]


async def test_nothing_left_raises_budget_exceeded() -> None:
    """When every deployment is over budget, the request fails with BudgetExceededError."""
    a = FakeBackend(name="a")
    router = router_over(a, budgets=[{"limit_usd": "0.01", "period": "total"}])
    await router.generate("a fox", model="flux-dev")
    with pytest.raises(BudgetExceededError, match="budget reached"):
        await router.generate("a fox", model="flux-dev")
    assert a.submit_count == 1


def test_a_budget_naming_an_unknown_provider_is_a_config_error() -> None:
    """budgets[i].provider must be a configured provider."""
    with pytest.raises(ConfigError, match=r"budgets\[0\]\.provider"):
        parse_config(
            {
                "version": 1,
                "providers": {"sim": {"type": "simulated"}},
                "budgets": [{"provider": "fal", "limit_usd": 5}],
            }
        )


async def test_explain_shows_the_budget_exclusion() -> None:
    """explain() lists an over-budget deployment with the reason."""
    a, b = FakeBackend(name="a"), FakeBackend(name="b")
    router = router_over(a, b, budgets=[{"provider": "a", "limit_usd": "0.01"}])
    await router.generate("a fox", model="flux-dev")
    plan = router.explain("a fox", model="flux-dev")
    excluded = {c.provider: c.excluded for c in plan.candidates if c.excluded}
    assert "budget reached" in excluded["a"]
