"""Request-body checks of docs/protocol.md §3, answering with the §3.3 codes (ERNIE fields:
`_ernie`).

Unknown fields are ignored; `bool` is never a number. Type errors are 336001, structure and
range errors 336003 (naming the field), the total-length cap 336007, non-JSON 336002.
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs

from ._ernie import ErnieFields, check_ernie
from ._text import count_tokens
from ._wire import Failure

__all__ = ["Failure", "ParsedRequest", "parse_request"]

_INVALID_ARGUMENT = "Invalid Argument"


@attrs.frozen
class ParsedRequest:
    stream: bool
    #: The input as text, to seed the answer.
    seed_text: str
    prompt_tokens: int
    #: The completions prompt, or the last chat message's content (the `fail_prompts` key).
    question: str
    #: The ERNIE fields of a chat request that has any (`_ernie.shape_answer` uses them).
    ernie: ErnieFields | None = None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_common(body: dict[str, Any]) -> Failure | None:
    """Types and ranges of the sampling parameters, `stop` and `user_id`."""
    for name in ("temperature", "top_p", "penalty_score"):
        if name in body and not _is_number(body[name]):
            return Failure(336001, _INVALID_ARGUMENT)
    top_k = body.get("top_k")
    if "top_k" in body and (not isinstance(top_k, int) or isinstance(top_k, bool)):
        return Failure(336001, _INVALID_ARGUMENT)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        return Failure(336001, _INVALID_ARGUMENT)
    if "user_id" in body and not isinstance(body["user_id"], str):
        return Failure(336001, _INVALID_ARGUMENT)
    stop = body.get("stop")
    if "stop" in body and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        return Failure(336001, _INVALID_ARGUMENT)

    if "temperature" in body and not 0 < body["temperature"] <= 1.0:
        return Failure(336003, "temperature must be in (0, 1.0]")
    if "top_p" in body and not 0 <= body["top_p"] <= 1.0:
        return Failure(336003, "top_p must be in [0, 1.0]")
    if "penalty_score" in body and not 1.0 <= body["penalty_score"] <= 2.0:
        return Failure(336003, "penalty_score must be in [1.0, 2.0]")
    if top_k is not None and top_k < 1:
        return Failure(336003, "top_k must be a positive integer")
    if stop is not None:
        if len(stop) > 4:
            return Failure(336003, "stop must have at most 4 items")
        if any(len(s) > 20 for s in stop):
            return Failure(336003, "each stop item must be at most 20 characters")
    return None


def _check_message_types(messages: list[Any]) -> Failure | None:
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return Failure(336001, _INVALID_ARGUMENT)
        content = message.get("content")
        if len(message) == 2 and isinstance(content, str):
            continue  # {role, content}: the common case
        # an assistant turn that calls a function may leave its content out
        if not isinstance(content, str) and not (content is None and "function_call" in message):
            return Failure(336001, _INVALID_ARGUMENT)
        if "name" in message and not isinstance(message["name"], str):
            return Failure(336001, _INVALID_ARGUMENT)
        if "function_call" in message and not isinstance(message["function_call"], dict):
            return Failure(336001, _INVALID_ARGUMENT)
    return None


def _check_turn(index: int, message: dict[str, Any]) -> Failure | None:
    """One turn: user side (user, or a function's result) at even places, assistant at odd."""
    role = message["role"]
    if index == 0 and role != "user":
        return Failure(336003, "the role of messages[0] must be user")
    if index % 2 and role != "assistant":
        return Failure(336003, f"the role of messages[{index}] must be assistant")
    if not index % 2 and role not in ("user", "function"):
        return Failure(336003, f"the role of messages[{index}] must be user or function")
    if role == "function" and not message.get("name", "").strip():
        return Failure(336003, f"messages[{index}] of role function must have a name")
    call = message.get("function_call")
    if call is not None:
        if role != "assistant":
            return Failure(336003, "only assistant messages may have a function_call")
        if not isinstance(call.get("name"), str) or not isinstance(call.get("arguments"), str):
            return Failure(
                336003, f"the function_call of messages[{index}] needs a name and arguments"
            )
    elif not message["content"].strip():
        return Failure(336003, f"the content of messages[{index}] must not be blank")
    return None


def _check_messages(messages: object, max_question: int, max_total: int) -> Failure | None:
    if not isinstance(messages, list):
        return Failure(336001, _INVALID_ARGUMENT)
    failure = _check_message_types(messages)
    if failure is not None:
        return failure
    if not messages:
        return Failure(336003, "messages must not be empty")
    if len(messages) % 2 == 0:
        return Failure(336003, "the length of messages must be an odd number")
    total = 0
    for index, message in enumerate(messages):
        content = message.get("content")
        if not (
            message["role"] == ("assistant" if index % 2 else "user")
            and "function_call" not in message
            and content.strip()
        ):  # not a plain, non-blank user or assistant turn: the full rules
            failure = _check_turn(index, message)
            if failure is not None:
                return failure
        total += len(content or "")
    if len(messages[-1]["content"]) > max_question:
        return Failure(336003, f"the max length of current question is {max_question}")
    if total > max_total:
        return Failure(336007, f"the total length of messages exceeds {max_total}")
    return None


def _check_metadata(body: dict[str, Any]) -> Failure | None:
    if "metadata" not in body:
        return None
    metadata = body["metadata"]
    if not isinstance(metadata, dict):
        return Failure(336001, _INVALID_ARGUMENT)
    if len(metadata) > 16 or not all(isinstance(v, str) for v in metadata.values()):
        return Failure(336003, "metadata must have at most 16 string-to-string pairs")
    return None


def parse_request(
    kind: str,
    raw: bytes,
    *,
    max_question_chars: int,
    max_total_chars: int,
    max_system_chars: int = 1024,
    max_output_tokens_limit: int = 2048,
) -> ParsedRequest | Failure:
    """Check a chat (`kind="chat"`) or completions body; the parsed request or the failure.

    A chat body may also carry the ERNIE fields and function turns (checked by `_ernie`).
    """
    try:
        body = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return Failure(336002, "Invalid JSON")
    if not isinstance(body, dict):
        return Failure(336001, _INVALID_ARGUMENT)
    for value in body.values():
        if isinstance(value, float) and not math.isfinite(value):
            return Failure(336002, "Invalid JSON")  # NaN / Infinity are not JSON

    if kind == "chat":
        if "messages" not in body:
            return Failure(336001, _INVALID_ARGUMENT)
        messages = body["messages"]
        failure = _check_messages(messages, max_question_chars, max_total_chars)
        failure = failure or _check_common(body) or _check_metadata(body)
        if failure is not None:
            return failure
        ernie = check_ernie(
            body,
            max_system_chars=max_system_chars,
            max_output_tokens_limit=max_output_tokens_limit,
        )
        if isinstance(ernie, Failure):
            return ernie
        contents = [m.get("content") or "" for m in messages]
        if ernie is not None and ernie.system is not None:
            contents.append(ernie.system)
        seed_text = "\x1e".join(contents)
        prompt_tokens = sum(count_tokens(c) for c in contents)
        question = messages[-1]["content"]
        return ParsedRequest(
            bool(body.get("stream", False)), seed_text, prompt_tokens, question, ernie
        )
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return Failure(336001, _INVALID_ARGUMENT)
        failure = _check_common(body)
        if failure is not None:
            return failure
        seed_text = question = prompt
        prompt_tokens = count_tokens(prompt)
    return ParsedRequest(bool(body.get("stream", False)), seed_text, prompt_tokens, question)
