"""
The client's hooks for telemetry, free of OpenTelemetry itself.

`traced` and `traced_stream` wrap the public calls. A client built with `telemetry=False`,
or where `opentelemetry` cannot be imported, holds `None` instead of a `Telemetry`, and the
wrappers cost one attribute check; while the application has installed no OpenTelemetry
SDK, one more look at the API's global providers. `_otel`, which imports `opentelemetry`,
is loaded by the first client that wants it, never by `import baiduwx_async`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Coroutine
from functools import update_wrapper
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    import httpx

    from ._otel import Telemetry

__all__ = ["CAPTURE_CONTENT_ENV", "StreamObserver", "make_telemetry", "traced", "traced_stream"]

#: The variable the OpenTelemetry GenAI instrumentations read: prompts and answers are
#: recorded only when it is "true".
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

P = ParamSpec("P")
T = TypeVar("T")


class HasTelemetry(Protocol):
    _telemetry: Telemetry | None


C = TypeVar("C", bound=HasTelemetry)


class RetryNotifier(Protocol):
    """What the telemetry hooks into: the client's sender, which reports each retry."""

    on_retry: Callable[[int, BaseException, float], None] | None


class StreamObserver(Protocol):
    """What a stream tells its span: a failure while reading, and its closing."""

    def fail(self, error: BaseException) -> None: ...

    def close(self, stream: Any) -> None: ...


def make_telemetry(enabled: bool, base_url: httpx.URL, sender: RetryNotifier) -> Telemetry | None:
    """The client's telemetry, or `None` when it is off or OpenTelemetry is not installed."""
    telemetry_class = _telemetry_class() if enabled else None
    if telemetry_class is None:
        return None
    capture = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"
    telemetry = telemetry_class(base_url, capture_content=capture)
    sender.on_retry = telemetry.on_retry
    return telemetry


@functools.cache
def _telemetry_class() -> type[Telemetry] | None:
    """`_otel.Telemetry`, or `None` where `opentelemetry` cannot be imported (tried once).
    Only `_otel` imports `opentelemetry`, so this module stays free of it."""
    try:
        from ._otel import Telemetry
    except ImportError:
        return None
    return Telemetry


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
