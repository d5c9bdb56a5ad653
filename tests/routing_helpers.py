"""Small builders shared by the routing-intelligence tests."""

from __future__ import annotations

from typing import Any

from genrouter import AsyncRouter
from genrouter.testing import FakeBackend, FakeClock


def provider(name: str, *, price: str | None = "0.01", **entry: Any) -> dict[str, Any]:
    """A custom provider section serving flux-dev inline."""
    model: dict[str, Any] = {"endpoint": f"{name}/flux-dev", **entry}
    if price is not None:
        model["price"] = {"per_image": price}
    return {"type": "custom", "models": {"flux-dev": model}}


def router_over(
    *backends: FakeBackend,
    clock: FakeClock | None = None,
    budgets: list[dict[str, Any]] | None = None,
    prices: dict[str, str] | None = None,
    **routing: Any,
) -> AsyncRouter:
    """A router over FakeBackends, ranked in the order given (priority strategy by default)."""
    providers = {b.name: provider(b.name, price=(prices or {}).get(b.name, "0.01")) for b in backends}
    config: dict[str, Any] = {
        "version": 1,
        "providers": providers,
        "routing": {"default": {"strategy": "priority", **routing}},
    }
    if budgets is not None:
        config["budgets"] = budgets
    return AsyncRouter.from_config(config, backends={b.name: b for b in backends}, clock=clock)
