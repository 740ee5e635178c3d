"""
Embedding batches: one `BatchResult` per text, texts packed `texts_per_request` to a
request. The batch engine of `_batch` runs the requests (groups of texts, read lazily);
this module unpacks each group's answer into its texts' results, in the indexes of the
input.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._batch import (
    DEFAULT_BATCH_CONCURRENCY,
    BatchFailure,
    BatchIterator,
    BatchProgress,
    BatchResult,
    BatchSuccess,
    _paced,
    run_ordered,
)
from ._embeddings import EmbeddingResponse, split_embed_params
from ._errors import ValidationError
from ._extras import refuse_batch_request_id
from ._keywords import check_unknown, show_keywords
from ._models import check_endpoint
from ._params import EMBED_KEYS, EmbedOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["EmbedBatchIterator", "EmbedBatchMethods"]

#: The field of a refused text until its place in the input is known (`_unpack`).
_UNPLACED = "texts[?]"

#: What one group's request gives each of its texts: its vector, or the error that ended it.
Outcome = list[float] | Exception


def _groups_of(texts: Iterable[Any], size: int) -> Iterable[list[Any]]:
    iterator = iter(texts)
    while group := list(itertools.islice(iterator, size)):
        yield group


async def _async_groups_of(texts: AsyncIterable[Any], size: int) -> AsyncIterator[list[Any]]:
    group: list[Any] = []
    async for text in texts:
        group.append(text)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


class EmbedBatchIterator:
    """Per-text results of `iter_batch_embed()`, as their requests finish; used like
    `BatchIterator` (`async for`, or `async with ... as results` to leave early)."""

    def __init__(
        self,
        groups: BatchIterator[list[Any], list[Outcome]],
        per_request: int,
        total: int | None,
        on_progress: Callable[[BatchProgress], object] | None,
    ) -> None:
        self._groups = groups
        self._per_request = per_request
        self._total = total
        self._on_progress = on_progress
        self._ready: deque[BatchResult[str, list[float]]] = deque()
        self._done = 0
        self._failed = 0
        self._started_at = time.monotonic()
        self._entered = False

    async def __aenter__(self) -> EmbedBatchIterator:
        self._started_at = time.monotonic()
        await self._groups.__aenter__()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._groups.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> AsyncIterator[BatchResult[str, list[float]]]:
        if not self._entered:
            return self._owning_iterator()
        return self

    async def _owning_iterator(self) -> AsyncIterator[BatchResult[str, list[float]]]:
        async with self:
            async for result in self:
                yield result

    async def __anext__(self) -> BatchResult[str, list[float]]:
        while not self._ready:
            group = await self._groups.__anext__()  # StopAsyncIteration ends us too
            self._unpack(group)
        return self._ready.popleft()

    def _unpack(self, group: BatchResult[list[Any], list[Outcome]]) -> None:
        first = group.index * self._per_request
        for offset, text in enumerate(group.input):
            outcome: Outcome = group.response[offset] if group.ok else group.error
            result: BatchResult[str, list[float]]
            if isinstance(outcome, ValidationError) and outcome.field == _UNPLACED:
                outcome = ValidationError(f"texts[{first + offset}]", outcome.rule, text)
            if isinstance(outcome, Exception):
                attempts = 0 if isinstance(outcome, ValidationError) else group.attempts
                result = BatchFailure(first + offset, text, outcome, attempts)
            else:
                result = BatchSuccess(first + offset, text, outcome, group.attempts)
            self._ready.append(result)
            self._done += 1
            self._failed += not result.ok
            if self._on_progress is not None:
                elapsed = time.monotonic() - self._started_at
                self._on_progress(BatchProgress(self._done, self._failed, self._total, elapsed))


class EmbedBatchMethods:
    """The embedding batch methods of `AsyncClient`, built on its public `embed()`."""

    if TYPE_CHECKING:
        embed: Callable[..., Awaitable[EmbeddingResponse]]

        def _check_width(self, concurrency: int) -> None: ...

    @show_keywords(EmbedOptions)
    async def batch_embed(
        self,
        endpoint: str,
        texts: Iterable[str] | AsyncIterable[str],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        qps: float | None = None,
        on_progress: Callable[[BatchProgress], object] | None = None,
        **params: Unpack[EmbedOptions],
    ) -> list[BatchResult[str, list[float]]]:
        """The vector of every text, one `BatchResult` per text in input order (its
        `response` is the text's `list[float]`).

        Texts are packed `texts_per_request` to a request (default: 16, 1 for `tao_8k`); at most
        `concurrency` requests are in flight, `qps` caps their rate. A text that is not a
        non-blank string fails alone, unsent; a failed request fails the texts it held.
        """
        check_unknown("batch_embed", params, EMBED_KEYS)
        batch = self.iter_batch_embed(
            endpoint, texts, concurrency=concurrency, qps=qps, on_progress=on_progress, **params
        )
        return await run_ordered(batch)  # type: ignore[arg-type]

    @show_keywords(EmbedOptions)
    def iter_batch_embed(
        self,
        endpoint: str,
        texts: Iterable[str] | AsyncIterable[str],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        qps: float | None = None,
        on_progress: Callable[[BatchProgress], object] | None = None,
        **params: Unpack[EmbedOptions],
    ) -> EmbedBatchIterator:
        """Results of `batch_embed()` as their requests finish, reading the texts lazily,
        so memory stays flat however many there are; see `iter_batch_chat()`."""
        per_request, _, _ = split_embed_params("iter_batch_embed", endpoint, params)
        refuse_batch_request_id(params)
        options = {name: value for name, value in params.items() if name != "texts_per_request"}
        check_endpoint(endpoint)
        self._check_width(concurrency)
        groups: Iterable[list[Any]] | AsyncIterable[list[Any]] = (
            _async_groups_of(texts, per_request)
            if isinstance(texts, AsyncIterable)
            else _groups_of(texts, per_request)
        )
        total = len(texts) if hasattr(texts, "__len__") else None  # type: ignore[arg-type]
        call = _paced(partial(self._embed_group, endpoint, options), qps)
        return EmbedBatchIterator(
            BatchIterator(groups, call, concurrency=concurrency), per_request, total, on_progress
        )

    async def _embed_group(
        self, endpoint: str, options: dict[str, Any], group: list[Any]
    ) -> list[Outcome]:
        """One request for the good texts of a group; each text's vector or error."""
        outcomes: list[Outcome | None] = [None] * len(group)
        good: list[str] = []
        for i, text in enumerate(group):
            if isinstance(text, str) and text.strip():
                good.append(text)
            else:
                outcomes[i] = ValidationError(_UNPLACED, "must be a non-blank string", text)
        vectors: list[Outcome]
        if not good:
            vectors = []
        else:
            try:
                answer = await self.embed(endpoint, good, texts_per_request=len(good), **options)
                vectors = list(answer.vectors)
            except Exception as exc:  # the request's failure is each of its texts'
                vectors = [exc] * len(good)
        pending = iter(vectors)
        return [next(pending) if outcome is None else outcome for outcome in outcomes]
