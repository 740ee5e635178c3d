"""
Sentence-chunk streams: `ChatStream` and `CompletionStream`.

A stream is opened by the client, which retries it like a plain call until its first
chunk has been read (`first_chunk` below runs inside the client's retry loop). From
then on nothing is retried: an error reaches the caller. Leaving `async with`, breaking
out of the loop, an error or a cancellation closes the HTTP response at once.

`break` calls nothing on the object `async for` iterates, so `__aiter__` hands out a
`ChunkIterator` of its own that nothing else references: CPython frees it the moment the
loop is left (by `break` or by an exception), and it then cuts the connection without
awaiting anything (`Reply.abort`), so the server sees it closed while the `async with`
block is still running. The response itself is closed, awaited, when the block ends.
"""

from __future__ import annotations

import json
import json.scanner
import logging
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import anyio
import attrs

from ._chunks import Build, chunk_builder
from ._errors import (
    ProtocolError,
    RequestTimeoutError,
    StreamError,
    TransportError,
    WenxinError,
    api_error_from_body,
)
from ._models import (
    ChatChunk,
    ChatResponse,
    CompletionChunk,
    CompletionResponse,
    FunctionCall,
    RateLimitInfo,
    Usage,
    decode,
)
from ._protocol import excerpt
from ._sse import SSEDecoder, SSEEvent
from ._transport import Reply

if TYPE_CHECKING:
    from ._telemetry import StreamObserver

__all__ = ["ChatStream", "ChunkIterator", "ChunkReader", "CompletionStream"]

logger = logging.getLogger("baiduwx_async")

C = TypeVar("C", ChatChunk, CompletionChunk)
R = TypeVar("R", ChatResponse, CompletionResponse)


_BUILDERS: dict[type[Any], Build] = {
    ChatChunk: chunk_builder(ChatChunk),
    CompletionChunk: chunk_builder(CompletionChunk),
}

# json's own C scanner, called directly: `json.loads` wraps it in two Python calls and two
# regular expressions per chunk, which cost a tenth of a chunk's parsing. Anything the
# scanner does not take whole (leading or trailing text) goes to `json.loads`, which
# accepts or rejects it exactly as before.
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _loads(text: str) -> Any:
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)  # raises the decoder's own error
    if end != len(text):
        return json.loads(text)
    return value


class ChunkReader(Generic[C]):
    """Reads the chunks of one SSE response: bytes from the socket, events, chunks."""

    def __init__(
        self,
        reply: Reply,
        chunk_class: type[C],
        request_id: str | None,
        *,
        max_line_bytes: int = 1 << 20,
    ):
        self.reply = reply
        self.request_id = request_id
        self._build = _BUILDERS[chunk_class]
        self._bytes: AsyncGenerator[bytes, None] = reply.aiter_bytes()  # type: ignore[assignment]
        self._decoder = SSEDecoder(max_line_bytes=max_line_bytes)
        self._events: deque[SSEEvent] = deque()
        self._eof = False
        self._next_sentence = 0
        self.closed = False
        self.chunks_read = 0
        #: Called once when the response is closed (the client frees the stream's place).
        self.on_close: Callable[[], None] | None = None
        #: Given `close` when `abort()` cut the connection, for whoever awaits next to call.
        self.on_abort: Callable[[Callable[[], Awaitable[None]]], None] | None = None
        #: Awaited once when the stream is closed, with its last usage and whether it ended
        #: (the client settles the stream's token charge).
        self.on_end: Callable[[Usage | None, bool], Awaitable[None]] | None = None

    @property
    def done_marker(self) -> bool:
        """True once `data: [DONE]` was read: the server ended the stream on purpose."""
        return self._decoder.done

    async def close(self) -> None:
        """Close the response at once, whatever cancellation is under way."""
        self.closed = True
        with anyio.CancelScope(shield=True):
            await self._bytes.aclose()
            await self.reply.aclose()
        self._release()

    def abort(self) -> None:
        """Cut the connection without awaiting. The response is still to be closed (and
        the stream's place in flight held until then, as its pool connection is)."""
        if not self.closed:
            self.reply.abort()
            on_abort, self.on_abort = self.on_abort, None
            if on_abort is not None:
                on_abort(self.close)

    def _release(self) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()

    async def next_chunk(self) -> C | None:
        """The next chunk, or `None` when the stream ended (`[DONE]` or end of body)."""
        while True:
            if self._events:
                return self._parse(self._events.popleft())
            if self._eof or self._decoder.done:
                return None
            try:
                data = await self._bytes.__anext__()
            except StopAsyncIteration:
                self._eof = True
                self._events.extend(self._decoder.close())
            except RequestTimeoutError:
                raise
            except TransportError as exc:
                raise TransportError(f"stream broken: {exc}", url=exc.url) from None
            else:
                self._events.extend(self._decoder.feed(data))

    async def drain(self, seconds: float = 1.0) -> None:
        """Read what follows the last chunk, so the connection can be reused."""
        with anyio.move_on_after(seconds):
            try:
                async for _ in self._bytes:
                    pass
            except WenxinError:
                pass  # the answer is complete; a failure here only costs the connection

    def _parse(self, event: SSEEvent) -> C:
        text = event[0]
        try:  # `_loads`, inlined: this runs for every chunk
            try:
                data, end = _scan(text, 0)
            except StopIteration:
                end = -1
            if end != len(text):
                data = json.loads(text)
        except (ValueError, RecursionError):
            raise self.broken(f"stream line is not JSON: {excerpt(event.data, 80)!r}") from None
        if type(data) is not dict:
            if event.bare:
                raise self.broken(f"stream line without 'data:': {excerpt(event.data, 80)!r}")
            raise self.broken(f"stream chunk is not a JSON object: {excerpt(event.data, 80)!r}")
        if "error_code" in data:
            error = api_error_from_body(data, status_code=200, request_id=self.request_id)
            if error is not None:
                raise error
        if event[2]:  # bare
            raise self.broken(f"stream line without 'data:': {excerpt(event.data, 80)!r}")
        position = self.chunks_read
        try:
            chunk: C = self._build(data, position, self.request_id)
        except ProtocolError as exc:
            raise self.broken(exc.message) from None
        sentence_id = chunk.sentence_id
        if sentence_id != self._next_sentence:
            if self._next_sentence >= 0:  # said once per stream
                logger.debug(
                    "stream %s: sentence_id %d where %d was due; chunks are kept in the "
                    "order they came",
                    self.request_id,
                    sentence_id,
                    self._next_sentence,
                )
            self._next_sentence = -1
        elif sentence_id >= 0:
            self._next_sentence = sentence_id + 1
        self.chunks_read = position + 1
        return chunk

    def broken(self, message: str) -> StreamError:
        # Retrying is safe only while the caller has seen nothing of this stream.
        return StreamError(message, request_id=self.request_id, retryable=self.chunks_read == 0)


#: How a stream gets started: the client sends the request, with retries, and calls the
#: given function to read the first chunk inside its retry loop.
OpenStream = Callable[
    [Callable[[Reply, str | None], Awaitable[tuple[ChunkReader[C], C | None]]]],
    Awaitable[tuple[ChunkReader[C], C | None]],
]


class _Stream(Generic[C, R]):
    _chunk_class: ClassVar[type[Any]]
    _response_class: ClassVar[type[Any]]
    #: The stream's span, when the client's telemetry is on.
    _trace: StreamObserver | None = None

    def __init__(
        self,
        open_stream: OpenStream[C],
        max_line_bytes: int = 1 << 20,
    ) -> None:
        self._open_stream: OpenStream[C] = open_stream
        self._max_line_bytes = max_line_bytes
        self._reader: ChunkReader[C] | None = None
        self._pending: C | None = None
        self._finished = False
        self._closed = False
        self._parts: list[str] = []
        self._first: C | None = None
        self._last: C | None = None
        #: The reader's parsed-ahead events while chunks flow (after the first was handed
        #: out, before the end or a close): `ChunkIterator`'s fast path reads them.
        self._flowing: deque[SSEEvent] | None = None
        # ERNIE fields that may come in any chunk, not only the last: kept as received
        self._carried: dict[str, Any] = {}
        self._carried_raw: dict[str, Any] = {}

    # --- what the caller reads after (or during) the stream

    @property
    def text(self) -> str:
        """Everything received so far, joined: the whole answer once the stream ended."""
        return "".join(self._parts)

    @property
    def usage(self) -> Usage | None:
        """The token usage of the latest chunk (complete after the last one)."""
        return self._last.usage if self._last is not None else None

    @property
    def function_call(self) -> FunctionCall | None:
        """The function the model asked to call, from whichever chunk carried it."""
        call = self._carried.get("function_call")
        return call if isinstance(call, FunctionCall) else None

    @property
    def id(self) -> str | None:
        return self._first.id if self._first is not None else None

    @property
    def request_id(self) -> str | None:
        return self._reader.request_id if self._reader is not None else None

    @property
    def ratelimit(self) -> RateLimitInfo:
        if self._reader is None:
            return RateLimitInfo()
        return RateLimitInfo.from_headers(self._reader.reply.headers)

    @property
    def finished(self) -> bool:
        """True once the `is_end` chunk (or the end of the stream) has been read."""
        return self._finished

    # --- lifecycle

    async def _start(self) -> None:
        if self._reader is None:
            if self._closed:
                raise StreamError("the stream was closed before it started")
            self._reader, self._pending = await self._open_stream(self._first_chunk)

    async def _first_chunk(
        self, reply: Reply, request_id: str | None
    ) -> tuple[ChunkReader[C], C | None]:
        reader = ChunkReader(
            reply, self._chunk_class, request_id, max_line_bytes=self._max_line_bytes
        )
        first = await reader.next_chunk()
        if first is None:
            raise reader.broken("stream ended before its first chunk")
        return reader, first

    async def __aenter__(self: S) -> S:
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP response now; survives the caller's cancellation."""
        self._closed = True
        self._flowing = None
        try:
            if self._reader is not None:
                await self._reader.close()
                on_end, self._reader.on_end = self._reader.on_end, None
                if on_end is not None:
                    with anyio.CancelScope(shield=True):
                        await on_end(self.usage, self._finished)
        finally:  # the span ends even when the settlement (through Redis, say) fails
            if self._trace is not None:
                self._trace.close(self)

    def __aiter__(self) -> ChunkIterator[C]:
        # A new object each time, referenced by the loop alone: see the module's docstring.
        return ChunkIterator(self)

    def __anext__(self) -> Awaitable[C]:
        """The next chunk, for `anext(stream)`; `async for` goes through `__aiter__`."""
        return self._next()

    def _abandon(self) -> None:
        """The loop that read this stream was left before the end: cut the connection."""
        if not self._finished and self._reader is not None:
            self._closed = True
            self._flowing = None
            self._reader.abort()

    async def _next(self) -> C:
        if self._finished:
            raise StopAsyncIteration
        if self._closed:
            raise StreamError("the stream was closed before its end", request_id=self.request_id)
        reader = self._reader
        chunk: C | None
        try:
            if reader is None:
                await self._start()
                reader = self._reader
                assert reader is not None
            if self._pending is not None:
                chunk, self._pending = self._pending, None
            else:
                events = reader._events
                chunk_or_none = reader._parse(events.popleft()) if events else None
                if chunk_or_none is None:
                    chunk_or_none = await reader.next_chunk()
                if chunk_or_none is None and not reader.done_marker:
                    raise reader.broken("stream ended without an is_end chunk")
                chunk = chunk_or_none
        except BaseException as exc:
            if self._trace is not None:
                self._trace.fail(exc)
            await self.aclose()
            raise
        if chunk is None:  # `data: [DONE]` ends a stream as well as `is_end` does
            self._finished = True
            await self.aclose()
            raise StopAsyncIteration
        if self._first is None:
            self._first = chunk
        self._last = chunk
        self._parts.append(chunk.result)
        if type(chunk) is ChatChunk and (
            chunk.function_call is not None or chunk.search_info is not None
        ):
            self._carry(chunk)
        if chunk.is_end:
            await self._end()
        else:
            self._flowing = reader._events
        return chunk

    def _carry(self, chunk: ChatChunk) -> None:
        for name in _CARRIED:
            if getattr(chunk, name) is not None:
                self._carried[name] = getattr(chunk, name)
                self._carried_raw[name] = chunk.raw[name]

    async def _end(self) -> None:
        """The `is_end` chunk was read: read what follows it, then close."""
        self._finished = True
        self._flowing = None
        assert self._reader is not None
        try:
            await self._reader.drain()
        finally:  # cancelled while draining: still closed, its place still given back
            await self.aclose()

    async def collect(self) -> R:
        """Read the rest of the stream; the answer the non-stream call would have given."""
        async for _ in self:
            pass
        first, last = self._first, self._last
        assert first is not None and last is not None
        raw = {
            key: value for key, value in last.raw.items() if key not in ("sentence_id", "is_end")
        }
        # The typed values of the chunks, which were read leniently, take the place of
        # what they were read from, so the answer decodes wherever its chunks did.
        usage = last.usage or Usage()
        raw.update(
            id=first.id,
            object=first.object,
            created=first.created,
            result=self.text,
            is_truncated=last.is_truncated,
            need_clear_history=last.need_clear_history,
            usage=attrs.asdict(usage),
        )
        for key in ("finish_reason", "ban_round", "flag"):
            value = getattr(last, key)
            if value is None:
                raw.pop(key, None)
            else:
                raw[key] = value
        for name in _CARRIED:  # the ERNIE fields of any chunk, as received when well-formed
            if name in self._carried_raw:
                raw[name] = self._carried_raw[name]
            else:
                raw.pop(name, None)
        response: R = decode(
            raw, self._response_class, request_id=self.request_id, ratelimit=self.ratelimit
        )
        return response


class ChunkIterator(Generic[C]):
    """What `async for` iterates: the stream's chunks, and the end of the stream when the
    loop is left early. Referenced by the loop alone, it is freed as the loop exits."""

    __slots__ = ("__weakref__", "_stream")

    def __init__(self, stream: _Stream[C, Any]) -> None:
        self._stream: _Stream[C, Any] = stream
        # A plain callback, run as this object is freed: it awaits and schedules nothing.
        weakref.finalize(self, stream._abandon).atexit = False

    def __aiter__(self) -> ChunkIterator[C]:
        return self

    async def __anext__(self) -> C:
        stream = self._stream
        events = stream._flowing
        if not events:
            return await stream._next()
        # The common case, a chunk already read: `_next` without its checks of the start,
        # the first chunk and the end of the body, which cannot apply here.
        try:
            chunk: C = stream._reader._parse(events.popleft())  # type: ignore[union-attr]
        except BaseException as exc:
            if stream._trace is not None:
                stream._trace.fail(exc)
            await stream.aclose()
            raise
        stream._last = chunk
        stream._parts.append(chunk.result)
        if type(chunk) is ChatChunk and (
            chunk.function_call is not None or chunk.search_info is not None
        ):
            stream._carry(chunk)
        if chunk.is_end:
            await stream._end()
        return chunk


S = TypeVar("S", bound=_Stream[Any, Any])
_CARRIED = ("function_call", "search_info")


class ChatStream(_Stream[ChatChunk, ChatResponse]):
    """A streamed chat answer: `async with client.chat_stream(...) as stream`, then
    `async for chunk in stream`. `text`, `usage` and `id` hold the whole answer after
    the end; `await stream.collect()` returns it as a `ChatResponse`."""

    _chunk_class = ChatChunk
    _response_class = ChatResponse


class CompletionStream(_Stream[CompletionChunk, CompletionResponse]):
    """A streamed completion; see `ChatStream`."""

    _chunk_class = CompletionChunk
    _response_class = CompletionResponse
