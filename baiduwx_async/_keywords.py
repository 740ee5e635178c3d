"""
The keywords of the public calls as users see them: `help()` lists each one, and a keyword
another client uses (`max_tokens`, `model`, `n`) is a `TypeError` naming the one to use.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["check_unknown", "show_keywords"]

# --- keywords other clients use, and what to write here instead

_ELSEWHERE: dict[str, str] = {
    "max_tokens": "the answer's length is capped by max_output_tokens (chat, ERNIE models)",
    "max_completion_tokens": "the answer's length is capped by max_output_tokens (chat)",
    "max_new_tokens": "the answer's length is capped by max_output_tokens (chat)",
    "model": "the model is the endpoint, the first argument of {call}()",
    "engine": "the model is the endpoint, the first argument of {call}()",
    "n": "one answer per call; send several calls (batch_chat, batch_complete) for more",
    "stream": "use chat_stream() / complete_stream() to stream",
    "stop_sequences": "use stop (up to 4 strings)",
    "user": "the end user's id is user_id",
    "tools": "functions take Function(...) definitions (and tool_choice forces one)",
    "presence_penalty": "use penalty_score, in [1, 2]",
    "frequency_penalty": "use penalty_score, in [1, 2]",
    "repetition_penalty": "use penalty_score, in [1, 2]",
    "system_prompt": "use system (chat)",
    "input": "the texts are the second argument: client.embed(endpoint, texts)",
    "extra_params": "use extra_body",
    "headers": "use extra_headers",
    "params": "use extra_query",
}
_ON_COMPLETE: dict[str, str] = {
    "messages": "complete() takes a prompt string; use chat() for messages",
    "system": "system is a chat field; use chat() for an ERNIE model",
    "max_output_tokens": "max_output_tokens is a chat field (ERNIE models); use chat()",
}
_ON_CHAT: dict[str, str] = {
    "prompt": "chat() takes messages: client.chat(endpoint, [wx.user(prompt)])",
}


def check_unknown(call: str, params: Mapping[str, Any], known: frozenset[str]) -> None:
    """A `TypeError` for the first keyword `call` does not take, saying what to use."""
    if params.keys() <= known:
        return
    name = next(name for name in params if name not in known)
    hint = (
        _ON_COMPLETE
        if call.startswith(("complete", "batch_complete", "iter_batch_complete"))
        else _ON_CHAT
        if "chat" in call
        else {}
    ).get(name) or _ELSEWHERE.get(name)
    if hint is None:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see help() for the keywords it takes"
    else:
        hint = hint.format(call=call)
    raise TypeError(f"{call}() got an unexpected keyword argument {name!r}: {hint}")


F = TypeVar("F", bound=Callable[..., Any])


def show_keywords(options: type, **defaults: object) -> Callable[[F], F]:
    """Make `help()` and `inspect.signature` list a `**params: Unpack[options]` method's
    keywords one by one, as if written out (with `defaults`, else `None`)."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        parameters = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        keywords = options.__annotations__.items()
        parameters += [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=defaults.get(name),
                annotation=getattr(kind, "__forward_arg__", kind),
            )
            for name, kind in keywords
            if name not in signature.parameters
        ]
        function.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return function

    return decorate
