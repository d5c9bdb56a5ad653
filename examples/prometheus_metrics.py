"""A genrouter MetricsHook exporting Prometheus metrics (needs ``prometheus_client``).

hook = PrometheusHook()
router = AsyncRouter.from_config("genrouter.yaml", hooks=[hook])
prometheus_client.start_http_server(9000)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from genrouter import Attempt, GenerationRequest, GenerationResult


class PrometheusHook:
    """Requests, errors by type, latency and spend (by provider), plus attempts by outcome."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw = {"registry": registry} if registry is not None else {}
        self.requests = Counter("genrouter_requests", "Requests", ["model", "outcome"], **kw)
        self.errors = Counter("genrouter_errors", "Failed requests by error type", ["model", "error"], **kw)
        self.attempts = Counter("genrouter_attempts", "Attempts", ["provider", "outcome"], **kw)
        self.latency = Histogram("genrouter_latency_seconds", "Request latency", ["model", "provider"], **kw)
        self.spend = Counter("genrouter_spend_usd", "Spend in USD", ["provider"], **kw)

    def on_attempt(self, attempt: Attempt, *, model: str, request: GenerationRequest) -> None:
        self.attempts.labels(attempt.provider, attempt.outcome.value).inc()

    def on_result(
        self,
        result: GenerationResult | None,
        error: BaseException | None,
        *,
        model: str,
        request: GenerationRequest,
        latency_s: float,
    ) -> None:
        if result is None:
            self.requests.labels(model, "error").inc()
            self.errors.labels(model, type(error).__name__).inc()
            self.latency.labels(model, getattr(error, "provider", None) or "none").observe(latency_s)
            return
        self.requests.labels(model, "success").inc()
        self.latency.labels(model, result.provider).observe(latency_s)
        if result.cost.amount_usd is not None:
            self.spend.labels(result.provider).inc(float(result.cost.amount_usd))
