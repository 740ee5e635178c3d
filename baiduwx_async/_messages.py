"""
Messages of a conversation, function definitions and function calls, and the rules a
conversation must follow before it is sent.

Turns alternate between the user side (a `user` message, or a `function` message carrying
a function's result) and the `assistant`, starting with a user message and ending on the
user side. An assistant turn may carry only a `function_call` (its content then empty).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

import attrs

from ._errors import ProtocolError, ValidationError

__all__ = [
    "DEFAULT_MAX_INPUT_CHARS",
    "AssistantMessageParam",
    "Function",
    "FunctionCall",
    "FunctionCallParam",
    "FunctionMessageParam",
    "FunctionParam",
    "Message",
    "MessageLike",
    "MessageParam",
    "UserMessageParam",
    "assistant",
    "check_messages",
    "function_result",
    "user",
]

#: Total characters of all message contents the service accepts.
DEFAULT_MAX_INPUT_CHARS = 4800

Role = Literal["user", "assistant", "function"]


# --- the shapes of plain-dict messages, so a type checker catches {"role": "usr"}


class _FunctionCallRequired(TypedDict):
    name: str
    arguments: str


class FunctionCallParam(_FunctionCallRequired, total=False):
    """A function call as a mapping: `arguments` is the JSON text of the arguments."""

    thoughts: str


class UserMessageParam(TypedDict):
    """A user turn as a plain dict: `{"role": "user", "content": "..."}`."""

    role: Literal["user"]
    content: str


class _AssistantRequired(TypedDict):
    role: Literal["assistant"]
    content: str


class AssistantMessageParam(_AssistantRequired, total=False):
    """An assistant turn as a plain dict; `function_call` when the model asked for a call."""

    function_call: FunctionCallParam | FunctionCall


class FunctionMessageParam(TypedDict):
    """A function's result as a plain dict: `{"role": "function", "name": ..., "content": ...}`."""

    role: Literal["function"]
    name: str
    content: str


MessageParam = UserMessageParam | AssistantMessageParam | FunctionMessageParam
"""Any turn as a plain dict, checked by type checkers (a wrong role or key is an error)."""


class _FunctionRequired(TypedDict):
    name: str
    description: str
    parameters: Mapping[str, Any]


class FunctionParam(_FunctionRequired, total=False):
    """A function definition as a mapping (see `Function`)."""

    responses: Mapping[str, Any]
    examples: Sequence[Sequence[Any]]


# --- function calls


@attrs.frozen
class FunctionCall:
    """The model asks for a function to be called: `arguments` is JSON text, as sent."""

    name: str
    arguments: str = ""
    thoughts: str | None = None

    def parse_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; `ProtocolError` when they are not a JSON object."""
        try:
            value = json.loads(self.arguments)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise ProtocolError(
                f"function_call {self.name!r}: arguments are not a JSON object: "
                f"{self.arguments[:80]!r}"
            )
        return value

    def to_body(self) -> dict[str, str]:
        body = {"name": self.name, "arguments": self.arguments}
        if self.thoughts is not None:
            body["thoughts"] = self.thoughts
        return body


def _non_blank(field: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"{field}.{attribute.name}", "must be a non-blank string", value)

    return check


def _string(field: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str):
            raise ValidationError(f"{field}.{attribute.name}", "must be a string", value)

    return check


def _mapping(field: str, *, optional: bool = False) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not (optional and value is None) and not isinstance(value, Mapping):
            raise ValidationError(
                f"{field}.{attribute.name}", "must be a mapping (a JSON Schema object)", value
            )

    return check


def _examples(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise ValidationError("Function.examples", "must be a list of message lists", value)
    for i, example in enumerate(value):
        if isinstance(example, str | bytes | Mapping) or not isinstance(example, Sequence):
            raise ValidationError(f"Function.examples[{i}]", "must be a list of messages", example)


@attrs.frozen
class Function:
    """A function the model may ask to call. `parameters` (and `responses`) are JSON
    Schema objects; `examples` is a list of example conversations (message lists)."""

    name: str = attrs.field(validator=_non_blank("Function"))
    description: str = attrs.field(validator=_string("Function"))
    parameters: Mapping[str, Any] = attrs.field(validator=_mapping("Function"))
    responses: Mapping[str, Any] | None = attrs.field(
        default=None, validator=_mapping("Function", optional=True)
    )
    examples: Sequence[Sequence[MessageLike]] | None = attrs.field(
        default=None, validator=_examples
    )

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }
        if self.responses is not None:
            body["responses"] = dict(self.responses)
        if self.examples is not None:
            body["examples"] = [
                [_message_body(m, f"examples[{i}][{j}]") for j, m in enumerate(example)]
                for i, example in enumerate(self.examples)
            ]
        return body


# --- messages


@attrs.frozen
class Message:
    """One turn of a conversation. `name` is the function whose result a `function`
    message carries; `function_call` is what an assistant turn asked to call."""

    role: Role
    content: str
    name: str | None = None
    function_call: FunctionCall | None = None


MessageLike = Message | MessageParam
"""One turn of `messages=`: a `Message` (`wx.user("...")`, `wx.assistant("...")`) or a
plain dict of the same shape, `{"role": "user", "content": "..."}`, which type checkers
check against the `*MessageParam` TypedDicts (a wrong role or key is caught)."""


def user(text: str) -> Message:
    """A user turn."""
    return Message("user", text)


def assistant(text: str) -> Message:
    """An assistant turn."""
    return Message("assistant", text)


def function_result(name: str, content: str) -> Message:
    """The result of function `name`, to send after the assistant's `function_call`:
    `content` is usually JSON text."""
    return Message("function", content, name=name)


_USER_SIDE = ("user", "function")
_ALTERNATION = "turns alternate between the user side (user or function) and assistant"


_FUNCTION_CALL_KEYS = frozenset(("name", "arguments", "thoughts"))


def _function_call_body(value: object, field: str) -> dict[str, str]:
    if isinstance(value, FunctionCall):  # built by hand, so checked as a mapping is
        value = {"name": value.name, "arguments": value.arguments, "thoughts": value.thoughts}
    elif not isinstance(value, Mapping):
        raise ValidationError(field, "must be a FunctionCall or a mapping", value)
    elif not value.keys() <= _FUNCTION_CALL_KEYS:
        key = next(key for key in value if key not in _FUNCTION_CALL_KEYS)
        raise ValidationError(f"{field}[{key!r}]", "is not a field (name, arguments, thoughts)")
    name, arguments, thoughts = value.get("name"), value.get("arguments"), value.get("thoughts")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"{field}.name", "must be a non-blank string", name)
    if not isinstance(arguments, str):
        raise ValidationError(f"{field}.arguments", "must be a string (JSON text)", arguments)
    body = {"name": name, "arguments": arguments}
    if thoughts is not None:
        if not isinstance(thoughts, str):
            raise ValidationError(f"{field}.thoughts", "must be a string", thoughts)
        body["thoughts"] = thoughts
    return body


_MESSAGE_KEYS = frozenset(("role", "content", "name", "function_call"))


def _message_body(message: object, field: str) -> dict[str, Any]:
    """One message as the JSON body carries it, its own fields checked (not its place)."""
    role: object
    content: object
    name: object
    call: object
    if isinstance(message, Message):
        role, content, name, call = (
            message.role,
            message.content,
            message.name,
            message.function_call,
        )
    elif isinstance(message, Mapping):
        if not message.keys() <= _MESSAGE_KEYS:  # a misspelt key would be dropped unseen
            key = next(key for key in message if key not in _MESSAGE_KEYS)
            raise ValidationError(
                f"{field}[{key!r}]", "is not a message field (role, content, name, function_call)"
            )
        get = message.get
        role, content, name, call = get("role"), get("content"), get("name"), get("function_call")
    else:
        raise ValidationError(field, "must be a Message or a mapping", message)
    if role not in ("user", "assistant", "function"):
        raise ValidationError(f"{field}.role", "must be 'user', 'assistant' or 'function'", role)
    body: dict[str, Any] = {"role": role, "content": content}
    if call is not None:
        if role != "assistant":
            raise ValidationError(
                f"{field}.function_call", "only an assistant message may carry one", role
            )
        body["function_call"] = _function_call_body(call, f"{field}.function_call")
        if not isinstance(content, str):
            raise ValidationError(f"{field}.content", "must be a string (may be empty)")
    elif not isinstance(content, str) or not content.strip():
        raise ValidationError(f"{field}.content", "must be a non-blank string")
    if name is not None or role == "function":
        if not isinstance(name, str) or not name.strip():
            rule = "must name the function whose result this is" if role == "function" else ""
            raise ValidationError(f"{field}.name", rule or "must be a non-blank string", name)
        body["name"] = name
    return body


def check_messages(
    messages: Sequence[MessageLike], *, max_chars: int | None = DEFAULT_MAX_INPUT_CHARS
) -> list[dict[str, Any]]:
    """Check a conversation and return it as the JSON body carries it.

    Non-empty, an odd count, turns alternating between the user side (user, or function
    after the first turn) and assistant, starting with a user turn; every content a
    non-blank string (an assistant turn with a `function_call` may have empty content);
    all contents together at most `max_chars`.
    """
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
        raise ValidationError("messages", "must be a list of messages", type(messages).__name__)
    if not messages:
        raise ValidationError("messages", "must not be empty")
    if len(messages) % 2 == 0:
        raise ValidationError("messages", "must have an odd number of messages", len(messages))
    body: list[dict[str, Any]] = []
    total = 0
    for i, message in enumerate(messages):
        # the seeds' plain {"role", "content"} turn, checked without the general path
        if type(message) is dict and len(message) == 2:
            role, content = message.get("role"), message.get("content")
            if (role == "user" if i % 2 == 0 else role == "assistant") and (
                isinstance(content, str) and content.strip()
            ):
                total += len(content)
                body.append({"role": role, "content": content})
                continue
        item = _message_body(message, f"messages[{i}]")
        role = item["role"]
        if i == 0 and role != "user":
            raise ValidationError(
                "messages[0].role", f"must be 'user': {_ALTERNATION}, starting with user", role
            )
        if (role in _USER_SIDE) != (i % 2 == 0):
            expected = "'user' or 'function'" if i % 2 == 0 else "'assistant'"
            raise ValidationError(
                f"messages[{i}].role", f"must be {expected}: {_ALTERNATION}", role
            )
        total += len(item["content"])
        body.append(item)
    if max_chars is not None and total > max_chars:
        raise ValidationError(
            "messages", f"total content must be at most {max_chars} characters", total
        )
    return body
