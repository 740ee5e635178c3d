"""The client's answers out as OpenAI's objects: completions, chunks, embeddings, models."""

from __future__ import annotations

import base64
import os
import sys
from array import array
from typing import Any

from .._models import ChatResponse, CompletionResponse, Usage

__all__ = [
    "ChatChunks",
    "CompletionChunks",
    "chat_completion",
    "embedding_list",
    "encode_base64",
    "finish_reason",
    "model_card",
    "model_list",
    "text_completion",
]

_FINISH_REASONS = {
    "normal": "stop",
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "function_call": "tool_calls",
}


def finish_reason(reason: str | None, truncated: bool, function_call: object) -> str:
    """OpenAI's finish reason for Wenxin's `finish_reason` / `is_truncated` / `function_call`."""
    if function_call is not None:
        return "tool_calls"
    if truncated:
        return "length"
    return _FINISH_REASONS.get(reason or "normal", "stop")


def usage_fields(value: Usage | None) -> dict[str, int]:
    if value is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": value.prompt_tokens,
        "completion_tokens": value.completion_tokens,
        "total_tokens": value.total_tokens,
    }


def new_call_id() -> str:
    """A tool call id in OpenAI's form; it only has to be unique within a conversation."""
    return "call_" + os.urandom(12).hex()


def tool_call(function_call: Any, index: int | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": new_call_id(),
        "type": "function",
        "function": {"name": function_call.name, "arguments": function_call.arguments},
    }
    if index is not None:  # stream deltas number their calls
        call = {"index": index, **call}
    return call


def chat_completion(reply: ChatResponse, model: str) -> dict[str, Any]:
    function_call = reply.function_call
    message: dict[str, Any] = {"role": "assistant", "content": reply.result, "refusal": None}
    if function_call is not None:
        message["content"] = reply.result or None
        message["tool_calls"] = [tool_call(function_call)]
    return {
        "id": f"chatcmpl-{reply.id}",
        "object": "chat.completion",
        "created": reply.created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(
                    reply.finish_reason, reply.is_truncated, function_call
                ),
            }
        ],
        "usage": usage_fields(reply.usage),
        "system_fingerprint": None,
    }


def text_completion(reply: CompletionResponse, model: str) -> dict[str, Any]:
    return {
        "id": f"cmpl-{reply.id}",
        "object": "text_completion",
        "created": reply.created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": reply.result,
                "logprobs": None,
                "finish_reason": finish_reason(reply.finish_reason, reply.is_truncated, None),
            }
        ],
        "usage": usage_fields(reply.usage),
    }


class ChatChunks:
    """The `chat.completion.chunk` objects of one stream, made as its sentences arrive."""

    object_name = "chat.completion.chunk"

    prefix = "chatcmpl-"

    def __init__(self, model: str, usage: bool) -> None:
        self.id = self.prefix
        self.created = 0
        self.model = model
        self.with_usage = usage
        self.called = False

    def begin(self, upstream_id: str, created: int) -> None:
        """Take the id and time of the stream's first chunk."""
        self.id = self.prefix + upstream_id
        self.created = created

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        chunk = {
            "id": self.id,
            "object": self.object_name,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [choice],
        }
        if self.with_usage:  # OpenAI sends a null usage on every chunk but the last
            chunk["usage"] = None
        return chunk

    def first(self) -> dict[str, Any]:
        delta = {"role": "assistant", "content": ""}
        return self._chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None})

    def sentence(self, text: str, function_call: object = None) -> dict[str, Any] | None:
        delta: dict[str, Any] = {}
        if text:
            delta["content"] = text
        if function_call is not None and not self.called:
            self.called = True
            delta["tool_calls"] = [tool_call(function_call, index=0)]
        if not delta:
            return None
        return self._chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None})

    def last(self, reason: str | None, truncated: bool) -> dict[str, Any]:
        why = finish_reason(reason, truncated, True if self.called else None)
        return self._chunk({"index": 0, "delta": {}, "logprobs": None, "finish_reason": why})

    def usage(self, value: Usage | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object_name,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": usage_fields(value),
        }


class CompletionChunks(ChatChunks):
    """The `text_completion` chunks of one completion stream."""

    object_name = "text_completion"
    prefix = "cmpl-"

    def first(self) -> None:  # type: ignore[override]
        return None  # a completion stream has no role chunk

    def sentence(self, text: str, function_call: object = None) -> dict[str, Any] | None:
        if not text:
            return None
        return self._chunk({"index": 0, "text": text, "logprobs": None, "finish_reason": None})

    def last(self, reason: str | None, truncated: bool) -> dict[str, Any]:
        why = finish_reason(reason, truncated, None)
        return self._chunk({"index": 0, "text": "", "logprobs": None, "finish_reason": why})

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        chunk = super()._chunk(choice)
        del chunk["system_fingerprint"]
        return chunk

    def usage(self, value: Usage | None) -> dict[str, Any]:
        chunk = super().usage(value)
        del chunk["system_fingerprint"]
        return chunk


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 embedding: the vector as little-endian float32, base64-encoded."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def embedding_list(
    vectors: list[list[float]], usage_: Usage | None, model: str, as_base64: bool
) -> dict[str, Any]:
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": encode_base64(vector) if as_base64 else vector,
        }
        for i, vector in enumerate(vectors)
    ]
    tokens = usage_.prompt_tokens if usage_ is not None else 0
    total = usage_.total_tokens if usage_ is not None else tokens
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": total},
    }


def model_list(names: list[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(name, created) for name in names]}


def model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "baiduwx"}
