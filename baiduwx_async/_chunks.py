"""
Stream chunks from decoded JSON: one hand-written constructor, run once per chunk.

A stream of a few thousand chunks spends most of its CPU here and in `json.loads`, so
chunks are not built through the general converter of `_models` (a cattrs structure per
chunk and per usage cost more than the parsing itself): the fields are read, checked and
set directly on the slotted instance.

It is lenient where a field is information and strict where the answer depends on it:

- `result` (the text) must be a string and `is_end` (the framing) a boolean; either
  may be missing (`""`, `False`). Anything else is a `ProtocolError`.
- Every other field is kept when it has its documented type and replaced by its default
  when it is missing or has another type (`id` and `object` `""`, `created` 0,
  `sentence_id` the chunk's position in the stream, `usage` `None`, flags `False`,
  optional fields `None`). `raw` always holds the JSON exactly as received.

Fields added to the chunk classes later need no code here: any field this module does
not know is structured by the `_models` converter when present, and left at its default
when missing or malformed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ._errors import ProtocolError
from ._models import ChatChunk, CompletionChunk, Usage, converter

__all__ = ["ChunkBuilder"]

C = TypeVar("C", ChatChunk, CompletionChunk)

#: The fields written by hand below; any other attrs field goes through `_extra_fields`.
_KNOWN = frozenset(
    (
        "id",
        "object",
        "created",
        "sentence_id",
        "is_end",
        "result",
        "is_truncated",
        "need_clear_history",
        "finish_reason",
        "ban_round",
        "usage",
        "raw",
    )
)

Setter = Callable[[object, object], None]


def _setter(cls: type, name: str) -> Setter:
    # The slot's own descriptor: a frozen class refuses `setattr`, its slots do not.
    setter: Setter = inspect.getattr_static(cls, name).__set__
    return setter


_new = object.__new__
_set_prompt = _setter(Usage, "prompt_tokens")
_set_completion = _setter(Usage, "completion_tokens")
_set_total = _setter(Usage, "total_tokens")


def _usage(value: object) -> Usage | None:
    """A usage object with integer counts (missing counts are 0), else `None`."""
    if type(value) is not dict:
        return None
    prompt = value.get("prompt_tokens", 0)
    completion = value.get("completion_tokens", 0)
    total = value.get("total_tokens", 0)
    if type(prompt) is not int or type(completion) is not int or type(total) is not int:
        return None
    usage: Usage = _new(Usage)
    _set_prompt(usage, prompt)
    _set_completion(usage, completion)
    _set_total(usage, total)
    return usage


class ChunkBuilder:
    """Builds the chunks of one class; `build(data, position, request_id)` per chunk."""

    __slots__ = ("_cls", "_extra", "_setters")

    def __init__(self, cls: type[C]) -> None:
        self._cls: type[Any] = cls
        self._setters = tuple(_setter(cls, name) for name in sorted(_KNOWN))
        self._extra = tuple(
            (field.name, field.type, field.default, _setter(cls, field.name))
            for field in attrs.fields(cls)
            if field.name not in _KNOWN
        )

    def build(self, data: dict[str, Any], position: int, request_id: str | None) -> Any:
        get = data.get
        try:  # subscripts: the well-formed chunk, the common case, costs least
            result = data["result"]
            is_end = data["is_end"]
            id_ = data["id"]
            kind = data["object"]
            created = data["created"]
            sentence_id = data["sentence_id"]
        except KeyError:
            result = get("result", "")
            is_end = get("is_end", False)
            id_ = get("id", "")
            kind = get("object", "")
            created = get("created", 0)
            sentence_id = get("sentence_id", position)
        if type(result) is not str or (is_end is not True and is_end is not False):
            raise ProtocolError(_what_is_wrong(result, is_end), request_id=request_id)
        if type(id_) is not str:
            id_ = ""
        if type(kind) is not str:
            kind = ""
        if type(created) is not int:
            created = 0
        if type(sentence_id) is not int:
            sentence_id = position
        truncated = get("is_truncated", False)
        if truncated is not True:
            truncated = False
        clear = get("need_clear_history", False)
        if clear is not True:
            clear = False
        finish = get("finish_reason")
        if type(finish) is not str:
            finish = None
        ban_round = get("ban_round")
        if type(ban_round) is not int:
            ban_round = None
        chunk = _new(self._cls)
        # The setters are in the sorted order of _KNOWN.
        (
            s_ban_round,
            s_created,
            s_finish,
            s_id,
            s_is_end,
            s_truncated,
            s_clear,
            s_object,
            s_raw,
            s_result,
            s_sentence,
            s_usage,
        ) = self._setters
        s_ban_round(chunk, ban_round)
        s_created(chunk, created)
        s_finish(chunk, finish)
        s_id(chunk, id_)
        s_is_end(chunk, is_end)
        s_truncated(chunk, truncated)
        s_clear(chunk, clear)
        s_object(chunk, kind)
        s_raw(chunk, data)
        s_result(chunk, result)
        s_sentence(chunk, sentence_id)
        s_usage(chunk, _usage(get("usage")))
        for name, kind_of, default, set_field in self._extra:
            set_field(chunk, _structure_or(data, name, kind_of, default))
        return chunk


def _structure_or(data: dict[str, Any], name: str, kind: Any, default: Any) -> Any:
    """A field this module does not know, structured by the general converter."""
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()
    value = data.get(name)
    if value is None:
        return default
    try:
        return converter.structure(value, kind)
    except Exception:  # malformed information is dropped, as for the known fields
        return default


def _what_is_wrong(result: object, is_end: object) -> str:
    if type(result) is not str:
        return f"malformed chunk: result must be a string, got {type(result).__name__}"
    return f"malformed chunk: is_end must be a boolean, got {type(is_end).__name__}"
