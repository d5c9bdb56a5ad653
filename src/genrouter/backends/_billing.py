"""What a backend needs to report the cost a provider actually billed.

A backend that learns what a job was billed (fal's ``x-fal-billable-units``, Replicate's
``metrics.predict_time`` for per-second prices, a self-hosted class's GPU-seconds)
returns ``GenerationResult.cost = Cost(amount_usd, estimated=False, basis=...)``; the
router keeps such a cost as it is, and prices a result from its outputs only when the
backend reported none (``estimated=True``). Prices live in the catalog, so the backend
stores the deployment's price in the job at submit time (:func:`price_data`, JSON, so
it survives a restart) and multiplies it out at fetch time (:func:`billed_cost`).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from genrouter.types import Cost

if TYPE_CHECKING:
    from genrouter.catalog import Deployment

__all__ = ["billed_cost", "price_data"]

_MILLIONTH = Decimal("0.000001")


def price_data(deployment: Deployment) -> dict[str, str] | None:
    """The deployment's price as job data (``{"unit", "amount", "describe"}``), or None."""
    pricing = deployment.pricing
    if pricing is None:
        return None
    return {"unit": pricing.unit.value, "amount": str(pricing.amount), "describe": pricing.describe()}


def billed_cost(price: Any, units: Any, *, what: str, unit: str | None = None) -> Cost | None:
    """``units`` × the stored price as an actual cost, or None when either is unusable.

    ``what`` names where the units came from (``"x-fal-billable-units"``); ``unit``, when
    given, is the only price unit the figure may be multiplied with (a GPU-seconds figure
    means nothing against a per-image price).
    """
    if not isinstance(price, dict) or (unit is not None and price.get("unit") != unit):
        return None
    try:
        amount = Decimal(str(price["amount"]))
        count = Decimal(str(units))
    except (KeyError, InvalidOperation, ValueError):
        return None
    if not count.is_finite() or count < 0 or not amount.is_finite():
        return None
    total = (amount * count).quantize(_MILLIONTH).normalize()
    if total == total.to_integral_value():
        total = total.quantize(Decimal(1))
    return Cost(
        amount_usd=total,
        estimated=False,
        basis=f"{count.normalize():f} billable units ({what}) × {price.get('describe', amount)}",
    )
