"""
Sentence-chunk streams: `ChatStream` and `CompletionStream`.

A stream is opened by the client, which retries it like a plain call until its first
chunk has been read (`first_chunk` below runs inside the client's retry loop). From
then on nothing is retried: an error reaches the caller. Leaving `async with`, breaking
out of the loop, an error or a cancellation closes the HTTP response at once.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import anyio

from ._errors import (
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

__all__ = ["ChatStream", "ChunkReader", "CompletionStream"]

C = TypeVar("C", ChatChunk, CompletionChunk)
R = TypeVar("R", ChatResponse, CompletionResponse)


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
        self._chunk_class: type[C] = chunk_class
        self._bytes: AsyncGenerator[bytes, None] = reply.aiter_bytes()  # type: ignore[assignment]
        self._decoder = SSEDecoder(max_line_bytes=max_line_bytes)
        self._events: deque[SSEEvent] = deque()
        self._eof = False
        self._last_sentence = -1
        self.chunks_read = 0
        #: Called once when the response is closed (the client frees the stream's place).
        self.on_close: Callable[[], None] | None = None
        #: Awaited once when the stream is closed, with its last usage and whether it ended
        #: (the client settles the stream's token charge).
        self.on_end: Callable[[Usage | None, bool], Awaitable[None]] | None = None

    async def close(self) -> None:
        """Close the response at once, whatever cancellation is under way."""
        with anyio.CancelScope(shield=True):
            await self._bytes.aclose()
            await self.reply.aclose()
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
                raise TransportError(f"stream broken: {exc}") from None
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
        try:
            data: Any = json.loads(event.data)
        except (ValueError, RecursionError):
            raise self.broken(f"stream line is not JSON: {excerpt(event.data, 80)!r}") from None
        if isinstance(data, dict) and "error_code" in data:
            error = api_error_from_body(data, status_code=200, request_id=self.request_id)
            if error is not None:
                raise error
        if event.bare:
            raise self.broken(f"stream line without 'data:': {excerpt(event.data, 80)!r}")
        chunk: C = decode(data, self._chunk_class, request_id=self.request_id)
        if chunk.sentence_id <= self._last_sentence:
            raise self.broken(f"sentence_id went from {self._last_sentence} to {chunk.sentence_id}")
        self._last_sentence = chunk.sentence_id
        self.chunks_read += 1
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
        if self._reader is not None:
            await self._reader.close()
            on_end, self._reader.on_end = self._reader.on_end, None
            if on_end is not None:
                with anyio.CancelScope(shield=True):
                    await on_end(self.usage, self._finished)
        if self._trace is not None:
            self._trace.close(self)

    def __aiter__(self: S) -> S:
        return self

    async def __anext__(self) -> C:
        if self._finished:
            raise StopAsyncIteration
        if self._closed:
            raise StreamError("the stream was closed before its end", request_id=self.request_id)
        try:
            await self._start()
            assert self._reader is not None
            if self._pending is not None:
                chunk, self._pending = self._pending, None
            else:
                next_chunk = await self._reader.next_chunk()
                if next_chunk is None:
                    raise self._reader.broken("stream ended without an is_end chunk")
                chunk = next_chunk
        except BaseException as exc:
            if self._trace is not None:
                self._trace.fail(exc)
            await self.aclose()
            raise
        if self._first is None:
            self._first = chunk
        self._last = chunk
        self._parts.append(chunk.result)
        if isinstance(chunk, ChatChunk) and (
            chunk.function_call is not None or chunk.search_info is not None
        ):
            for name in _CARRIED:
                if getattr(chunk, name) is not None:
                    self._carried[name] = getattr(chunk, name)
                    self._carried_raw[name] = chunk.raw[name]
        if chunk.is_end:
            self._finished = True
            try:
                await self._reader.drain()
            finally:  # cancelled while draining: still closed, its place still given back
                await self.aclose()
        return chunk

    async def collect(self) -> R:
        """Read the rest of the stream; the answer the non-stream call would have given."""
        async for _ in self:
            pass
        last = self._last
        assert self._first is not None and last is not None
        raw = {
            key: value for key, value in last.raw.items() if key not in ("sentence_id", "is_end")
        }
        for name, value in self._carried_raw.items():
            raw.setdefault(name, value)
        raw.update(id=self._first.id, created=self._first.created, result=self.text)
        response: R = decode(
            raw, self._response_class, request_id=self.request_id, ratelimit=self.ratelimit
        )
        return response


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
