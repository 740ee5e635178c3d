"""
The SERVER span of each gateway request, named by the OpenTelemetry semantic conventions
for HTTP servers. Imported only by a gateway whose client makes spans (OpenTelemetry
installed, telemetry on): the span is current while the client call runs, so the call's
CLIENT span is its child, and its parent is the caller's `traceparent` when one is sent.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._version import __version__
from ._wire import Exchange, Scope, Send

__all__ = ["RequestSpan", "ServerTracing"]

#: The methods the conventions know; any other is recorded as `_OTHER`.
KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _HeaderGetter(Getter[Scope]):
    """Reads propagation headers (`traceparent`, `tracestate`, `baggage`) from an ASGI scope."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        found = [value.decode("latin-1") for header, value in carrier["headers"] if header == name]
        return found or None

    def keys(self, carrier: Scope) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier["headers"]]


_GETTER = _HeaderGetter()


class ServerTracing:
    """The gateway's tracer; `idle` is the client's check that no SDK is installed."""

    def __init__(self, idle: Callable[[], bool]) -> None:
        self.idle = idle
        self._tracer = trace.get_tracer("baiduwx_async.gateway", __version__)

    def start(self, scope: Scope, method: str, route: str | None) -> RequestSpan:
        """Start the span of one request (`route` is its template, `None` for an unknown
        URL) and make it current."""
        parent = propagate.extract(scope, getter=_GETTER)
        known = method if method in KNOWN_METHODS else "_OTHER"
        attributes: dict[str, Any] = {
            "http.request.method": known,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        if known == "_OTHER":
            attributes["http.request.method_original"] = method
        name = "HTTP" if known == "_OTHER" else known
        if route is not None:
            route = scope.get("root_path", "") + route
            attributes["http.route"] = route
            name = f"{name} {route}"
        version = scope.get("http_version")
        if version:
            attributes["network.protocol.version"] = version
        attributes.update(_server(scope))
        span = self._tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return RequestSpan(span, token)


class RequestSpan:
    """One request's span: it sees the status sent, and ends with the request."""

    __slots__ = ("_token", "sent_status", "span")

    def __init__(self, span: trace.Span, token: Token[Context]) -> None:
        self.span = span
        self._token = token
        self.sent_status: int | None = None

    def watch(self, send: Send) -> Send:
        """`send`, noting the status the answer goes out with."""

        async def send_noting_status(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.sent_status = message["status"]
            await send(message)

        return send_noting_status

    def end(self, exchange: Exchange, error: BaseException | None = None) -> None:
        """Detach the span, set what the request came to, and end it. `error` is what
        interrupted the request (a cancellation), if anything did."""
        otel_context.detach(self._token)
        span = self.span
        if span.is_recording():
            if exchange.model is not None:
                span.set_attribute("gen_ai.request.model", exchange.model)
            status = self.sent_status
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            # A server span's errors are its 5xx answers (a 4xx is the caller's): `error.type`
            # is the status; or, when no status was sent, the class of what interrupted it.
            # A stream that failed after its 200 sends an error event: its status counts.
            failed = exchange.status if exchange.started and status == 200 else status
            if failed is not None and failed >= 500:
                span.set_attribute("error.type", str(failed))
                span.set_status(Status(StatusCode.ERROR))
            elif status is None and error is not None:
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(Status(StatusCode.ERROR))
        span.end()


def _server(scope: Scope) -> dict[str, Any]:
    """`server.address` and `server.port`: the Host header's, else the socket's."""
    host = ""
    for header, value in scope["headers"]:
        if header == b"host":
            host = value.decode("latin-1")
            break
    address, port = "", None
    if host:
        if host.startswith("["):  # [IPv6]:port
            address, _, rest = host[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            address, _, port_text = host.partition(":")
        # ASCII digits only: str.isdigit also takes '²', which int() refuses
        port = int(port_text) if port_text.isascii() and port_text.isdigit() else None
    server = scope.get("server")
    if not address and server:
        address = server[0]
    if port is None:
        port = server[1] if server and server[1] else _DEFAULT_PORTS.get(scope.get("scheme", ""))
    found: dict[str, Any] = {}
    if address:
        found["server.address"] = address
    if port is not None:
        found["server.port"] = port
    return found
