"""
The keywords of a call: generation parameters (checked here), the ERNIE family's chat
fields (checked for type and shape only: the service judges ranges that differ per model),
and the options of the call itself (`extra_body`, `extra_headers`, `extra_query`,
`timeout`, `max_retries`, `request_id`; checked in `_extras`).

The keywords are declared once, as `TypedDict`s that the public calls take as
`**params: Unpack[...]`; a keyword of another client's vocabulary (`max_tokens`, `model`)
is a `TypeError` that names ours (`_keywords`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict, TypeVar

import attrs
import httpx

from ._errors import ValidationError
from ._extras import NO_EXTRAS, Extras, QueryValue, check_json
from ._keywords import check_unknown
from ._messages import Function, FunctionParam

__all__ = [
    "CALL_OPTIONS",
    "CHAT_KEYS",
    "COMPLETION_KEYS",
    "EMBED_KEYS",
    "NO_EXTRAS",
    "CallOptions",
    "ChatOptions",
    "ChatParams",
    "CompletionOptions",
    "CompletionParams",
    "EmbedOptions",
    "Extras",
    "ToolChoice",
    "split_params",
]

MAX_STOP_WORDS = 4
MAX_STOP_WORD_CHARS = 20
MAX_METADATA_PAIRS = 16


class _ToolChoiceFunction(TypedDict):
    name: str


class ToolChoice(TypedDict):
    """Forces one function: `{"type": "function", "function": {"name": "get_weather"}}`."""

    type: Literal["function"]
    function: _ToolChoiceFunction


class CallOptions(TypedDict, total=False):
    """Options of every call."""

    #: merged into the JSON body last: any field the service knows and we do not
    extra_body: Mapping[str, object] | None
    extra_headers: Mapping[str, str] | None
    extra_query: Mapping[str, QueryValue] | None
    #: seconds or an `httpx.Timeout`, instead of the client's, for this call
    timeout: float | httpx.Timeout | None
    max_retries: int | None
    #: sent as `Request_id` (one is generated otherwise)
    request_id: str | None


class _CompletionFields(TypedDict, total=False):
    temperature: float | None
    top_k: int | None
    top_p: float | None
    penalty_score: float | None
    stop: Sequence[str] | str | None
    user_id: str | None


class _ChatFields(_CompletionFields, total=False):
    metadata: Mapping[str, str] | None
    system: str | None
    max_output_tokens: int | None
    response_format: Literal["text", "json_object"] | None
    disable_search: bool | None
    enable_citation: bool | None
    enable_trace: bool | None
    functions: Sequence[Function | FunctionParam] | None
    tool_choice: ToolChoice | None
    user_ip: str | None


class _EmbedFields(TypedDict, total=False):
    user_id: str | None
    #: texts sent in one request: 16, or 1 for tao_8k, when None
    texts_per_request: int | None


# The fields first, then the options of the call: the order help() lists them in.


class CompletionOptions(_CompletionFields, CallOptions, total=False):
    """The keywords of `complete()` and `complete_stream()`."""


class ChatOptions(_ChatFields, CallOptions, total=False):
    """The keywords of `chat()`, `chat_stream()` and the chat batches."""


class EmbedOptions(_EmbedFields, CallOptions, total=False):
    """The keywords of `embed()` and the embedding batches."""


CALL_OPTIONS = frozenset(CallOptions.__annotations__)
#: The keywords each kind of call takes.
CHAT_KEYS = frozenset(ChatOptions.__annotations__)
COMPLETION_KEYS = frozenset(CompletionOptions.__annotations__)
EMBED_KEYS = frozenset(EmbedOptions.__annotations__)


# --- validators: each says the rule it checks, and raises ValidationError naming the field


def _number_in(low: float, high: float, *, low_open: bool = False, hint: str = "") -> Any:
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
            raise ValidationError(attribute.name, rule + (hint if value == low else ""), value)

    return check


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValidationError(attribute.name, "must be a positive integer", value)


def _optional(kind: type, rule: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, kind):
            raise ValidationError(attribute.name, rule, value)

    return check


_optional_str = _optional(str, "must be a string")
_optional_bool = _optional(bool, "must be True or False")


def _response_format(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and value not in ("text", "json_object"):
        raise ValidationError(attribute.name, "must be 'text' or 'json_object'", value)


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


def _to_functions(value: object) -> tuple[dict[str, Any], ...] | None:
    """`Function`s or mappings, as the JSON body carries them."""
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise ValidationError("functions", "must be a list of Function or mappings", value)
    bodies = []
    for i, function in enumerate(value):
        field = f"functions[{i}]"
        try:
            if not isinstance(function, Function):
                if not isinstance(function, Mapping):
                    raise ValidationError(field, "must be a Function or a mapping", function)
                try:
                    function = Function(**function)
                except TypeError as exc:  # a missing or unknown key
                    raise ValidationError(
                        field, f"needs name, description, parameters (responses, examples): {exc}"
                    ) from None
            body = function.to_body()
        except ValidationError as exc:
            if exc.field.startswith(field):
                raise
            inner = exc.field.removeprefix("Function").removeprefix(".")
            raise ValidationError(f"{field}.{inner}", exc.rule, exc.value) from None
        for key, item in body.items():
            check_json(f"{field}.{key}", item)
        bodies.append(body)
    return tuple(bodies)


def _to_tool_choice(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    rule = 'must be {"type": "function", "function": {"name": NAME}}'
    if not isinstance(value, Mapping) or value.get("type") != "function":
        raise ValidationError("tool_choice", rule, value)
    function = value.get("function")
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("tool_choice.function.name", "must be a non-blank string", name)
    choice = {**value, "function": dict(function)}  # type: ignore[arg-type]
    for key, item in choice.items():
        check_json(f"tool_choice.{key}", item)
    return choice


_ZERO_HINT = (
    ": the service refuses 0; for (nearly) deterministic answers use a small value such as 0.01"
)


@attrs.frozen(kw_only=True)
class CompletionParams:
    """Generation parameters a completion accepts; `None` leaves the server's default."""

    temperature: float | None = attrs.field(
        default=None, validator=_number_in(0, 1, low_open=True, hint=_ZERO_HINT)
    )
    top_k: int | None = attrs.field(default=None, validator=_positive_int)
    top_p: float | None = attrs.field(default=None, validator=_number_in(0, 1))
    penalty_score: float | None = attrs.field(default=None, validator=_number_in(1, 2))
    stop: tuple[str, ...] | None = attrs.field(default=None, converter=_to_stop)
    user_id: str | None = attrs.field(default=None, validator=_optional_str)

    def body_fields(self) -> dict[str, Any]:
        """The fields the caller set, as the JSON body carries them."""
        fields = {}
        for name in _body_names(type(self)):
            value = getattr(self, name)
            if value is not None:
                fields[name] = list(value) if type(value) is tuple else value
        return fields


@attrs.frozen(kw_only=True)
class ChatParams(CompletionParams):
    """Generation parameters a chat accepts: those of a completion, `metadata`, and the
    ERNIE family's fields."""

    metadata: Mapping[str, str] | None = attrs.field(default=None, converter=_to_metadata)
    system: str | None = attrs.field(default=None, validator=_optional_str)
    max_output_tokens: int | None = attrs.field(default=None, validator=_positive_int)
    response_format: str | None = attrs.field(default=None, validator=_response_format)
    disable_search: bool | None = attrs.field(default=None, validator=_optional_bool)
    enable_citation: bool | None = attrs.field(default=None, validator=_optional_bool)
    enable_trace: bool | None = attrs.field(default=None, validator=_optional_bool)
    functions: tuple[dict[str, Any], ...] | None = attrs.field(
        default=None, converter=_to_functions
    )
    tool_choice: Mapping[str, Any] | None = attrs.field(default=None, converter=_to_tool_choice)
    user_ip: str | None = attrs.field(default=None, validator=_optional_str)


_NAMES: dict[type, tuple[str, ...]] = {}


def _body_names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(field.name for field in attrs.fields(cls))
    return names


P = TypeVar("P", bound=CompletionParams)


def split_params(
    call: str, params: Mapping[str, Any], cls: type[P], known: frozenset[str]
) -> tuple[dict[str, Any], Extras]:
    """A call's keywords: the body fields of its generation parameters, and its options."""
    if not params:
        return {}, NO_EXTRAS
    check_unknown(call, params, known)
    generation = {}
    options = {}
    for name, value in params.items():
        if name in CALL_OPTIONS:
            options[name] = value
        else:
            generation[name] = value
    fields = cls(**generation).body_fields() if generation else {}
    return fields, Extras(**options) if options else NO_EXTRAS
