"""
Messages, generation parameters, responses and stream chunks, and the one converter
that turns the service's JSON into them.

Every documented constraint of a request is checked here, before anything is sent;
a broken one raises `ValidationError` naming the field and the rule. Responses are
decoded strictly by type but ignore keys they do not know, so a service that adds
fields does not break old clients.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NewType, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

from ._errors import ProtocolError, ValidationError

__all__ = [
    "DEFAULT_MAX_INPUT_CHARS",
    "ChatChunk",
    "ChatParams",
    "ChatResponse",
    "CompletionChunk",
    "CompletionParams",
    "CompletionResponse",
    "Message",
    "MessageLike",
    "RateLimitInfo",
    "Usage",
    "assistant",
    "check_endpoint",
    "check_messages",
    "check_positive_int",
    "check_prompt",
    "decode",
    "user",
]

#: Total characters of all message contents the service accepts (PROTOCOL §3.1).
DEFAULT_MAX_INPUT_CHARS = 4800
MAX_STOP_WORDS = 4
MAX_STOP_WORD_CHARS = 20
MAX_METADATA_PAIRS = 16

Role = Literal["user", "assistant"]
RawJSON = NewType("RawJSON", dict)  # type: ignore[type-arg]
JSONObject = NewType("JSONObject", dict)  # type: ignore[type-arg]


# --- validators: each says the rule it checks, and raises ValidationError naming the field


def _number_in(low: float, high: float, *, low_open: bool = False) -> Any:
    opening = "(" if low_open else "["
    rule = f"must be a number in {opening}{low:g}, {high:g}]"

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value > high
            or value < low
            or (low_open and value == low)
        ):
            raise ValidationError(attribute.name, rule, value)

    return check


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValidationError(attribute.name, "must be a positive integer", value)


def _optional_str(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ValidationError(attribute.name, "must be a string", value)


def _to_stop(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise ValidationError("stop", "must be a list of strings", value)
    words = tuple(value)
    if len(words) > MAX_STOP_WORDS:
        raise ValidationError("stop", f"must have at most {MAX_STOP_WORDS} items", value)
    for i, word in enumerate(words):
        if not isinstance(word, str) or not word:
            raise ValidationError(f"stop[{i}]", "must be a non-empty string", word)
        if len(word) > MAX_STOP_WORD_CHARS:
            raise ValidationError(
                f"stop[{i}]", f"must be at most {MAX_STOP_WORD_CHARS} characters", word
            )
    return words


def _to_metadata(value: object) -> Mapping[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError("metadata", "must be a mapping of strings to strings", value)
    if len(value) > MAX_METADATA_PAIRS:
        raise ValidationError("metadata", f"must have at most {MAX_METADATA_PAIRS} pairs", value)
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValidationError(f"metadata[{key!r}]", "keys and values must be strings", item)
    return dict(value)


@attrs.frozen(kw_only=True)
class CompletionParams:
    """Generation parameters a completion accepts; `None` leaves the server's default."""

    temperature: float | None = attrs.field(default=None, validator=_number_in(0, 1, low_open=True))
    top_k: int | None = attrs.field(default=None, validator=_positive_int)
    top_p: float | None = attrs.field(default=None, validator=_number_in(0, 1))
    penalty_score: float | None = attrs.field(default=None, validator=_number_in(1, 2))
    stop: tuple[str, ...] | None = attrs.field(default=None, converter=_to_stop)
    user_id: str | None = attrs.field(default=None, validator=_optional_str)

    def body_fields(self) -> dict[str, Any]:
        """The fields the caller set, as the JSON body carries them."""
        fields = {k: v for k, v in attrs.asdict(self, recurse=False).items() if v is not None}
        if "stop" in fields:
            fields["stop"] = list(fields["stop"])
        return fields


@attrs.frozen(kw_only=True)
class ChatParams(CompletionParams):
    """Generation parameters a chat accepts: those of a completion, plus `metadata`."""

    metadata: Mapping[str, str] | None = attrs.field(default=None, converter=_to_metadata)


# --- messages


@attrs.frozen
class Message:
    """One turn of a conversation."""

    role: Role
    content: str


def user(text: str) -> Message:
    """A user turn."""
    return Message("user", text)


def assistant(text: str) -> Message:
    """An assistant turn."""
    return Message("assistant", text)


MessageLike = Message | Mapping[str, Any]


def check_messages(
    messages: Sequence[MessageLike], *, max_chars: int | None = DEFAULT_MAX_INPUT_CHARS
) -> list[dict[str, str]]:
    """Check a conversation against PROTOCOL §3.1 and return it as the JSON body carries it.

    Non-empty, an odd count, roles alternating user/assistant from a user turn to a user
    turn, every content a non-blank string, all contents together at most `max_chars`.
    """
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
        raise ValidationError("messages", "must be a list of messages", type(messages).__name__)
    if not messages:
        raise ValidationError("messages", "must not be empty")
    if len(messages) % 2 == 0:
        raise ValidationError("messages", "must have an odd number of messages", len(messages))
    body: list[dict[str, str]] = []
    total = 0
    for i, message in enumerate(messages):
        role: object
        content: object
        if isinstance(message, Message):
            role, content = message.role, message.content
        elif isinstance(message, Mapping):
            role, content = message.get("role"), message.get("content")
        else:
            raise ValidationError(f"messages[{i}]", "must be a Message or a mapping", message)
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValidationError(
                f"messages[{i}].role",
                f"must be {expected!r}: roles alternate user/assistant, starting with user",
                role,
            )
        if not isinstance(content, str) or not content.strip():
            raise ValidationError(f"messages[{i}].content", "must be a non-blank string")
        total += len(content)
        body.append({"role": expected, "content": content})
    if max_chars is not None and total > max_chars:
        raise ValidationError(
            "messages", f"total content must be at most {max_chars} characters", total
        )
    return body


def check_prompt(prompt: object) -> str:
    """A completion prompt is a non-blank string."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError("prompt", "must be a non-blank string")
    return prompt


_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.~-]*")


def check_endpoint(endpoint: object) -> str:
    """An endpoint is a deployment's API name: one URL path segment, never `..` or a slash."""
    if not isinstance(endpoint, str) or not _ENDPOINT_NAME.fullmatch(endpoint):
        raise ValidationError(
            "endpoint",
            "must be one path segment of letters, digits, '_', '-', '.', '~' "
            "(no '/', not empty, not starting with '.')",
            endpoint,
        )
    return endpoint


def check_positive_int(value: object, field: str) -> int:
    """A count or a size: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field, "must be a positive integer", value)
    return value


# --- responses


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
    """The `X-Ratelimit-*` headers of an answer (PROTOCOL §7); `None` where absent."""

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


_NO_LIMITS = RateLimitInfo()


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


@attrs.frozen(kw_only=True)
class ChatResponse(_Answer):
    """The answer of a chat endpoint."""

    usage: Usage
    function_call: JSONObject | None = None
    search_info: JSONObject | None = None


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
    usage: Usage | None = None
    raw: RawJSON = attrs.field(factory=lambda: RawJSON({}), repr=False, eq=False)


@attrs.frozen(kw_only=True)
class ChatChunk(_Chunk):
    """One sentence of a streamed chat answer; `result` is the new text only."""


@attrs.frozen(kw_only=True)
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
