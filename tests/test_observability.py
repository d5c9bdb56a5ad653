"""Metrics hooks, OpenTelemetry spans, structured logs, and the Prometheus example."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from tests.routing_helpers import provider

from genrouter import AllProvidersFailedError, AsyncRouter, Attempt, GenerationRequest, GenerationResult
from genrouter.errors import ProviderUnavailableError
from genrouter.observability import MetricsHook, OpenTelemetryHook
from genrouter.testing import FailSubmit, FakeBackend, FakeClock

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "prometheus_metrics.py"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_attempt(self, attempt: Attempt, *, model: str, request: GenerationRequest) -> None:
        self.calls.append(("attempt", (attempt.provider, attempt.outcome.value, model)))

    def on_result(
        self,
        result: GenerationResult | None,
        error: BaseException | None,
        *,
        model: str,
        request: GenerationRequest,
        latency_s: float,
    ) -> None:
        self.calls.append(("result", (result, error, model, latency_s)))


class Raising:
    def on_attempt(self, attempt: Attempt, *, model: str, request: GenerationRequest) -> None:
        raise RuntimeError("hook broke")

    def on_result(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("hook broke")


def fallback_router(hooks: list[Any], *, fail_both: bool = False) -> AsyncRouter:
    down = FailSubmit(ProviderUnavailableError("down", retryable=False))
    a = FakeBackend(name="a", script=[down])
    b = FakeBackend(name="b", script=[down] if fail_both else ())
    config = {
        "version": 1,
        "providers": {"a": provider("a"), "b": provider("b")},
        "routing": {"default": {"strategy": "priority", "order": ["a", "b"]}},
    }
    return AsyncRouter.from_config(config, backends={"a": a, "b": b}, clock=FakeClock(), hooks=hooks)


async def test_hooks_see_attempts_in_order_then_one_result() -> None:
    recorder = Recorder()
    assert isinstance(recorder, MetricsHook)
    result = await fallback_router([recorder]).generate("a fox", model="flux-dev")
    assert recorder.calls[:2] == [
        ("attempt", ("a", "failed", "flux-dev")),
        ("attempt", ("b", "succeeded", "flux-dev")),
    ]
    assert len(recorder.calls) == 3
    kind, (got, error, model, latency_s) = recorder.calls[2]
    assert (kind, got, error, model) == ("result", result, None, "flux-dev")
    assert latency_s >= 0


async def test_hooks_see_failures() -> None:
    recorder = Recorder()
    with pytest.raises(AllProvidersFailedError) as info:
        await fallback_router([recorder], fail_both=True).generate("a fox", model="flux-dev")
    assert recorder.calls[-1][1][:2] == (None, info.value)


async def test_otel_spans_for_request_and_attempts() -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    await fallback_router([OpenTelemetryHook(tracer_provider=tracer_provider)]).generate(
        "a fox", model="flux-dev"
    )
    spans = exporter.get_finished_spans()
    generate = [s for s in spans if s.name == "genrouter.generate"]
    attempts = [s for s in spans if s.name == "genrouter.attempt"]
    assert len(generate) == 1
    assert len(attempts) == 2
    parent = generate[0]
    assert parent.attributes is not None
    assert parent.attributes["genrouter.model"] == "flux-dev"
    assert parent.attributes["genrouter.provider"] == "b"
    assert parent.attributes["genrouter.outcome"] == "succeeded"
    assert parent.attributes["genrouter.attempts"] == 2
    assert "genrouter.cost_usd" in parent.attributes
    got = [dict(s.attributes or {}) for s in attempts]
    assert [(g["genrouter.provider"], g["genrouter.outcome"], g["genrouter.hedged"]) for g in got] == [
        ("a", "failed", False),
        ("b", "succeeded", False),
    ]
    assert got[0]["genrouter.endpoint"] == "a/flux-dev"
    for span in attempts:
        assert span.parent is not None
        assert span.parent.span_id == parent.context.span_id
        assert span.context.trace_id == parent.context.trace_id


async def test_a_raising_hook_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="genrouter")
    recorder = Recorder()
    result = await fallback_router([Raising(), recorder]).generate("a fox", model="flux-dev")
    assert result.provider == "b"
    assert len(recorder.calls) == 3
    assert any("metrics hook" in r.getMessage() for r in caplog.records)


async def test_logs_carry_structured_extras(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="genrouter")
    await fallback_router([]).generate("a fox", model="flux-dev")
    attempts = [r for r in caplog.records if r.msg == "attempt %s"]
    assert [r.genrouter["outcome"] for r in attempts] == ["failed", "succeeded"]  # type: ignore[attr-defined]
    first = attempts[0].genrouter  # type: ignore[attr-defined]
    assert {"request_id", "provider", "endpoint", "attempt", "error", "duration_s", "hedged"} <= set(first)
    assert [r.genrouter["attempt"] for r in attempts] == [1, 2]  # type: ignore[attr-defined]
    assert attempts[0].genrouter["request_id"] == attempts[1].genrouter["request_id"]  # type: ignore[attr-defined]
    (done,) = [r for r in caplog.records if r.msg == "result"]
    assert done.levelno == logging.INFO
    fields = done.genrouter  # type: ignore[attr-defined]
    assert fields["model"] == "flux-dev"
    assert fields["provider"] == "b"
    assert fields["attempts"] == 2
    assert "cost_usd" in fields
    assert "latency_s" in fields


async def test_nothing_is_logged_without_hooks_or_an_enabled_logger(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="genrouter")
    import genrouter.engine._execution as execution
    import genrouter.router as router_module

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("observability work done on the quiet path")

    monkeypatch.setattr(execution, "attempt_ended", boom)
    monkeypatch.setattr(router_module, "request_ended", boom)
    router = fallback_router([])
    assert router.hooks == []
    assert (await router.generate("a fox", model="flux-dev")).provider == "b"
    assert not [r for r in caplog.records if r.name.startswith("genrouter")]


async def test_prometheus_example_exports_metrics() -> None:
    spec = importlib.util.spec_from_file_location("prometheus_metrics", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    registry = CollectorRegistry()
    hook = module.PrometheusHook(registry)
    await fallback_router([hook]).generate("a fox", model="flux-dev")
    with pytest.raises(AllProvidersFailedError):
        await fallback_router([hook], fail_both=True).generate("a fox", model="flux-dev")
    value = registry.get_sample_value
    assert value("genrouter_requests_total", {"model": "flux-dev", "outcome": "success"}) == 1
    assert value("genrouter_requests_total", {"model": "flux-dev", "outcome": "error"}) == 1
    assert value("genrouter_errors_total", {"model": "flux-dev", "error": "AllProvidersFailedError"}) == 1
    assert value("genrouter_attempts_total", {"provider": "a", "outcome": "failed"}) == 2
    assert value("genrouter_latency_seconds_count", {"model": "flux-dev", "provider": "b"}) is not None
    assert value("genrouter_spend_usd_total", {"provider": "b"}) == pytest.approx(0.01)
