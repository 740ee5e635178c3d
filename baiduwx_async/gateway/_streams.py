"""Relaying a Wenxin stream as OpenAI's server-sent events, and a caller that leaves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from ._answers import ChatChunks
from ._errors import error_body, error_for
from ._wire import Exchange, Receive, Send, dumps

if TYPE_CHECKING:
    from .._streaming import ChatStream, CompletionStream

__all__ = ["relay_stream"]

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]
_DONE = b"data: [DONE]\n\n"


async def _watch_disconnect(receive: Receive, exchange: Exchange, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if not exchange.finished:
        exchange.disconnected = True
        scope.cancel()


async def relay_stream(
    exchange: Exchange,
    receive: Receive,
    send: Send,
    stream: ChatStream | CompletionStream,
    chunks: ChatChunks,
) -> None:
    """Relay a stream; a caller that goes away cancels it, which closes it upstream."""
    async with anyio.create_task_group() as group:
        group.start_soon(_watch_disconnect, receive, exchange, group.cancel_scope)
        await _relay(exchange, send, stream, chunks)
        group.cancel_scope.cancel()
    if exchange.error is not None:  # before the answer started: a plain error answer
        raise exchange.error


async def _relay(
    exchange: Exchange,
    send: Send,
    stream: ChatStream | CompletionStream,
    chunks: ChatChunks,
) -> None:
    """Never raises (but cancellation): a failure is kept for `relay_stream`, or sent as an
    error event once the answer has started."""
    try:
        async with stream:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            exchange.started, exchange.status = True, 200
            last: Any = None
            async for chunk in stream:
                if last is None:
                    chunks.begin(chunk.id, chunk.created)
                    first = chunks.first()
                    if first is not None:
                        await send_event(send, first)
                event = chunks.sentence(chunk.result, getattr(chunk, "function_call", None))
                if event is not None:
                    await send_event(send, event)
                last = chunk
            tail = b"data: " + dumps(chunks.last(last.finish_reason, last.is_truncated))
            if chunks.with_usage:
                tail += b"\n\ndata: " + dumps(chunks.usage(stream.usage))
            exchange.finished = True
            await send({"type": "http.response.body", "body": tail + b"\n\n" + _DONE})
    except Exception as exc:
        if not exchange.started:
            exchange.error = exc
            return
        if isinstance(exc, OSError):  # an ASGI server saying the caller has gone
            exchange.disconnected = True
            return
        error = error_for(exc)
        exchange.status = error.status
        exchange.finished = True
        try:
            data = b"data: " + error_body(error) + b"\n\n"
            await send({"type": "http.response.body", "body": data})
        except OSError:  # the caller left meanwhile
            exchange.disconnected = True


async def send_event(send: Send, value: object) -> None:
    await send(
        {
            "type": "http.response.body",
            "body": b"data: " + dumps(value) + b"\n\n",
            "more_body": True,
        }
    )
