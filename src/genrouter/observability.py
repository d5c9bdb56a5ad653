"""Observability: structured logs, metrics hooks and (optional) OpenTelemetry spans.

- Logs go to the ``genrouter`` logger: each attempt at DEBUG (``"attempt %s"``), each
  request at INFO (``"result"`` / ``"failure"``), with a ``genrouter`` dict in ``extra``.
  Nothing is built unless the logger is enabled for that level.
- A :class:`MetricsHook` passed as ``hooks=[...]`` to :class:`~genrouter.AsyncRouter`
  sees every attempt of :meth:`~genrouter.AsyncRouter.generate` and its end. A hook that
  raises is logged and ignored.
- :class:`OpenTelemetryHook` turns those into spans (needs ``genrouter[otel]``);
  OpenTelemetry is imported only when one is created.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from genrouter.util._secrets import scrub

if TYPE_CHECKING:
    from genrouter.types import Attempt, GenerationRequest, GenerationResult

__all__ = ["MetricsHook", "OpenTelemetryHook", "logger"]

logger = logging.getLogger("genrouter")


@runtime_checkable
class MetricsHook(Protocol):
    """Called by the router as attempts and requests end. Keep it fast; it runs inline."""

    def on_attempt(self, attempt: Attempt, *, model: str, request: GenerationRequest) -> None: ...

    def on_result(
        self,
        result: GenerationResult | None,
        error: BaseException | None,
        *,
        model: str,
        request: GenerationRequest,
        latency_s: float,
    ) -> None: ...


def attempt_ended(
    hooks: Sequence[MetricsHook], attempt: Attempt, request: GenerationRequest, request_id: str, number: int
) -> None:
    """Log one ended attempt (at DEBUG, when enabled) and tell the hooks."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "attempt %s",
            attempt.outcome.value,
            extra={
                "genrouter": {
                    "request_id": request_id,
                    "provider": attempt.provider,
                    "endpoint": attempt.endpoint,
                    "attempt": number,
                    "outcome": attempt.outcome.value,
                    "error": attempt.error,
                    "duration_s": attempt.duration_s,
                    "hedged": attempt.hedged,
                }
            },
        )
    for hook in hooks:
        try:
            hook.on_attempt(attempt, model=request.model, request=request)
        except Exception:
            logger.exception("metrics hook %r failed in on_attempt; ignored", type(hook).__name__)


def request_ended(
    hooks: Sequence[MetricsHook],
    request: GenerationRequest,
    result: GenerationResult | None,
    error: BaseException | None,
    latency_s: float,
) -> None:
    """Log a request's end (at INFO, when enabled) and tell the hooks."""
    if logger.isEnabledFor(logging.INFO):
        if result is not None:
            fields: dict[str, Any] = {
                "model": request.model,
                "provider": result.provider,
                "cost_usd": float(result.cost.amount_usd) if result.cost.amount_usd is not None else None,
                "cost_estimated": result.cost.estimated,
                "estimated_cost_usd": _float(result.estimated_cost_usd),
                "actual_cost_usd": _float(result.actual_cost_usd),
                "latency_s": latency_s,
                "attempts": len(result.attempts),
            }
            logger.info("result", extra={"genrouter": fields})
        else:
            fields = {
                "model": request.model,
                "provider": getattr(error, "provider", None),
                "cost_usd": None,
                "latency_s": latency_s,
                "attempts": len(getattr(error, "attempts", None) or ()),
                "error": scrub(f"{type(error).__name__}: {error}"),
            }
            logger.info("failure", extra={"genrouter": fields})
    for hook in hooks:
        try:
            hook.on_result(result, error, model=request.model, request=request, latency_s=latency_s)
        except Exception:
            logger.exception("metrics hook %r failed in on_result; ignored", type(hook).__name__)


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


class OpenTelemetryHook:
    """A :class:`MetricsHook` that records a ``genrouter.generate`` span per request,
    with a ``genrouter.attempt`` child span per attempt (made when the request ends)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = trace.get_tracer("genrouter", tracer_provider=tracer_provider)
        self._pending: dict[int, list[tuple[Attempt, int]]] = {}

    def on_attempt(self, attempt: Attempt, *, model: str, request: GenerationRequest) -> None:
        self._pending.setdefault(id(request), []).append((attempt, time.time_ns()))

    def on_result(
        self,
        result: GenerationResult | None,
        error: BaseException | None,
        *,
        model: str,
        request: GenerationRequest,
        latency_s: float,
    ) -> None:
        attempts = self._pending.pop(id(request), [])
        end = time.time_ns()
        start = end - int(latency_s * 1e9)
        attributes: dict[str, Any] = {
            "genrouter.model": model,
            "genrouter.outcome": "succeeded" if result is not None else type(error).__name__,
            "genrouter.attempts": len(attempts),
        }
        provider = result.provider if result is not None else getattr(error, "provider", None)
        if provider:
            attributes["genrouter.provider"] = provider
        if result is not None and result.cost.amount_usd is not None:
            attributes["genrouter.cost_usd"] = float(result.cost.amount_usd)
            attributes["genrouter.cost_estimated"] = result.cost.estimated
        if result is not None and result.estimated_cost_usd is not None:
            attributes["genrouter.estimated_cost_usd"] = float(result.estimated_cost_usd)
        span = self._tracer.start_span("genrouter.generate", start_time=start, attributes=attributes)
        if error is not None:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, scrub(str(error))))
        context = self._trace.set_span_in_context(span)
        for attempt, ended in attempts:
            child = self._tracer.start_span(
                "genrouter.attempt",
                context=context,
                start_time=ended - int(attempt.duration_s * 1e9),
                attributes={
                    "genrouter.provider": attempt.provider,
                    "genrouter.endpoint": attempt.endpoint,
                    "genrouter.outcome": attempt.outcome.value,
                    "genrouter.hedged": attempt.hedged,
                },
            )
            child.end(end_time=ended)
        span.end(end_time=end)
