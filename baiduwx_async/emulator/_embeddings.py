"""The embeddings route's body checks and answers: deterministic unit vectors.

A text's vector depends only on the endpoint, the text and the dimension: the same request
always gets the same vectors. It is built two components at a time, each pair a point on a
circle of radius sqrt(2 / dimension) at an angle picked by a byte of a hash of the text, so
every vector has length 1 (to the 10 decimals the JSON carries) and different texts point in
unrelated directions. The pairs are preformatted JSON text, which keeps answering 100,000
texts of 1,024 dimensions cheap for a benchmark.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math

import attrs

from ._config import EmbeddingModel
from ._text import count_tokens
from ._wire import Failure, dumps

__all__ = ["EmbeddingRequest", "embedding_body", "parse_embedding_request", "vector_json"]

_INVALID_ARGUMENT = "Invalid Argument"


@attrs.frozen
class EmbeddingRequest:
    texts: tuple[str, ...]
    prompt_tokens: int


def parse_embedding_request(raw: bytes, model: EmbeddingModel) -> EmbeddingRequest | Failure:
    """Check an embeddings body against `model`'s limits.

    Not JSON -> 336002; no `input`, or not a list of strings, or a `user_id` that is not a
    string -> 336001; an empty list, a blank text, too many texts or a text too long ->
    336003 naming the rule.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        return Failure(336002, "Invalid JSON")
    if not isinstance(body, dict):
        return Failure(336001, _INVALID_ARGUMENT)
    texts = body.get("input")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return Failure(336001, _INVALID_ARGUMENT)
    if "user_id" in body and not isinstance(body["user_id"], str):
        return Failure(336001, _INVALID_ARGUMENT)
    if not texts:
        return Failure(336003, "input must not be empty")
    if len(texts) > model.max_texts:
        return Failure(336003, f"the number of input texts must be at most {model.max_texts}")
    prompt_tokens = 0
    for index, text in enumerate(texts):
        if not text.strip():
            return Failure(336003, f"input[{index}] must not be blank")
        if len(text) > model.max_chars:
            return Failure(336003, f"the max length of input[{index}] is {model.max_chars}")
        tokens = count_tokens(text)
        if tokens > model.max_tokens:
            return Failure(336003, f"input[{index}] exceeds {model.max_tokens} tokens")
        prompt_tokens += tokens
    return EmbeddingRequest(tuple(texts), prompt_tokens)


@functools.lru_cache(maxsize=16)
def _pairs(dimension: int) -> tuple[str, ...]:
    """The 256 component pairs of a `dimension`-sized vector, as JSON text "x,y"."""
    radius = math.sqrt(2 / dimension)
    out = []
    for step in range(256):
        angle = 2 * math.pi * (step + 0.5) / 256
        x, y = radius * math.cos(angle), radius * math.sin(angle)
        out.append(f"{round(x, 10)!r},{round(y, 10)!r}")
    return tuple(out)


def vector_json(endpoint: str, text: str, dimension: int) -> str:
    """The vector of `text` on `endpoint`, as a JSON array."""
    key = f"{endpoint}\x1d{text}".encode("utf-8", "surrogatepass")
    angles = hashlib.shake_256(key).digest(dimension // 2)
    return "[" + ",".join(map(_pairs(dimension).__getitem__, angles)) + "]"


def embedding_body(
    endpoint: str, request: EmbeddingRequest, dimension: int, *, response_id: str, created: int
) -> bytes:
    """The answer: `embedding_list`, the vectors in input order, usage."""
    data = ",".join(
        f'{{"object":"embedding","embedding":{vector_json(endpoint, text, dimension)},'
        f'"index":{index}}}'
        for index, text in enumerate(request.texts)
    )
    tokens = request.prompt_tokens
    return b'{"id":%s,"object":"embedding_list","created":%d,"data":[%s],' % (
        dumps(response_id),
        created,
        data.encode(),
    ) + b'"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (tokens, tokens)
