"""One SSE answer (docs/protocol.md §5): a chunk per sentence, stream faults, disconnects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from ._text import Answer
from ._validate import ParsedRequest
from ._wire import Headers, Receive, Send, dumps

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["StreamWriter"]

#: Faults after which the stream stops early (after half of its sentences, at least one).
_STOPPING_FAULTS = frozenset(
    {"cut_stream", "reset_stream", "midstream_error", "midstream_error_line"}
)
_KEEPALIVE = b": keep-alive\n\n"
_DONE = b"data: [DONE]\n\n"


class StreamWriter:
    """Sends one stream; `run` returns the outcome for the statistics."""

    def __init__(
        self,
        emulator: Emulator,
        receive: Receive,
        send: Send,
        object_name: str,
        parsed: ParsedRequest,
        answer: Answer,
        fault: str | None,
    ) -> None:
        self._emu = emulator
        self._receive = receive
        self._send = send
        self._object = object_name
        self._parsed = parsed
        self._answer = answer
        self._fault = fault
        self._id = emulator._dice.response_id()
        self._finished = False  # everything meant to be sent was sent
        self._abandoned = False

    def _chunk(self, sentence_id: int, result: str, completion: int, is_end: bool) -> bytes:
        prompt = self._parsed.prompt_tokens
        envelope: dict[str, Any] = {
            "id": self._id,
            "object": self._object,
            "created": int(self._emu.clock()),
            "sentence_id": 0 if self._emu.config.stream_sentence_id_zero else sentence_id,
            "is_end": is_end,
            "is_truncated": False,
            "result": result,
            "need_clear_history": False,
            "finish_reason": "normal",
        }
        answer = self._answer
        if is_end and not answer.plain:
            # what an ERNIE field changed shows on the last chunk
            envelope["is_truncated"] = answer.is_truncated
            del envelope["finish_reason"]  # after the function_call, as in a plain answer
            if answer.function_call is not None:
                envelope["function_call"] = answer.function_call
            if answer.search_info is not None:
                envelope["search_info"] = answer.search_info
            envelope["finish_reason"] = answer.finish_reason
        envelope["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        data = b"data: " + dumps(envelope) + b"\n\n"
        return _KEEPALIVE + data if self._emu.config.sse_keepalive else data

    def _error_line(self, *, data_prefix: bool) -> bytes:
        body = dumps({"error_code": 336100, "error_msg": "high load", "id": self._id})
        return (b"data: " + body if data_prefix else body) + b"\n\n"

    async def _write(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})
        # uvicorn's send() neither fails nor yields once the client has gone: yield here so
        # the disconnect watcher can notice and count the stream as abandoned.
        await anyio.lowlevel.checkpoint()

    async def _watch(self, scope: anyio.CancelScope) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self._finished:
            self._abandoned = True
            scope.cancel()

    async def _produce(self) -> None:
        config = self._emu.config
        fault = self._fault
        pieces = self._answer.pieces
        piece_tokens = self._answer.piece_tokens
        count = len(pieces)
        stops = fault in _STOPPING_FAULTS
        stop_after = max(1, count // 2) if stops else count
        tps = config.tokens_per_second
        completion = 0
        for index in range(stop_after):
            delay = piece_tokens[index] / tps if tps else 0.0
            if index == 0:
                delay += config.first_token_latency
            if delay:
                await anyio.sleep(delay)
            completion += piece_tokens[index]
            is_end = not stops and index == count - 1 and not config.stream_empty_end
            await self._write(self._chunk(index, pieces[index], completion, is_end))
            if index == 0 and fault == "malformed_line":
                await self._write(b'data: {"id":"' + self._id.encode() + b'","result":"\n\n')
        if fault == "midstream_error":
            await self._write(self._error_line(data_prefix=True))
        elif fault == "midstream_error_line":
            await self._write(self._error_line(data_prefix=False))
        elif not stops:
            if config.stream_empty_end:
                await self._write(self._chunk(count, "", completion, True))
            if config.sse_done:
                await self._write(_DONE)

    async def run(self, headers: Headers) -> str:
        """Send the stream; the outcome: "ok", "abandoned" or the fault's name.

        After "reset_stream" the answer is left unfinished: the caller drops the connection.
        """
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch, group.cancel_scope)
            try:
                await self._produce()
                await anyio.lowlevel.checkpoint()  # a disconnect during the last write counts
                self._finished = True
                if self._fault != "reset_stream":
                    await self._send(
                        {"type": "http.response.body", "body": b"", "more_body": False}
                    )
            except OSError:  # ASGI servers of spec >= 2.4 raise on a send after a disconnect
                self._abandoned = True
            group.cancel_scope.cancel()
        if self._abandoned:
            self._emu._stats.streams_abandoned += 1
            return "abandoned"
        return "ok" if self._fault in (None, "slow_first_byte") else str(self._fault)
