"""
Stream chunks from decoded JSON: one hand-written constructor, run once per chunk.

A stream of a few thousand chunks spends most of its CPU here and in `json.loads`, so
chunks are not built through the general converter of `_models` (a cattrs structure per
chunk and per usage cost more than the parsing itself): the fields are read and checked
here, and set in one step as the instance's dict.

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

__all__ = ["Build", "chunk_builder"]

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
        "flag",
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


#: `build(data, position, request_id)`: the chunk of one decoded JSON object.
Build = Callable[[dict[str, Any], int, "str | None"], Any]


def _default(field: attrs.Attribute[Any]) -> Any:
    if field.default is attrs.NOTHING or isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
        raise TypeError(f"chunk field {field.name} needs a plain default")
    return field.default


def _slot_setter(cls: type, name: str) -> Setter | None:
    descriptor = inspect.getattr_static(cls, name, None)
    setter: Setter | None = getattr(descriptor, "__set__", None)
    return setter


def _dict_setter(cls: type) -> Setter:
    # The instance-dict descriptor: a frozen class refuses `setattr`, this does not.
    for klass in cls.__mro__:
        if "__dict__" in vars(klass):
            setter: Setter = vars(klass)["__dict__"].__set__
            return setter
    raise TypeError(f"{cls.__name__} instances have no __dict__")


def chunk_builder(cls: type[C]) -> Build:
    """The constructor of one chunk class. A closure: every name it uses per chunk is a
    local or a cell, the cheapest lookups Python has."""
    new = _new
    set_fields = _dict_setter(cls)
    set_prompt, set_completion, set_total = _set_prompt, _set_completion, _set_total
    # Fields this module does not know: a slot of a subclass is set through its
    # descriptor, a field of the instance dict goes into the dict (`setter` None).
    extra = tuple(
        (field.name, field.type, _default(field), _slot_setter(cls, field.name))
        for field in attrs.fields(attrs.resolve_types(cls))  # types, not their text
        if field.name not in _KNOWN
    )
    # Defaults go into the instance dict, or through the slot of a slotted subclass.
    extra_defaults = {name: default for name, _, default, set_slot in extra if set_slot is None}
    slotted = [(name, default, set_slot) for name, _, default, set_slot in extra if set_slot]

    def build(data: dict[str, Any], position: int, request_id: str | None) -> Any:
        try:  # subscripts: the complete chunk, the common case, costs least
            result = data["result"]
            is_end = data["is_end"]
            id_ = data["id"]
            kind = data["object"]
            created = data["created"]
            sentence_id = data["sentence_id"]
            truncated = data["is_truncated"]
            clear = data["need_clear_history"]
            finish = data["finish_reason"]
            usage = data["usage"]
        except KeyError:
            get = data.get
            result = get("result", "")
            is_end = get("is_end", False)
            id_ = get("id")
            kind = get("object")
            created = get("created")
            sentence_id = get("sentence_id")
            truncated = get("is_truncated")
            clear = get("need_clear_history")
            finish = get("finish_reason")
            usage = get("usage")
        if type(result) is not str or (is_end is not True and is_end is not False):
            raise ProtocolError(_what_is_wrong(result, is_end), request_id=request_id)
        if type(usage) is dict:
            try:
                prompt = usage["prompt_tokens"]
                completion = usage["completion_tokens"]
                total = usage["total_tokens"]
            except KeyError:
                prompt = usage.get("prompt_tokens", 0)
                completion = usage.get("completion_tokens", 0)
                total = usage.get("total_tokens", 0)
            if type(prompt) is int and type(completion) is int and type(total) is int:
                usage = new(Usage)
                set_prompt(usage, prompt)
                set_completion(usage, completion)
                set_total(usage, total)
            else:
                usage = None
        else:
            usage = None
        ban_round = data.get("ban_round")
        flag = data.get("flag")
        fields = {
            "id": id_ if type(id_) is str else "",
            "object": kind if type(kind) is str else "",
            "created": created if type(created) is int else 0,
            "sentence_id": sentence_id if type(sentence_id) is int else position,
            "is_end": is_end,
            "result": result,
            "is_truncated": truncated is True,
            "need_clear_history": clear is True,
            "finish_reason": finish if type(finish) is str else None,
            "ban_round": ban_round if type(ban_round) is int else None,
            "flag": flag if type(flag) is int else None,
            "usage": usage,
            "raw": data,
        }
        chunk = new(cls)
        set_fields(chunk, fields)
        for _name, default, set_default in slotted:
            set_default(chunk, default)
        if extra:
            fields.update(extra_defaults)
            for name, kind_of, default, set_slot in extra:
                if name in data:  # absent is the usual case: the default stands
                    value = _structure_or(data[name], kind_of, default)
                    if set_slot is None:
                        fields[name] = value
                    else:
                        set_slot(chunk, value)
        return chunk

    return build


def _structure_or(value: object, kind: Any, default: Any) -> Any:
    """A field this module does not know, structured by the general converter."""
    try:
        return converter.structure(value, kind)
    except Exception:  # malformed information is dropped, as for the known fields
        return default


def _what_is_wrong(result: object, is_end: object) -> str:
    if type(result) is not str:
        return f"malformed chunk: result must be a string, got {type(result).__name__}"
    return f"malformed chunk: is_end must be a boolean, got {type(is_end).__name__}"
