"""The ERNIE family's chat fields: their checks, and how they visibly shape the answer.

Checks (type and shape; the service judges most values per model):

| failure | answer |
|---|---|
| a field of the wrong JSON type (`system` not a string, `enable_trace` not a bool...) | 336001 |
| `system` longer than `max_system_chars` (1,024) | 336104 (the code for an invalid system) |
| `max_output_tokens` outside [2, `max_output_tokens_limit`] | 336003 |
| `response_format` other than "text" / "json_object" | 336003 |
| a function without a name, description or `parameters` object; two with one name | 336003 |
| `tool_choice` not `{"type": "function", "function": {"name": ...}}` naming a function | 336003 |

Answers (`shape_answer`), deterministic like every emulator answer:

- `functions`, and the last message is the user's and names one of them (or `tool_choice`
  forces one): a `function_call` with `arguments` built from the function's
  `parameters.properties`, `result` "", `finish_reason` "function_call".
- the last message is a function's result: the answer starts with
  "{name} returned {content}." and goes on as usual.
- `system`: the answer starts with the system text in brackets, "[{system}] ...".
- `response_format: "json_object"`: the answer is `{"answer": text}` as JSON text.
- `max_output_tokens`: an answer with more tokens is cut there, `is_truncated` true and
  `finish_reason` "length".
- `enable_citation: true` (and no `disable_search: true`): the first sentence cites "^[1]^",
  and the answer carries `search_info` with that one search result (on a stream's last
  chunk).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import attrs

from ._text import Answer, count_tokens, truncate
from ._wire import Failure, dumps

__all__ = ["ERNIE_FIELDS", "ErnieFields", "check_ernie", "ernie_body", "shape_answer"]

_INVALID_ARGUMENT = "Invalid Argument"
#: Fields only the ERNIE family knows; a request with any of them gets `finish_reason` in
#: its (non-stream) answer, as ERNIE endpoints send it.
ERNIE_FIELDS = frozenset(
    {
        "system", "max_output_tokens", "response_format", "disable_search", "enable_citation",
        "enable_trace", "functions", "tool_choice", "user_ip", "enable_system_memory",
        "system_memory_id",
    }
)  # fmt: skip
_BOOLS = ("disable_search", "enable_citation", "enable_trace", "enable_system_memory")
_STRINGS = ("system", "response_format", "user_ip", "system_memory_id")
_WORDS = (
    "Beijing", "Shanghai", "harbor", "library", "garden", "river", "bridge", "market",
    "museum", "tower", "village", "forest",
)  # fmt: skip


@attrs.frozen
class ErnieFields:
    """The ERNIE fields of a checked request, and the conversation's end."""

    system: str | None = None
    max_output_tokens: int | None = None
    json_object: bool = False
    functions: tuple[dict[str, Any], ...] = ()
    #: The function `tool_choice` forces.
    forced: str | None = None
    #: Answer with a citation and its `search_info`.
    cite: bool = False
    #: The last message: its role, content and name.
    last_role: str = "user"
    last_content: str = ""
    last_name: str | None = None


def _check_functions(functions: object) -> Failure | None:
    if not isinstance(functions, list) or not all(isinstance(f, dict) for f in functions):
        return Failure(336001, _INVALID_ARGUMENT)
    names: set[str] = set()
    for index, function in enumerate(functions):
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            return Failure(336003, f"functions[{index}].name must be a non-empty string")
        if name in names:
            return Failure(336003, f"functions[{index}].name {name!r} is not unique")
        names.add(name)
        if not isinstance(function.get("description"), str):
            return Failure(336003, f"functions[{index}].description must be a string")
        for key in ("parameters", "responses"):
            if (key in function or key == "parameters") and not isinstance(function.get(key), dict):
                return Failure(336003, f"functions[{index}].{key} must be a JSON Schema object")
        examples = function.get("examples")
        if "examples" in function and (
            not isinstance(examples, list) or not all(isinstance(e, list) for e in examples)
        ):
            return Failure(336003, f"functions[{index}].examples must be a list of message lists")
    return None


def _forced_name(tool_choice: object, functions: list[dict[str, Any]]) -> str | Failure:
    if not isinstance(tool_choice, dict):
        return Failure(336001, _INVALID_ARGUMENT)
    function = tool_choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if tool_choice.get("type") != "function" or not isinstance(name, str):
        return Failure(
            336003, 'tool_choice must be {"type": "function", "function": {"name": ...}}'
        )
    if name not in {f["name"] for f in functions}:
        return Failure(336003, f"tool_choice names {name!r}, which is not in functions")
    return name


def check_ernie(
    body: dict[str, Any], *, max_system_chars: int, max_output_tokens_limit: int
) -> ErnieFields | Failure | None:
    """Check the ERNIE fields of a chat body (its messages already checked); None if it has
    none and its messages are plain user/assistant turns."""
    messages: list[dict[str, Any]] = body["messages"]
    last = messages[-1]
    if ERNIE_FIELDS.isdisjoint(body) and all(
        "name" not in m and "function_call" not in m for m in messages
    ):
        return None
    for name in _BOOLS:
        if name in body and not isinstance(body[name], bool):
            return Failure(336001, _INVALID_ARGUMENT)
    for name in _STRINGS:
        if name in body and not isinstance(body[name], str):
            return Failure(336001, _INVALID_ARGUMENT)
    system = body.get("system")
    if system is not None and len(system) > max_system_chars:
        return Failure(336104, f"the length of system must be at most {max_system_chars}")
    max_tokens = body.get("max_output_tokens")
    if "max_output_tokens" in body:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            return Failure(336001, _INVALID_ARGUMENT)
        if not 2 <= max_tokens <= max_output_tokens_limit:
            return Failure(336003, f"max_output_tokens must be in [2, {max_output_tokens_limit}]")
    response_format = body.get("response_format", "text")
    if response_format not in ("text", "json_object"):
        return Failure(336003, 'response_format must be "text" or "json_object"')
    functions = body.get("functions", [])
    failure = _check_functions(functions)
    if failure is not None:
        return failure
    forced = None
    if "tool_choice" in body:
        choice = _forced_name(body["tool_choice"], functions)
        if isinstance(choice, Failure):
            return choice
        forced = choice
    return ErnieFields(
        system=system or None,
        max_output_tokens=max_tokens,
        json_object=response_format == "json_object",
        functions=tuple(functions),
        forced=forced,
        cite=body.get("enable_citation") is True and body.get("disable_search") is not True,
        last_role=last["role"],
        last_content=last.get("content") or "",
        last_name=last.get("name"),
    )


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def _example(schema: object, path: str) -> object:
    """A value that fits `schema` (a JSON Schema), the same every time for the same path."""
    if not isinstance(schema, dict):
        schema = {}
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    roll = _hash(path)
    if kind == "integer":
        return roll % 100
    if kind == "number":
        return roll % 1000 / 10
    if kind == "boolean":
        return roll % 2 == 0
    if kind == "array":
        return [_example(schema.get("items"), path + "[0]")]
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {str(key): _example(sub, f"{path}.{key}") for key, sub in properties.items()}
    return _WORDS[roll % len(_WORDS)]


def function_arguments(function: dict[str, Any], question: str) -> str:
    """The call's `arguments`: a JSON object with a value for each property, as text."""
    parameters = dict(function.get("parameters") or {})
    parameters["type"] = "object"
    return json.dumps(_example(parameters, f"{function['name']}\x1f{question}"), ensure_ascii=False)


def _called(fields: ErnieFields) -> dict[str, Any] | None:
    if fields.last_role != "user" or not fields.functions:
        return None
    name = fields.forced
    if name is None:
        name = next((f["name"] for f in fields.functions if f["name"] in fields.last_content), None)
    if name is None:
        return None
    return next(f for f in fields.functions if f["name"] == name)


def shape_answer(answer: Answer, fields: ErnieFields) -> Answer:
    """`answer` (the generated text) as the ERNIE fields make it."""
    function = _called(fields)
    if function is not None:
        name = function["name"]
        call = {
            "name": name,
            "arguments": function_arguments(function, fields.last_content),
            "thoughts": f"The user asked for {name}, so I call it.",
        }
        tokens = count_tokens(call["arguments"]) + count_tokens(call["thoughts"])
        return Answer(("",), (tokens,), "", tokens, "function_call", function_call=call)
    pieces = list(answer.pieces)
    if fields.last_role == "function":
        pieces[0] = f"{fields.last_name} returned {fields.last_content}. " + pieces[0]
    search_info: dict[str, object] | None = None
    if fields.cite:
        pieces[0] += "^[1]^"
        word = _WORDS[_hash("search", fields.last_content) % len(_WORDS)]
        search_info = {
            "search_results": [
                {"index": 1, "url": f"https://search.emulator.invalid/{word}", "title": word}
            ]
        }
    if fields.system is not None:
        pieces[0] = f"[{fields.system}] " + pieces[0]
    if fields.json_object:
        pieces = [dumps({"answer": "".join(pieces)}).decode()]
    piece_tokens = [count_tokens(p) for p in pieces]
    finish_reason, truncated = "normal", False
    limit = fields.max_output_tokens
    if limit is not None and sum(piece_tokens) > limit:
        pieces, piece_tokens = truncate(pieces, piece_tokens, limit)
        finish_reason, truncated = "length", True
    return Answer(
        tuple(pieces),
        tuple(piece_tokens),
        "".join(pieces),
        sum(piece_tokens),
        finish_reason,
        is_truncated=truncated,
        search_info=search_info,
    )


def ernie_body(
    answer: Answer, *, response_id: str, object_name: str, created: int, prompt_tokens: int
) -> dict[str, object]:
    """The non-stream answer to a request with ERNIE fields: with `finish_reason`, as ERNIE
    sends it, and the `function_call` if there is one."""
    body: dict[str, object] = {
        "id": response_id,
        "object": object_name,
        "created": created,
        "result": answer.text,
        "is_truncated": answer.is_truncated,
        "need_clear_history": False,
    }
    if answer.function_call is not None:
        body["function_call"] = answer.function_call
    if answer.search_info is not None:
        body["search_info"] = answer.search_info
    body["finish_reason"] = answer.finish_reason
    body["usage"] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": answer.tokens,
        "total_tokens": prompt_tokens + answer.tokens,
    }
    return body
