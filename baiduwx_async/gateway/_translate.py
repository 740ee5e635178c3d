"""OpenAI requests in, the client's calls out: what is mapped, and what is refused.

Each function reads one decoded OpenAI request body and returns the arguments of the client
call that answers it, or raises a 400 `GatewayError` whose `param` names the field at fault.
Values the client checks itself (ranges, stop words, message alternation) are left to it:
its `ValidationError` becomes the same 400, with the caller's message index restored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from .._messages import MessageLike
from ._errors import GatewayError, invalid

__all__ = [
    "ChatCall",
    "CompletionCall",
    "EmbeddingCall",
    "chat_call",
    "chat_messages",
    "completion_call",
    "embedding_call",
    "model_name",
    "not_found",
]

#: OpenAI fields the service has no counterpart for: refused unless left at the neutral value.
_REFUSED_UNLESS_NEUTRAL: dict[str, tuple[object, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "seed": (None,),
    "logit_bias": (None, {}),
    "audio": (None,),
    "modalities": (None, ["text"]),
}
#: The same, for /v1/completions.
_COMPLETION_REFUSED: dict[str, tuple[object, ...]] = {
    **{k: _REFUSED_UNLESS_NEUTRAL[k] for k in ("n", "presence_penalty", "frequency_penalty")},
    **{k: _REFUSED_UNLESS_NEUTRAL[k] for k in ("seed", "logit_bias")},
    "logprobs": (None, 0),
    "best_of": (None, 1),
    "echo": (None, False),
    "suffix": (None, ""),
}
#: Wenxin's own fields, which openai-python sends through `extra_body`: passed on as they are.
_CHAT_EXTRAS = ("top_k", "penalty_score", "disable_search", "enable_citation", "enable_trace")
_COMPLETION_EXTRAS = ("top_k", "penalty_score")


@attrs.frozen
class ChatCall:
    """A chat request, ready for `client.chat` / `client.chat_stream`."""

    model: str
    messages: list[MessageLike]
    params: dict[str, Any]
    stream: bool
    include_usage: bool
    #: upstream message index -> the caller's message index (system messages are taken out)
    message_index: dict[int, int]


@attrs.frozen
class CompletionCall:
    model: str
    prompt: str
    params: dict[str, Any]
    stream: bool
    include_usage: bool


@attrs.frozen
class EmbeddingCall:
    model: str
    texts: list[str]
    params: dict[str, Any]
    base64: bool


def model_name(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "model: required, the name of a model this gateway serves")
    return model


def _refuse_unsupported(body: Mapping[str, Any], refused: dict[str, tuple[object, ...]]) -> None:
    for name, neutral in refused.items():
        value = body.get(name)
        if value is not None and value not in neutral:
            raise invalid(name, f"{name}: not supported by Wenxin Workshop (got {value!r:.40})")


def _number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(name, f"{name}: must be a number")
    return value


def _sampling(body: Mapping[str, Any], extras: tuple[str, ...]) -> dict[str, Any]:
    """temperature, top_p, stop, user and Wenxin's own extras, as the client's keywords."""
    params: dict[str, Any] = {}
    temperature = _number(body, "temperature")
    if temperature is not None:
        if not 0 <= temperature <= 1:
            raise invalid(
                "temperature", "temperature: must be in [0, 1] (Wenxin takes nothing above 1)"
            )
        params["temperature"] = temperature or 0.01  # the service refuses 0
    top_p = _number(body, "top_p")
    if top_p is not None:
        params["top_p"] = top_p
    stop = body.get("stop")
    if stop is not None:
        params["stop"] = [stop] if isinstance(stop, str) else stop
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise invalid("user", "user: must be a string")
        if user:
            params["user_id"] = user
    for name in extras:
        if body.get(name) is not None:
            params[name] = body[name]
    return params


def _stream_flags(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is None:
        return False, False
    if not isinstance(stream, bool):
        raise invalid("stream", "stream: must be a boolean")
    options = body.get("stream_options")
    if options is None or not stream:
        return stream, False
    if not isinstance(options, Mapping):
        raise invalid("stream_options", "stream_options: must be an object")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise invalid("stream_options.include_usage", "include_usage: must be a boolean")
    return stream, include


def _text(content: object, field: str) -> str:
    """A message's content: a string, or text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(field, f"{field}: must be a string or a list of text parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            texts.append(part[kind])
        else:
            raise invalid(
                f"{field}[{j}]",
                f"{field}[{j}]: only text parts are supported (Wenxin takes no "
                f"images, audio or files; got type {kind!r:.20})",
            )
    return "\n".join(texts)


def _tool_call(calls: object, field: str) -> tuple[str | None, dict[str, str]]:
    """An assistant's `tool_calls`: (its id, the upstream `function_call`)."""
    if not isinstance(calls, list) or len(calls) != 1:
        raise invalid(field, f"{field}: Wenxin takes exactly one function call per turn")
    call = calls[0]
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or call.get("type", "function") != "function":
        raise invalid(f"{field}[0]", f"{field}[0]: must be a function call")
    name, arguments = function.get("name"), function.get("arguments", "{}")
    if not isinstance(name, str) or not name or not isinstance(arguments, str):
        raise invalid(f"{field}[0].function", f"{field}[0].function: needs a name and arguments")
    call_id = call.get("id")
    return (call_id if isinstance(call_id, str) else None), {"name": name, "arguments": arguments}


def chat_messages(raw: object) -> tuple[str | None, list[MessageLike], dict[int, int]]:
    """(system text, upstream messages, upstream index -> caller index)."""
    if not isinstance(raw, list) or not raw:
        raise invalid("messages", "messages: must be a non-empty list")
    system: list[str] = []
    messages: list[Any] = []  # mappings of the shapes MessageLike allows
    index: dict[int, int] = {}
    call_names: dict[str, str] = {}  # tool_call_id -> the function that call named
    for i, message in enumerate(raw):
        if not isinstance(message, Mapping):
            raise invalid(f"messages[{i}]", f"messages[{i}]: must be an object")
        role = message.get("role")
        content = message.get("content")
        field = f"messages[{i}].content"
        if role in ("system", "developer"):
            if messages:
                raise invalid(
                    f"messages[{i}].role",
                    f"messages[{i}]: system and developer messages must come first "
                    "(Wenxin takes one system text for the conversation)",
                )
            system.append(_text(content, field))
            continue
        out: dict[str, Any]
        if role == "user":
            text = _text(content, field)
            if messages and messages[-1]["role"] == "user":
                messages[-1]["content"] += "\n\n" + text  # Wenxin wants the turns alternating
                continue
            out = {"role": "user", "content": text}
        elif role == "assistant":
            calls = message.get("tool_calls")
            legacy = message.get("function_call")
            text = "" if content is None else _text(content, field)
            out = {"role": "assistant", "content": text}
            if calls:
                call_id, out["function_call"] = _tool_call(calls, f"messages[{i}].tool_calls")
                if call_id is not None:
                    call_names[call_id] = out["function_call"]["name"]
            elif isinstance(legacy, Mapping):
                _, out["function_call"] = _tool_call(
                    [{"function": legacy}], f"messages[{i}].function_call"
                )
        elif role == "tool":
            call_id = message.get("tool_call_id")
            name = call_names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                raise invalid(
                    f"messages[{i}].tool_call_id",
                    f"messages[{i}].tool_call_id: names no tool call of an earlier "
                    "assistant message",
                )
            out = {"role": "function", "name": name, "content": _text(content, field)}
        elif role == "function":
            name = message.get("name")
            if not isinstance(name, str) or not name:
                raise invalid(f"messages[{i}].name", f"messages[{i}].name: required")
            out = {"role": "function", "name": name, "content": _text(content, field)}
        else:
            raise invalid(
                f"messages[{i}].role",
                f"messages[{i}].role: must be system, developer, user, assistant or tool",
            )
        index[len(messages)] = i
        messages.append(out)
    if not messages:
        raise invalid("messages", "messages: needs a user message after the system ones")
    return ("\n\n".join(system) if system else None), messages, index


def _functions(body: Mapping[str, Any]) -> dict[str, Any]:
    """`tools` and `tool_choice` as the client's `functions` and `tool_choice`."""
    if body.get("functions") is not None or body.get("function_call") is not None:
        param = "functions" if body.get("functions") is not None else "function_call"
        raise invalid(param, f"{param}: deprecated by OpenAI; send tools and tool_choice")
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise invalid("tool_choice", "tool_choice: names a tool, but no tools were sent")
        return {}
    if not isinstance(tools, list):
        raise invalid("tools", "tools: must be a list")
    functions = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or tool.get("type") != "function":
            raise invalid(f"tools[{i}].type", f"tools[{i}]: only function tools are supported")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"tools[{i}].function.name", f"tools[{i}].function.name: required")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        description = function.get("description") or name
        functions.append({"name": name, "description": description, "parameters": parameters})
    if choice is None or choice == "auto":
        return {"functions": functions}
    if choice == "none":
        return {}
    if choice == "required":
        if len(functions) != 1:
            raise invalid(
                "tool_choice",
                "tool_choice: 'required' works with exactly one tool (Wenxin can force one "
                "named function, not a choice among several)",
            )
        choice = {"type": "function", "function": {"name": functions[0]["name"]}}
    named = choice.get("function") if isinstance(choice, Mapping) else None
    name = named.get("name") if isinstance(named, Mapping) else None
    if name not in {f["name"] for f in functions}:
        raise invalid(
            "tool_choice", "tool_choice: must be 'auto', 'none', 'required' or a sent function"
        )
    return {"functions": functions, "tool_choice": {"type": "function", "function": {"name": name}}}


def chat_call(body: Mapping[str, Any]) -> ChatCall:
    model = model_name(body)
    _refuse_unsupported(body, _REFUSED_UNLESS_NEUTRAL)
    system, messages, index = chat_messages(body.get("messages"))
    params = _sampling(body, _CHAT_EXTRAS)
    if system is not None:
        params["system"] = system
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        params["max_output_tokens"] = limit
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, Mapping) else None
        if kind == "json_object":
            params["response_format"] = "json_object"
        elif kind != "text":
            raise invalid(
                "response_format", "response_format: only 'text' and 'json_object' are supported"
            )
    params.update(_functions(body))
    stream, include_usage = _stream_flags(body)
    return ChatCall(model, messages, params, stream, include_usage, index)


def completion_call(body: Mapping[str, Any]) -> CompletionCall:
    """`max_tokens` is not sent: Wenxin's completions API has no such field."""
    model = model_name(body)
    _refuse_unsupported(body, _COMPLETION_REFUSED)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise invalid("prompt", "prompt: must be a string (one prompt; no token arrays)")
    stream, include_usage = _stream_flags(body)
    return CompletionCall(model, prompt, _sampling(body, _COMPLETION_EXTRAS), stream, include_usage)


def embedding_call(body: Mapping[str, Any]) -> EmbeddingCall:
    model = model_name(body)
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise invalid("input", "input: must be a string or a non-empty list of strings")
    if body.get("dimensions") is not None:
        raise invalid("dimensions", "dimensions: not supported (each model has its own size)")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid("encoding_format", "encoding_format: must be 'float' or 'base64'")
    params = {}
    user = body.get("user")
    if isinstance(user, str) and user:
        params["user_id"] = user
    return EmbeddingCall(model, texts, params, encoding == "base64")


def not_found(model: str, kind: str | None = None) -> GatewayError:
    text = f"{model!r:.80}"
    if kind is None:
        return GatewayError(
            404, f"The model {text} does not exist", param="model", code="model_not_found"
        )
    return GatewayError(
        404,
        f"The model {text} is a {kind} model: use the /v1/{kind} route",
        param="model",
        code="model_not_found",
    )
