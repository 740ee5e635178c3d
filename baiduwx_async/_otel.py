"""
OpenTelemetry spans and metrics for the public calls, named by the OpenTelemetry semantic
conventions for generative AI. Written against the API only: every call is a no-op until
the application installs an SDK. Imported by `_telemetry` on the first client that wants it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ._genai_messages import input_messages, output_message, to_json
from ._telemetry import call_arguments
from ._version import __version__

__all__ = ["PROVIDER", "Telemetry"]

T = TypeVar("T")

PROVIDER = "baidu.qianfan"
#: The conventions' bucket advice: seconds for durations and the time to the first chunk...
DURATION_BUCKETS = tuple(0.01 * 2**n for n in range(14))  # 0.01, 0.02, 0.04 ... 81.92
#: ...and powers of 4 for token counts.
TOKEN_BUCKETS = tuple(float(4**n) for n in range(14))

#: Request parameters and the attribute each is recorded under (when it was given).
REQUEST_ATTRIBUTES = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "stop": "gen_ai.request.stop_sequences",
    # A repetition penalty in [1, 2]: not OpenAI's frequency penalty, so the provider's own name.
    "penalty_score": "baidu.qianfan.request.penalty_score",
}
OUTPUT_TYPES = {"text": "text", "json_object": "json"}
RETRY_EVENT = "baiduwx.retry"
CONTENT_EVENT = "gen_ai.client.inference.operation.details"

_perf_counter = time.perf_counter


class Telemetry:
    """One client's tracer, meter and instruments."""

    def __init__(self, base_url: httpx.URL, *, capture_content: bool) -> None:
        self.capture_content = capture_content
        self._tracer = trace.get_tracer("baiduwx_async", __version__)
        meter = metrics.get_meter("baiduwx_async", __version__)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed answer.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        port = base_url.port or (443 if base_url.scheme == "https" else 80)
        self._server: dict[str, Any] = {"server.address": base_url.host, "server.port": port}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._unset = _unset_check()

    def idle(self) -> bool:
        """True while the application has installed no SDK (no tracer or meter provider):
        nothing can be recorded, and the calls skip their no-op spans."""
        if self._unset():
            return True
        self._unset = _never  # a provider once set stays set
        return False

    def route(self, operation: str, endpoint: str) -> _Route:
        """The span name and metric attributes of one operation on one endpoint: made
        once, as an SDK copies (never keeps) the attributes it is given."""
        route = self._routes.get((operation, endpoint))
        if route is None:
            if len(self._routes) >= 256:
                self._routes.clear()
            route = self._routes[operation, endpoint] = _Route(operation, endpoint, self._server)
        return route

    async def call(
        self,
        operation: str,
        running: Awaitable[T],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> T:
        """Await one public call inside its span."""
        op = Operation(self, operation, args, kwargs)
        token = otel_context.attach(trace.set_span_in_context(op.span))
        try:
            response = await running
        except BaseException as exc:
            otel_context.detach(token)
            op.end(None, exc)
            raise
        otel_context.detach(token)
        op.end(response, None)
        return response

    def watch_stream(
        self, stream: Any, operation: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> None:
        """Give `stream` a span that starts when it is opened and ends when it is closed."""
        watcher = _StreamWatcher(self, operation, args, kwargs, stream._open_stream)
        stream._open_stream = watcher.open
        stream._trace = watcher

    def on_retry(self, attempt: int, error: BaseException, wait: float) -> None:
        """The sender is about to wait `wait` seconds and send again."""
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                RETRY_EVENT,
                {
                    "baiduwx.retry.attempt": attempt,
                    "error.type": _error_type(error),
                    "baiduwx.retry.wait": wait,
                },
            )


class _Route:
    __slots__ = ("base", "input", "output", "span_name")

    def __init__(self, operation: str, endpoint: str, server: Mapping[str, Any]) -> None:
        self.span_name = f"{operation} {endpoint}"
        self.base: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": endpoint,
            **server,
        }
        self.input = {**self.base, "gen_ai.token.type": "input"}
        self.output = {**self.base, "gen_ai.token.type": "output"}


class Operation:
    """The span of one call and the figures its metrics need."""

    __slots__ = ("_args", "_kwargs", "operation", "route", "span", "started", "telemetry")

    def __init__(
        self,
        telemetry: Telemetry,
        operation: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> None:
        self.telemetry = telemetry
        self.operation = operation
        self._args = args
        self._kwargs = kwargs
        endpoint = str(args[0] if args else kwargs.get("endpoint"))
        self.route = route = telemetry.route(operation, endpoint)
        requested = _request_attributes(kwargs) if kwargs else None
        self.span: Span = telemetry._tracer.start_span(
            route.span_name,
            kind=SpanKind.CLIENT,
            attributes={**route.base, **requested} if requested else route.base,
        )
        self.started = _perf_counter()

    def first_chunk(self) -> None:
        elapsed = _perf_counter() - self.started
        self.telemetry.time_to_first_chunk.record(elapsed, self.route.base)
        if self.span.is_recording():
            self.span.set_attribute("gen_ai.response.time_to_first_chunk", elapsed)

    def end(self, response: Any, error: BaseException | None) -> None:
        """End the span and record the metrics: `response` is the answer (or a closed
        stream) when the call succeeded."""
        telemetry, span = self.telemetry, self.span
        duration = _perf_counter() - self.started
        recording = span.is_recording()
        if error is not None:
            metric_attributes = {**self.route.base, "error.type": _error_type(error)}
            telemetry.duration.record(duration, metric_attributes)
            if recording:
                span.set_attribute("error.type", metric_attributes["error.type"])
                span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
        else:
            telemetry.duration.record(duration, self.route.base)
        usage = getattr(response, "usage", None)
        if usage is not None:
            record = telemetry.token_usage.record
            record(usage.prompt_tokens, self.route.input)
            if self.operation != "embeddings":
                record(usage.completion_tokens, self.route.output)
        if recording:
            if response is not None:
                span.set_attributes(_response_attributes(response, self.operation))
            if telemetry.capture_content:
                self._capture(span, response)
        span.end()

    def _capture(self, span: Span, response: Any) -> None:
        _, given = call_arguments(self._args, self._kwargs)
        details: dict[str, Any] = {"gen_ai.operation.name": self.operation}
        inputs = input_messages(self.operation, given)
        if inputs is not None:
            details["gen_ai.input.messages"] = to_json(inputs)
        system = self._kwargs.get("system")
        if isinstance(system, str):
            details["gen_ai.system_instructions"] = to_json([{"type": "text", "content": system}])
        if response is not None and self.operation != "embeddings":
            details["gen_ai.output.messages"] = to_json([output_message(response)])
        span.add_event(CONTENT_EVENT, details)


class _StreamWatcher:
    """Between a stream and its span: started when the stream opens (the first chunk is
    read while opening), ended when it is closed, early or not."""

    __slots__ = ("_args", "_error", "_kwargs", "_open", "_operation", "_telemetry", "op")

    def __init__(
        self,
        telemetry: Telemetry,
        operation: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        open_stream: Callable[[Any], Awaitable[Any]],
    ) -> None:
        self._telemetry = telemetry
        self._operation = operation
        self._args = args
        self._kwargs = kwargs
        self._open = open_stream
        self._error: BaseException | None = None
        self.op: Operation | None = None

    async def open(self, first_chunk: Any) -> Any:
        op = self.op = Operation(self._telemetry, self._operation, self._args, self._kwargs)
        token = otel_context.attach(trace.set_span_in_context(op.span))
        try:
            opened = await self._open(first_chunk)
        except BaseException as exc:
            otel_context.detach(token)
            self.op = None
            op.end(None, exc)
            raise
        otel_context.detach(token)
        op.first_chunk()
        return opened

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error

    def close(self, stream: Any) -> None:
        op, self.op = self.op, None
        if op is not None:  # what was read is recorded, even when reading failed
            op.end(_StreamResult(stream), self._error)


class _StreamResult:
    """What a closed stream says about its answer, in the shape of a response."""

    __slots__ = ("finish_reason", "function_call", "id", "result", "usage")

    def __init__(self, stream: Any) -> None:
        last = stream._last
        self.id = stream.id
        self.usage = stream.usage
        self.result = stream.text
        self.finish_reason = getattr(last, "finish_reason", None)
        self.function_call = getattr(stream, "function_call", None)


def _never() -> bool:
    return False


def _unset_check() -> Callable[[], bool]:
    """A check, cheap enough to run before every call, that neither a tracer provider nor
    a meter provider has been set."""
    tracers, meters = trace.get_tracer_provider(), metrics.get_meter_provider()
    # The API's stand-ins while nothing is set (configured through the environment, the
    # calls above have just loaded it): a proxy tracer provider and a proxy meter provider.
    if not isinstance(tracers, trace.ProxyTracerProvider):
        return _never
    if type(meters).__name__ != "_ProxyMeterProvider":
        return _never
    check: Callable[[], bool]
    try:
        # The API's own globals: the public getters also look at the environment each time,
        # which costs more than the rest of an idle call.
        from opentelemetry.metrics import _internal as metrics_state

        trace_state: Any = trace
        if trace_state._TRACER_PROVIDER is not None or metrics_state._METER_PROVIDER is not None:
            return _never

        def check() -> bool:
            return trace_state._TRACER_PROVIDER is None and metrics_state._METER_PROVIDER is None

    except (ImportError, AttributeError):

        def check() -> bool:
            return trace.get_tracer_provider() is tracers and metrics.get_meter_provider() is meters

    return check


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__


def _request_attributes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in kwargs.items():
        if value is None:
            continue
        key = REQUEST_ATTRIBUTES.get(name)
        if key is not None:
            found[key] = [str(v) for v in value] if name == "stop" else value
        elif name == "response_format" and value in OUTPUT_TYPES:
            found["gen_ai.output.type"] = OUTPUT_TYPES[value]
    return found


def _response_attributes(response: Any, operation: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    response_id = getattr(response, "id", None)
    if response_id:
        found["gen_ai.response.id"] = response_id
    finish_reason = getattr(response, "finish_reason", None)
    if finish_reason:
        found["gen_ai.response.finish_reasons"] = [finish_reason]
    usage = getattr(response, "usage", None)
    if usage is not None:
        found["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        if operation != "embeddings":
            found["gen_ai.usage.output_tokens"] = usage.completion_tokens
    if operation == "embeddings":
        vectors = getattr(response, "vectors", None)
        if vectors:
            found["gen_ai.embeddings.dimension.count"] = len(vectors[0])
    return found
