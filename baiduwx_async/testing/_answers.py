"""The answers a `WenxinMock` route gives: protocol-shaped bodies (docs/protocol.md §4 to §6).

Token counts, ids and error texts are the emulator's (`baiduwx_async.emulator`), imported
by the functions that use them so that importing the kit stays cheap.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
import httpx

from .._models import Usage

__all__ = [
    "Answer",
    "EmbeddingAnswer",
    "ErrorAnswer",
    "HTTPErrorAnswer",
    "Kind",
    "RequestInfo",
    "Script",
    "TextAnswer",
    "UsageLike",
    "VectorsLike",
]

#: The kinds of model route: chat, completions and embeddings.
Kind = Literal["chat", "completions", "embeddings"]

_HTTP_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                 503: "Service Unavailable"}  # fmt: skip


#: Token usage given to a mock answer: a `Usage`, or a mapping with its three keys.
UsageLike = Usage | Mapping[str, int]


def _usage_dict(usage: UsageLike) -> dict[str, int]:
    if isinstance(usage, Usage):
        return attrs.asdict(usage)
    prompt = int(usage.get("prompt_tokens", 0))
    completion = int(usage.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens", prompt + completion)),
    }


@attrs.frozen
class RequestInfo:
    """What an answer needs to know of the request it answers."""

    kind: Kind
    stream: bool
    prompt_tokens: int
    response_id: str  # the answer's `id`
    endpoint: str = ""
    #: The texts of an embeddings request.
    texts: tuple[str, ...] = ()


@attrs.frozen
class TextAnswer:
    """A successful answer: the pieces a stream sends (one for a plain answer)."""

    pieces: tuple[str, ...]
    usage: UsageLike | None
    error_code: int | None = None  # a mid-stream error after the pieces
    end: bool = True  # send is_end (False: the stream stops without it)
    #: `{"name", "arguments", "thoughts"}`: a function call (then the pieces are `("",)`),
    #: sent with `finish_reason` "function_call" (on a stream's last chunk).
    function_call: Mapping[str, str] | None = attrs.field(default=None, eq=False)

    def respond(self, request: RequestInfo, headers: dict[str, str]) -> httpx.Response:
        from ..emulator import count_tokens
        from ..emulator._wire import dumps, error_message

        text = "".join(self.pieces)
        completion = count_tokens(text)
        if self.function_call is not None:
            # as the emulator counts a call: its arguments and thoughts
            call = self.function_call
            completion = count_tokens(call["arguments"]) + count_tokens(call["thoughts"])
        usage = _usage_dict(
            self.usage
            if self.usage is not None
            else {"prompt_tokens": request.prompt_tokens, "completion_tokens": completion}
        )
        answer_id = request.response_id
        obj = "chat.completion" if request.kind == "chat" else "completion"
        created = int(time.time())
        if not request.stream:
            body = {
                "id": answer_id,
                "object": obj,
                "created": created,
                "result": text,
                "is_truncated": False,
                "need_clear_history": False,
                "usage": usage,
            }
            if self.function_call is not None:  # as the emulator answers a function call
                del body["usage"]
                body["function_call"] = dict(self.function_call)
                body["finish_reason"] = "function_call"
                body["usage"] = usage
            headers["content-type"] = "application/json"
            return httpx.Response(200, headers=headers, content=dumps(body))
        events: list[bytes] = []
        done = 0
        last = len(self.pieces) - 1
        for index, piece in enumerate(self.pieces):
            done += count_tokens(piece)
            is_end = self.end and self.error_code is None and index == last
            partial = min(done, usage["completion_tokens"])
            chunk_usage = (
                usage
                if is_end
                else {
                    "prompt_tokens": usage["prompt_tokens"],
                    "completion_tokens": partial,
                    "total_tokens": usage["prompt_tokens"] + partial,
                }
            )
            chunk = {
                "id": answer_id,
                "object": obj,
                "created": created,
                "sentence_id": index,
                "is_end": is_end,
                "is_truncated": False,
                "result": piece,
                "need_clear_history": False,
                "finish_reason": "normal",
                "usage": chunk_usage,
            }
            if is_end and self.function_call is not None:
                del chunk["finish_reason"], chunk["usage"]
                chunk["function_call"] = dict(self.function_call)
                chunk["finish_reason"] = "function_call"
                chunk["usage"] = chunk_usage
            events.append(b"data: " + dumps(chunk) + b"\n\n")
        if self.error_code is not None:
            error = {
                "error_code": self.error_code,
                "error_msg": error_message(self.error_code),
                "id": answer_id,
            }
            events.append(b"data: " + dumps(error) + b"\n\n")
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        return httpx.Response(200, headers=headers, content=b"".join(events))


#: Vectors given to a mock embeddings answer: one per text of the request, or a function
#: of the text.
VectorsLike = Sequence[Sequence[float]] | Callable[[str], Sequence[float]]


@attrs.frozen
class EmbeddingAnswer:
    """An embeddings answer: the given vectors, or the emulator's for each text."""

    vectors: VectorsLike | None = attrs.field(eq=False)
    dimension: int | None
    usage: UsageLike | None

    def respond(self, request: RequestInfo, headers: dict[str, str]) -> httpx.Response:
        import json

        from ..emulator._config import PRESET_EMBEDDINGS
        from ..emulator._embeddings import vector_json
        from ..emulator._wire import dumps

        texts = request.texts
        vectors = self.vectors
        if vectors is None:
            dimension = self.dimension
            if dimension is None:
                preset = PRESET_EMBEDDINGS.get(request.endpoint)
                dimension = 384 if preset is None else preset.dimension
            rows = [json.loads(vector_json(request.endpoint, t, dimension)) for t in texts]
        elif callable(vectors):
            rows = [[float(v) for v in vectors(t)] for t in texts]
        else:
            if len(vectors) != len(texts):
                message = f"the mock has {len(vectors)} vectors for {len(texts)} texts"
                return ErrorAnswer(336003, message).respond(request, headers)
            rows = [[float(v) for v in vector] for vector in vectors]
        tokens = request.prompt_tokens
        usage: Mapping[str, int] = {"prompt_tokens": tokens, "total_tokens": tokens}
        if self.usage is not None:
            full = _usage_dict(self.usage)
            usage = {"prompt_tokens": full["prompt_tokens"], "total_tokens": full["total_tokens"]}
        body = {
            "id": request.response_id,
            "object": "embedding_list",
            "created": int(time.time()),
            "data": [
                {"object": "embedding", "embedding": row, "index": index}
                for index, row in enumerate(rows)
            ],
            "usage": usage,
        }
        headers["content-type"] = "application/json"
        return httpx.Response(200, headers=headers, content=dumps(body))


@attrs.frozen
class ErrorAnswer:
    """An `error_code` answer: HTTP 200, one line of JSON, stream or not (docs/protocol.md §6)."""

    code: int
    message: str | None

    def respond(self, request: RequestInfo, headers: dict[str, str]) -> httpx.Response:
        from ..emulator._wire import dumps, error_message

        body = {
            "error_code": self.code,
            "error_msg": self.message or error_message(self.code),
            "id": request.response_id,
        }
        headers["content-type"] = "application/json"
        return httpx.Response(200, headers=headers, content=dumps(body))


@attrs.frozen
class HTTPErrorAnswer:
    """A bare HTTP failure (429, 5xx…), optionally with `Retry-After`."""

    status: int
    retry_after: float | None

    def respond(self, request: RequestInfo, headers: dict[str, str]) -> httpx.Response:
        headers["content-type"] = "text/plain; charset=utf-8"
        if self.retry_after is not None:
            headers["retry-after"] = f"{self.retry_after:g}"
        reason = _HTTP_REASONS.get(self.status, f"HTTP {self.status}")
        return httpx.Response(self.status, headers=headers, content=reason.encode())


Answer = TextAnswer | EmbeddingAnswer | ErrorAnswer | HTTPErrorAnswer


class Script:
    """The answers of one route: counted ones first, in order, then the latest lasting one."""

    def __init__(self) -> None:
        self.counted: deque[list[Any]] = deque()  # [answer, remaining]
        self.lasting: Answer | None = None

    def add(self, answer: Answer, times: int | None) -> None:
        if times is None:
            self.lasting = answer
        else:
            if isinstance(times, bool) or not isinstance(times, int) or times < 1:
                raise ValueError(f"times must be a positive integer or None, got {times!r}")
            self.counted.append([answer, times])

    def next(self) -> Answer | None:
        while self.counted:
            entry = self.counted[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self.counted.popleft()
            answer: Answer = entry[0]
            return answer
        return self.lasting
