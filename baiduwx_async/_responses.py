"""
Answers and stream chunks, and the one converter that turns the service's JSON into them.

Decoding is strict about the types of the fields we name and silent about keys we do not
know: every answer keeps the whole JSON it was sent as `.raw`, so a field the service adds
tomorrow is never lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NewType, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

from ._errors import ProtocolError
from ._messages import FunctionCall, Message

__all__ = [
    "ChatChunk",
    "ChatResponse",
    "CompletionChunk",
    "CompletionResponse",
    "RateLimitInfo",
    "SearchInfo",
    "SearchResult",
    "Usage",
    "converter",
    "decode",
]

RawJSON = NewType("RawJSON", dict)  # type: ignore[type-arg]
JSONObject = NewType("JSONObject", dict)  # type: ignore[type-arg]


@attrs.frozen
class Usage:
    """Tokens counted by the service."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def _lenient_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except (ValueError, OverflowError):
        return None


@attrs.frozen
class RateLimitInfo:
    """The `X-Ratelimit-*` headers of an answer (docs/protocol.md §7); `None` where absent."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo:
        get = headers.get
        return cls(
            _lenient_int(get("x-ratelimit-limit-requests")),
            _lenient_int(get("x-ratelimit-limit-tokens")),
            _lenient_int(get("x-ratelimit-remaining-requests")),
            _lenient_int(get("x-ratelimit-remaining-tokens")),
        )


NO_LIMITS = _NO_LIMITS = RateLimitInfo()


@attrs.frozen(kw_only=True)
class _Answer:
    id: str
    object: str
    created: int
    result: str
    is_truncated: bool = False
    need_clear_history: bool = False
    finish_reason: str | None = None
    ban_round: int | None = None
    flag: int | None = None
    #: The `X-Baidu-Request-Id` the server echoed, else the `Request_id` we sent.
    request_id: str | None = None
    ratelimit: RateLimitInfo = _NO_LIMITS
    #: The decoded JSON exactly as received, unknown keys included.
    raw: RawJSON = attrs.field(factory=lambda: RawJSON({}), repr=False, eq=False)


@attrs.frozen
class SearchResult:
    """One web page a search-augmented answer drew on."""

    index: int | None = None
    url: str | None = None
    title: str | None = None


@attrs.frozen
class SearchInfo:
    """The search results an ERNIE answer cites (`enable_citation`)."""

    search_results: list[SearchResult] = attrs.field(factory=list)


@attrs.frozen(kw_only=True)
class ChatResponse(_Answer):
    """The answer of a chat endpoint. When the model asks for a function to be called,
    `function_call` says which (and `result` is empty)."""

    usage: Usage
    function_call: FunctionCall | None = None
    search_info: SearchInfo | None = None

    @property
    def message(self) -> Message:
        """This answer as the assistant turn to append to the conversation.

        An answer with neither text nor a `function_call` (one the service filtered, say)
        makes a turn with blank content, which the next call refuses (`ValidationError` on
        its `content`): check `result` before sending the conversation on."""
        return Message("assistant", self.result, function_call=self.function_call)


@attrs.frozen(kw_only=True)
class CompletionResponse(_Answer):
    """The answer of a completions endpoint."""

    usage: Usage
    is_safe: int | None = None


# Not slotted: a stream builds thousands of chunks, and an instance dict is set in one
# step (`_chunks`), where slots take one call per field.
@attrs.frozen(kw_only=True, slots=False)
class _Chunk:
    id: str
    object: str
    created: int
    sentence_id: int
    is_end: bool
    result: str
    is_truncated: bool = False
    need_clear_history: bool = False
    finish_reason: str | None = None
    ban_round: int | None = None
    flag: int | None = None
    usage: Usage | None = None
    raw: RawJSON = attrs.field(factory=lambda: RawJSON({}), repr=False, eq=False)


@attrs.frozen(kw_only=True, slots=False)
class ChatChunk(_Chunk):
    """One sentence of a streamed chat answer; `result` is the new text only. A
    `function_call` may come in any chunk (usually the last)."""

    function_call: FunctionCall | None = None
    search_info: SearchInfo | None = None


@attrs.frozen(kw_only=True, slots=False)
class CompletionChunk(_Chunk):
    """One sentence of a streamed completion; `result` is the new text only."""


# --- the converter: strict about types, silent about unknown keys


def _strict(kind: type, name: str) -> Any:
    def structure(value: object, _: object) -> object:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {name}, got a boolean")
        if not isinstance(value, kind):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        return value

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(str, _strict(str, "a string"))
    converter.register_structure_hook(bool, _strict(bool, "a boolean"))
    converter.register_structure_hook(int, _strict(int, "an integer"))
    converter.register_structure_hook(float, _strict(int | float, "a number"))  # type: ignore[arg-type]
    converter.register_structure_hook(RawJSON, lambda value, _: value)
    converter.register_structure_hook(RateLimitInfo, lambda value, _: value)
    converter.register_structure_hook(JSONObject, _strict(dict, "an object"))

    def objects_only(cls: type) -> Any:
        # cattrs would read a string as an object whose fields are all missing (`"x" in "…"`)
        structure: Any = make_dict_structure_fn(cls, converter)

        def structure_object(value: object, kind: object) -> object:
            if not isinstance(value, dict):
                raise TypeError(f"expected an object, got {type(value).__name__}")
            return structure(value, kind)

        return structure_object

    converter.register_structure_hook_factory(attrs.has, objects_only)
    return converter


converter = _make_converter()

T = TypeVar("T", ChatResponse, CompletionResponse, ChatChunk, CompletionChunk)


def decode(
    data: object,
    cls: type[T],
    *,
    request_id: str | None = None,
    ratelimit: RateLimitInfo = _NO_LIMITS,
) -> T:
    """Build a response or chunk from decoded JSON; `ProtocolError` says what is wrong."""
    if not isinstance(data, dict):
        raise ProtocolError(
            f"expected a JSON object, got {type(data).__name__}", request_id=request_id
        )
    fields = {**data, "raw": data}
    if cls is ChatResponse or cls is CompletionResponse:
        fields["request_id"] = request_id
        fields["ratelimit"] = ratelimit
    try:
        return converter.structure(fields, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        detail = (
            "; ".join(cattrs.transform_error(exc, path="body"))[:300]
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise ProtocolError(f"malformed {cls.__name__}: {detail}", request_id=request_id) from None
