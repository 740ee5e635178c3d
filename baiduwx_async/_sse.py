"""
A sans-I/O decoder for Baidu's server-sent events (docs/protocol.md §5): bytes in, events out.

Baidu is not a general SSE server: each `data:` line carries one whole JSON chunk, so
every `data:` line is one event and consecutive data lines are never joined. Lines that
carry no SSE field at all are passed on as `bare` events, because a mid-stream error may
arrive as a bare JSON line; the caller decides what they mean.
"""

from __future__ import annotations

from typing import NamedTuple

from ._errors import StreamError

__all__ = ["SSEDecoder", "SSEEvent"]


class SSEEvent(NamedTuple):
    """One event: the text of a `data:` line, or a whole line that had no field prefix.

    A NamedTuple rather than an attrs class: it is immutable too, and building one costs
    a third of a frozen attrs instance, which shows on a stream of small chunks.
    """

    #: The text after `data:` and any whitespace, or the whole line when `bare`.
    data: str
    #: The value of the latest `event:` line before this one; each event consumes it.
    event: str | None
    #: True when the line had no `data:` prefix (docs/protocol.md §5 "other JSON").
    bare: bool


# Skips SSEEvent.__new__, a Python-level wrapper around exactly this call.
_new_event = tuple.__new__
_SKIPPED_PREFIXES = (b":", b"id:", b"retry:")
_LF, _CR = 0x0A, 0x0D


class SSEDecoder:
    """Turns the bytes of a stream, split anywhere, into `SSEEvent`s.

    Lines end with `\\n`, `\\r\\n` or a lone `\\r`; a UTF-8 byte order mark opening the
    stream is dropped. Only lines that yield something are decoded, so comments and
    `id:`/`retry:` lines may hold any bytes.

    A line longer than `max_line_bytes` (found out before its end arrives, so memory
    stays bounded) or a line that is not UTF-8 raises `StreamError`. The events of the
    lines before it come first: when the same call has some to return, it returns them
    and the next call raises. After an error every call raises it again. So however a
    stream is cut into chunks, it gives the same events and the same error.
    """

    __slots__ = ("_bom", "_buf", "_error", "_event", "_max", "_skip_lf", "done")

    def __init__(self, *, max_line_bytes: int = 1 << 20) -> None:
        self._max = max_line_bytes
        # The start of a line whose terminator has not arrived; it never holds one.
        self._buf = bytearray()
        # A chunk ended with `\r`: a `\n` opening the next chunk belongs to it.
        self._skip_lf = False
        self._bom = True
        self._event: str | None = None
        self._error: StreamError | None = None
        #: True once `data: [DONE]` was seen; all later input is ignored.
        self.done = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events of the lines this chunk completes."""
        if self._error is not None:
            raise self._error
        if self.done or not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
                if not chunk:
                    return []
        # Only the new bytes are searched: the buffer is known to hold no terminator.
        last = chunk[-1]
        self._skip_lf = last == _CR
        if last in b"\r\n":
            end = len(chunk)
        else:
            end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
            if end == 0:
                if len(self._buf) + len(chunk) > self._max:
                    return self._fail(self._too_long(), [])
                self._buf += chunk
                return []
        if self._buf:
            block = bytes(self._buf) + chunk[:end]
            self._buf.clear()
        else:
            block = chunk if end == len(chunk) else chunk[:end]
        events = self._decode(block)
        if end < len(chunk) and not self.done and self._error is None:
            if len(chunk) - end > self._max:
                return self._fail(self._too_long(), events)
            self._buf += chunk[end:]
        return events

    def close(self) -> list[SSEEvent]:
        """The event of a last line that the end of the stream, not a newline, ended."""
        if self._error is not None:
            raise self._error
        if self.done or not self._buf:
            return []
        block = bytes(self._buf)
        self._buf.clear()
        return self._decode(block)

    def _too_long(self) -> str:
        return f"stream line exceeds {self._max} bytes"

    def _fail(self, message: str, events: list[SSEEvent]) -> list[SSEEvent]:
        self._buf.clear()
        self._error = StreamError(message)
        if events:
            return events
        raise self._error

    def _decode(self, block: bytes) -> list[SSEEvent]:
        lines = block.splitlines()
        too_long = False
        if len(block) > self._max and max(map(len, lines)) > self._max:
            # Only lines before the long one count: a `[DONE]` among them ends the
            # stream cleanly, as it would have if the chunks had been cut between them.
            for i, line in enumerate(lines):  # pragma: no branch - one is too long
                if len(line) > self._max:
                    del lines[i:]
                    too_long = True
                    break
        if self._bom:
            self._bom = False
            if lines and lines[0].startswith(b"\xef\xbb\xbf"):
                lines[0] = lines[0][3:]
        # Splitting bytes, then decoding only the text an event carries, is cheaper than
        # decoding first: slicing non-ASCII str rescans every piece for its widest char.
        events: list[SSEEvent] = []
        event = self._event
        try:
            for line in lines:
                if not line:
                    continue
                if line[:5] == b"data:":
                    value = line[5:].lstrip()
                    if value.rstrip() == b"[DONE]":
                        self.done = True
                        break
                    events.append(_new_event(SSEEvent, (value.decode(), event, False)))
                    event = None
                elif line.startswith(_SKIPPED_PREFIXES):
                    continue
                elif line[:6] == b"event:":
                    event = line[6:].strip().decode() or None
                else:
                    events.append(_new_event(SSEEvent, (line.decode(), event, True)))
                    event = None
        except UnicodeDecodeError:
            return self._fail("stream line is not valid UTF-8", events)
        self._event = event
        if too_long and not self.done:
            return self._fail(self._too_long(), events)
        return events
