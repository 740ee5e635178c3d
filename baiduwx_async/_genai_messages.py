"""
Prompts and answers in the message shape of the OpenTelemetry GenAI conventions
(`{"role", "parts": [{"type": "text" | "tool_call" | "tool_call_response", ...}]}`), for
the telemetry's content capture, which is off unless the application switches it on.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["input_messages", "output_message", "to_json"]


def _field(item: Any, name: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def _tool_call(call: Any) -> dict[str, Any]:
    arguments = _field(call, "arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments)
    return {"type": "tool_call", "id": None, "name": _field(call, "name"), "arguments": arguments}


def input_messages(operation: str, given: Any) -> list[dict[str, Any]] | None:
    if operation == "text_completion" and isinstance(given, str):
        return [{"role": "user", "parts": [{"type": "text", "content": given}]}]
    if operation != "chat" or given is None:
        return None
    messages = []
    for message in given:
        role, content = _field(message, "role"), _field(message, "content")
        if role == "function":
            part = {"type": "tool_call_response", "id": None, "response": content}
            messages.append({"role": "tool", "parts": [part]})
            continue
        parts: list[dict[str, Any]] = []
        if content:
            parts.append({"type": "text", "content": content})
        call = _field(message, "function_call")
        if call is not None:
            parts.append(_tool_call(call))
        messages.append({"role": role, "parts": parts})
    return messages


def output_message(response: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    text = getattr(response, "result", None)
    if text:
        parts.append({"type": "text", "content": text})
    call = getattr(response, "function_call", None)
    if call is not None:
        parts.append(_tool_call(call))
    message: dict[str, Any] = {"role": "assistant", "parts": parts}
    finish_reason = getattr(response, "finish_reason", None)
    if finish_reason:
        message["finish_reason"] = finish_reason
    return message


def to_json(value: Any) -> str:
    # Span and event attributes hold no nested structures in this API: JSON, as the
    # conventions allow for spans.
    return json.dumps(value, ensure_ascii=False, default=str)
