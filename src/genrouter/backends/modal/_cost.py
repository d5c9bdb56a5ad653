"""What a Modal result cost, and how long a Modal request is expected to take.

**Cost** of a result whose class reported ``gpu_seconds`` (everything the GPU was held for:
its share of the batch, LoRA or checkpoint loading, encoding the outputs):

    (gpu_seconds + cold_start_s) × the per-GPU-second price of the GPU that ran

``cold_start_s`` is the container's measured start, which the class reports on the first
result each container serves (that request waited for it, and the container was billed for
it); the GPU that ran is the result's ``gpu`` (``H100``, ``A100-80GB``...), priced from
``providers/modal.yaml``'s ``gpu_prices``, so an A100 fallback is billed as an A100. A GPU
type without a listed price is charged the deployment's own price. Such a cost is actual
(``estimated=False``). When Modal reported no warm container at submit but the result
carries no measured start (another request's container start served it), the backend's
expected cold start is added and the cost is ``estimated=True``.

**Latency** before observations: ``1.2 × gpu_seconds_per_output + 1 s + P(cold) × expected
cold start``: P(cold) is the share of this backend's submits that found no warm container
(0 before any), the expected cold start the mean of the container starts the class has
reported, or the section's ``cold_start_s`` before any. The same expected start feeds the
live capacity prediction (``_modal_capacity``), which knows when no container is warm.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from genrouter.catalog import PriceUnit, Pricing
from genrouter.types import Cost

__all__ = ["ColdStarts", "result_cost"]

_MICRO = Decimal("0.000001")


class ColdStarts:
    """The container starts this backend has seen reported, and the expected one."""

    def __init__(self, default_s: float) -> None:
        self.default_s = default_s
        self.count = 0
        self.total_s = 0.0
        self.submits = 0
        self.cold_submits = 0

    def saw_submit(self, cold: bool | None) -> None:
        """Record whether a submit found no warm container (None: unknown, not counted)."""
        if cold is not None:
            self.submits += 1
            self.cold_submits += int(cold)

    @property
    def cold_share(self) -> float:
        """Share of counted submits that found no warm container (0 before any)."""
        return self.cold_submits / self.submits if self.submits else 0.0

    def observe(self, seconds: Any) -> None:
        """Record a start a result reported (ignored unless a non-negative number)."""
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
            self.count += 1
            self.total_s += float(seconds)

    @property
    def expected_s(self) -> float:
        """The mean reported start, or ``default_s`` before any report."""
        return self.total_s / self.count if self.count else self.default_s


def _money(price: Decimal, seconds: Decimal) -> Decimal:
    return (price * seconds).quantize(_MICRO, rounding=ROUND_HALF_EVEN).normalize()


def result_cost(
    value: Mapping[str, Any],
    job_data: Mapping[str, Any],
    *,
    gpu_prices: Mapping[str, Pricing],
    expected_cold_start_s: float,
) -> Cost:
    """The cost of one result dict (see the module docstring); unknown when nothing prices it."""
    price_text = job_data.get("price_per_gpu_second")
    gpu_s = value.get("gpu_seconds")
    if price_text is None or not isinstance(gpu_s, int | float) or isinstance(gpu_s, bool):
        return Cost()
    gpu = value.get("gpu")
    listed = gpu_prices.get(gpu) if isinstance(gpu, str) else None
    if listed is not None and listed.unit is PriceUnit.PER_GPU_SECOND:
        price, price_basis = listed.amount, f"{gpu} {listed.describe()}"
    else:
        price = Decimal(str(price_text))
        price_basis = job_data.get("price_basis") or f"${price_text} per_gpu_second"
        if isinstance(gpu, str) and gpu != "cpu":
            price_basis = f"{price_basis} (no listed price for {gpu})"
    seconds = Decimal(repr(float(gpu_s)))
    parts = [f"{float(gpu_s):.3f} GPU-s held"]
    estimated = False
    measured_start = value.get("cold_start_s")
    if isinstance(measured_start, int | float) and not isinstance(measured_start, bool):
        seconds += Decimal(repr(float(measured_start)))
        parts.append(f"{float(measured_start):.3f} s container start (measured)")
    elif job_data.get("cold_start") is True:
        seconds += Decimal(repr(expected_cold_start_s))
        parts.append(f"{expected_cold_start_s:g} s cold start: no warm container at submit")
        estimated = True
    basis = f"({' + '.join(parts)}) × {price_basis}"
    return Cost(amount_usd=_money(price, seconds), estimated=estimated, basis=basis)
