"""
The client's hooks for telemetry, free of OpenTelemetry itself.

`traced` and `traced_stream` wrap the public calls. A client built with `telemetry=False`,
or where `opentelemetry` cannot be imported, holds `None` instead of a `Telemetry`, and the
wrappers cost one attribute check; while the application has installed no OpenTelemetry
SDK, one more look at the API's global providers. `_otel`, which imports `opentelemetry`,
is loaded by the first client that wants it, never by `import baiduwx_async`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Mapping
from functools import update_wrapper
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    import httpx

    from ._otel import Telemetry
    from ._sender import Sender

__all__ = ["CAPTURE_CONTENT_ENV", "StreamObserver", "make_telemetry", "traced", "traced_stream"]

#: The variable the OpenTelemetry GenAI instrumentations read: prompts and answers are
#: recorded only when it is "true".
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

P = ParamSpec("P")
T = TypeVar("T")


class HasTelemetry(Protocol):
    _telemetry: Telemetry | None


C = TypeVar("C", bound=HasTelemetry)


class StreamObserver(Protocol):
    """What a stream tells its span: a failure while reading, and its closing."""

    def fail(self, error: BaseException) -> None: ...

    def close(self, stream: Any) -> None: ...


def make_telemetry(enabled: bool, base_url: httpx.URL, sender: Sender) -> Telemetry | None:
    """The client's telemetry, or `None` when it is off or OpenTelemetry is not installed."""
    if not enabled or not _api_available():
        return None
    from ._otel import Telemetry

    capture = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"
    telemetry = Telemetry(base_url, capture_content=capture)
    sender.on_retry = telemetry.on_retry
    return telemetry


_available: bool | None = None


def _api_available() -> bool:
    global _available
    if _available is None:
        try:
            import opentelemetry.metrics
            import opentelemetry.trace  # noqa: F401
        except ImportError:
            _available = False
        else:
            _available = True
    return _available


def traced(
    operation: str,
) -> Callable[
    [Callable[Concatenate[C, P], Coroutine[Any, Any, T]]],
    Callable[Concatenate[C, P], Coroutine[Any, Any, T]],
]:
    """One CLIENT span (and the metrics) around an awaited public call."""

    def decorate(
        method: Callable[Concatenate[C, P], Coroutine[Any, Any, T]],
    ) -> Callable[Concatenate[C, P], Coroutine[Any, Any, T]]:
        async def call(self: C, /, *args: P.args, **kwargs: P.kwargs) -> T:
            telemetry = self._telemetry
            if telemetry is None or telemetry.idle():
                return await method(self, *args, **kwargs)
            return await telemetry.call(operation, method(self, *args, **kwargs), args, kwargs)

        update_wrapper(call, method)
        return call

    return decorate


def traced_stream(
    operation: str,
) -> Callable[[Callable[Concatenate[C, P], T]], Callable[Concatenate[C, P], T]]:
    """A span for a stream: it starts when the stream is opened and ends when it is closed."""

    def decorate(method: Callable[Concatenate[C, P], T]) -> Callable[Concatenate[C, P], T]:
        def call(self: C, /, *args: P.args, **kwargs: P.kwargs) -> T:
            stream = method(self, *args, **kwargs)
            telemetry = self._telemetry
            if telemetry is not None and not telemetry.idle():
                telemetry.watch_stream(stream, operation, args, kwargs)
            return stream

        update_wrapper(call, method)
        return call

    return decorate


def call_arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, Any]:
    """The endpoint and the input (messages, prompt or texts) of a public call."""
    endpoint = args[0] if args else kwargs.get("endpoint")
    if len(args) > 1:
        return endpoint, args[1]
    for name in ("messages", "prompt", "texts", "input"):
        if name in kwargs:
            return endpoint, kwargs[name]
    return endpoint, None
