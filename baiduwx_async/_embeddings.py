"""
Embeddings: the answer types, the rules of an input, and the fan-out of many texts over
several requests (merged back in input order, usage summed).

Vectors are decoded by hand rather than by the converter: a 1,024-number vector through a
per-number hook costs more CPU than the whole HTTP exchange.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import attrs

from ._errors import ProtocolError, ValidationError
from ._extras import NO_EXTRAS, Extras
from ._keywords import check_unknown
from ._params import EMBED_KEYS
from ._responses import NO_LIMITS, RateLimitInfo, Usage

__all__ = [
    "DEFAULT_TEXTS_PER_REQUEST",
    "Embedding",
    "EmbeddingResponse",
    "check_texts",
    "decode_embeddings",
    "embed_in_parts",
    "split_embed_params",
    "texts_per_request_for",
]

#: The most texts the preset models take in one request (tao_8k takes 1).
DEFAULT_TEXTS_PER_REQUEST = 16
#: Models that take one text per request.
_ONE_TEXT_MODELS = frozenset({"tao_8k"})


def texts_per_request_for(endpoint: str) -> int:
    """The most texts the endpoint takes in one request, as far as we know it."""
    return 1 if endpoint in _ONE_TEXT_MODELS else DEFAULT_TEXTS_PER_REQUEST


def split_embed_params(
    call: str, endpoint: str, params: Mapping[str, Any]
) -> tuple[int, str | None, Extras]:
    """An embedding call's keywords, checked: texts per request, `user_id`, the options."""
    check_unknown(call, params, EMBED_KEYS)
    options = dict(params)
    per_request = options.pop("texts_per_request", None)
    if per_request is None:
        per_request = texts_per_request_for(endpoint)
    elif isinstance(per_request, bool) or not isinstance(per_request, int) or per_request < 1:
        raise ValidationError("texts_per_request", "must be a positive integer", per_request)
    user_id = options.pop("user_id", None)
    if user_id is not None and not isinstance(user_id, str):
        raise ValidationError("user_id", "must be a string", user_id)
    return per_request, user_id, Extras(**options) if options else NO_EXTRAS


@attrs.frozen
class Embedding:
    """The vector of the text at `index` of the input."""

    index: int
    embedding: list[float] = attrs.field(repr=lambda v: f"[{len(v)} floats]")


@attrs.frozen(kw_only=True)
class EmbeddingResponse:
    """The vectors of a list of texts, in input order; `usage` summed over the requests
    the texts took."""

    id: str
    created: int
    data: list[Embedding]
    usage: Usage
    object: str = "embedding_list"
    #: The `X-Baidu-Request-Id` the server echoed (of the first request), else ours.
    request_id: str | None = None
    ratelimit: RateLimitInfo = NO_LIMITS
    #: The decoded JSON as received; for several requests, the first one's with every
    #: request's `data` and the summed `usage`.
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def vectors(self) -> list[list[float]]:
        """The vectors alone, in input order."""
        return [item.embedding for item in self.data]


def check_texts(texts: object) -> list[str]:
    """A non-empty list of non-blank strings (a bare string is one text too many to guess)."""
    if isinstance(texts, str | bytes):
        raise ValidationError("texts", "must be a list of strings, not one string: use [text]")
    if isinstance(texts, Mapping) or not isinstance(texts, Sequence):
        raise ValidationError("texts", "must be a list of strings", type(texts).__name__)
    if not texts:
        raise ValidationError("texts", "must not be empty")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"texts[{i}]", "must be a non-blank string", text)
    return list(texts)


def _malformed(what: str, request_id: str | None) -> ProtocolError:
    return ProtocolError(f"malformed EmbeddingResponse: {what}", request_id=request_id)


def _usage(value: object, request_id: str | None) -> Usage:
    if not isinstance(value, dict):
        raise _malformed("usage is not an object", request_id)
    counts = [value.get(name, 0) for name in ("prompt_tokens", "completion_tokens", "total_tokens")]
    if any(isinstance(n, bool) or not isinstance(n, int) for n in counts):
        raise _malformed("usage counts must be integers", request_id)
    return Usage(*counts)


def decode_embeddings(
    data: object,
    count: int,
    *,
    request_id: str | None = None,
    ratelimit: RateLimitInfo = NO_LIMITS,
) -> EmbeddingResponse:
    """The answer to a request of `count` texts; `ProtocolError` says what is wrong."""
    if not isinstance(data, dict):
        raise _malformed(f"expected a JSON object, got {type(data).__name__}", request_id)
    ident, created, items = data.get("id"), data.get("created"), data.get("data")
    if not isinstance(ident, str):
        raise _malformed("id must be a string", request_id)
    if isinstance(created, bool) or not isinstance(created, int):
        raise _malformed("created must be an integer", request_id)
    if not isinstance(items, list) or len(items) != count:
        raise _malformed(f"data must hold one item per text ({count})", request_id)
    vectors: list[Any] = [None] * count
    for item in items:
        index = item.get("index") if isinstance(item, dict) else None
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise _malformed(f"an item's index is not in [0, {count})", request_id)
        if vectors[index] is not None:
            raise _malformed(f"index {index} appears twice", request_id)
        try:
            if not isinstance(vector, list):
                raise TypeError
            sum(vector)
        except TypeError:  # sum() checks every element is a number, at C speed
            raise _malformed(
                f"item {index}: embedding must be a list of numbers", request_id
            ) from None
        vectors[index] = vector
    return EmbeddingResponse(
        id=ident,
        created=created,
        data=[Embedding(i, vector) for i, vector in enumerate(vectors)],
        usage=_usage(data.get("usage", {}), request_id),
        object=kind if isinstance(kind := data.get("object"), str) else "embedding_list",
        request_id=request_id,
        ratelimit=ratelimit,
        raw=data,
    )


def _merge(parts: Sequence[EmbeddingResponse]) -> EmbeddingResponse:
    if len(parts) == 1:
        return parts[0]
    data: list[Embedding] = []
    raw_items: list[Any] = []
    for part in parts:
        offset = len(data)
        data.extend(Embedding(offset + item.index, item.embedding) for item in part.data)
        raw_items.extend(part.raw.get("data", ()))
    usage = Usage(*(sum(getattr(p.usage, n) for p in parts) for n in attrs.fields_dict(Usage)))
    first = parts[0]
    raw = {**first.raw, "data": raw_items, "usage": attrs.asdict(usage)}
    return attrs.evolve(first, data=data, usage=usage, raw=raw)


async def embed_in_parts(
    texts: list[str],
    per_request: int,
    send: Callable[[list[str], int | None], Awaitable[EmbeddingResponse]],
    width: int,
) -> EmbeddingResponse:
    """`texts` sent `per_request` to a request, at most `width` at once; one answer.

    `send(part, number)` sends one request: `number` is the part's place (from 0), or
    None when the texts fit in one request. The first failure cancels the other parts.
    """
    if len(texts) <= per_request:
        return await send(texts, None)
    count = -(-len(texts) // per_request)
    parts: list[EmbeddingResponse | None] = [None] * count
    failures: list[Exception] = []
    # `width` workers take the parts in turn: 100,000 texts never become 6,250 tasks.
    numbers = iter(range(count))

    async with anyio.create_task_group() as group:

        async def work() -> None:
            for i in numbers:
                try:
                    parts[i] = await send(texts[i * per_request : (i + 1) * per_request], i)
                except Exception as exc:  # the first failure is the call's; stop the rest
                    failures.append(exc)
                    group.cancel_scope.cancel()
                    return

        for _ in range(min(width, count)):
            group.start_soon(work)
    if failures:
        raise failures[0]
    return _merge([part for part in parts if part is not None])
