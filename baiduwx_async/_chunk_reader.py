"""
Reading one SSE response as chunks: bytes from the socket, events, then `ChatChunk` or
`CompletionChunk` objects checked against the protocol (an error body inside the stream
is raised as the API error it is; anything else malformed is a `StreamError`).
"""

from __future__ import annotations

import json
import json.scanner
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio

from ._chunks import Build, chunk_builder
from ._errors import (
    ProtocolError,
    RequestTimeoutError,
    StreamError,
    TransportError,
    WenxinError,
    api_error_from_body,
)
from ._models import ChatChunk, CompletionChunk, Usage
from ._protocol import excerpt
from ._sse import SSEDecoder, SSEEvent
from ._transport import Reply

__all__ = ["ChunkReader"]

logger = logging.getLogger("baiduwx_async")

C = TypeVar("C", ChatChunk, CompletionChunk)


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
