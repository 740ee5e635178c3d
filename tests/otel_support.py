"""One OpenTelemetry SDK per test process, with an in-memory span exporter and metric
reader, for every test module that reads spans: the API lets a provider be set only once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["Telemetry", "collecting"]


class _Collecting(SpanProcessor):
    """Hands ended spans to the exporter only while a test listens: the provider is global
    and stays installed for the tests that run after."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.inner = SimpleSpanProcessor(exporter)
        self.on = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.inner.on_end(span)


_EXPORTER = InMemorySpanExporter()
_PROCESSOR = _Collecting(_EXPORTER)
_READER = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
_installed = False


class Telemetry:
    """What the calls of one test emitted."""

    def spans(self) -> list[ReadableSpan]:
        return list(_EXPORTER.get_finished_spans())

    def span(self) -> ReadableSpan:
        (only,) = self.spans()
        return only

    def metrics(self) -> dict[str, Any]:
        """Metric name -> the metric (with its points), collected since the last call."""
        found: dict[str, Any] = {}
        data = _READER.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                if scope.scope.name == "baiduwx_async":
                    for metric in scope.metrics:
                        found[metric.name] = metric
        return found


@contextmanager
def collecting() -> Iterator[Telemetry]:
    """Install the SDK (the first time), and collect what is recorded inside."""
    global _installed
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(_PROCESSOR)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
        _installed = True
    assert isinstance(trace.get_tracer_provider(), TracerProvider), "another SDK is installed"
    _READER.get_metrics_data()  # forget what earlier tests recorded
    _EXPORTER.clear()
    _PROCESSOR.on = True
    try:
        yield Telemetry()
    finally:
        _PROCESSOR.on = False
        _EXPORTER.clear()
