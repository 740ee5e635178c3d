"""
The batch methods of `AsyncClient` (`batch_chat`, `iter_batch_chat`, and the completion
ones): the parameters checked once, then the inputs through the engine of
`_batch_iterator`, which knows nothing of chat or completions.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from ._batch_iterator import (
    BatchFailure,
    BatchIterator,
    BatchProgress,
    BatchResult,
    BatchSuccess,
    run_ordered,
)
from ._extras import refuse_batch_request_id
from ._keywords import check_unknown, show_keywords
from ._limits import AdaptiveRateLimiter
from ._models import (
    ChatParams,
    ChatResponse,
    CompletionParams,
    CompletionResponse,
    MessageLike,
    check_endpoint,
    check_positive_int,
)
from ._params import (
    CHAT_KEYS,
    COMPLETION_KEYS,
    ChatOptions,
    CompletionOptions,
    split_params,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "BatchFailure",
    "BatchIterator",
    "BatchMethods",
    "BatchProgress",
    "BatchResult",
    "BatchSuccess",
    "BatchWidthWarning",
    "run_ordered",
]

DEFAULT_BATCH_CONCURRENCY = 16

I = TypeVar("I")  # noqa: E741 - the conventional name for an input type
R = TypeVar("R")
T = TypeVar("T")


class BatchWidthWarning(UserWarning):
    """A batch is wider than its client can send at once (see `AsyncClient.in_flight_capacity`)."""


def _first_level_outside() -> int:
    """The `stacklevel` of the caller's line, for a warning given in this module (the
    batch methods call one another, so the depth varies)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


class BatchMethods:
    """The batch methods of `AsyncClient`, built on its public `chat()` and `complete()`."""

    if TYPE_CHECKING:
        chat: Callable[..., Awaitable[ChatResponse]]
        complete: Callable[..., Awaitable[CompletionResponse]]

        @property
        def in_flight_capacity(self) -> int | None: ...

    def _check_width(self, concurrency: int) -> None:
        # Not an error (the batch still works), but the extra workers would only queue for a
        # connection, and the batch would run at the pool's width without saying so.
        capacity = self.in_flight_capacity
        if capacity is not None and check_positive_int(concurrency, "concurrency") > capacity:
            warnings.warn(
                f"batch concurrency {concurrency} is more than the {capacity} requests this "
                f"client sends at once, so only {capacity} run at a time; create the client "
                f"with max_concurrency={concurrency} (which also sizes its connection pool)",
                BatchWidthWarning,
                stacklevel=_first_level_outside(),
            )

    @show_keywords(ChatOptions)
    async def batch_chat(
        self,
        endpoint: str,
        conversations: Iterable[Sequence[MessageLike]] | AsyncIterable[Sequence[MessageLike]],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        qps: float | None = None,
        on_progress: Callable[[BatchProgress], object] | None = None,
        **params: Unpack[ChatOptions],
    ) -> list[BatchResult[Sequence[MessageLike], ChatResponse]]:
        """Send every conversation to a chat endpoint; the results in input order.

        At most `concurrency` requests are in flight; `qps` caps this batch's rate (on top
        of the client's limits). `params` are `chat()`'s keywords, checked once, before
        anything is sent. One item's failure is kept in its `BatchResult.error` and never
        stops the others; each item is retried under the client's policy.
        """
        check_unknown("batch_chat", params, CHAT_KEYS)
        batch = self.iter_batch_chat(
            endpoint,
            conversations,
            concurrency=concurrency,
            qps=qps,
            on_progress=on_progress,
            **params,
        )
        return await run_ordered(batch)

    @show_keywords(CompletionOptions)
    async def batch_complete(
        self,
        endpoint: str,
        prompts: Iterable[str] | AsyncIterable[str],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        qps: float | None = None,
        on_progress: Callable[[BatchProgress], object] | None = None,
        **params: Unpack[CompletionOptions],
    ) -> list[BatchResult[str, CompletionResponse]]:
        """Send every prompt to a completions endpoint; the results in input order.

        As `batch_chat()`, with `complete()`'s keywords.
        """
        check_unknown("batch_complete", params, COMPLETION_KEYS)
        batch = self.iter_batch_complete(
            endpoint,
            prompts,
            concurrency=concurrency,
            qps=qps,
            on_progress=on_progress,
            **params,
        )
        return await run_ordered(batch)

    @show_keywords(ChatOptions)
    def iter_batch_chat(
        self,
        endpoint: str,
        conversations: Iterable[Sequence[MessageLike]] | AsyncIterable[Sequence[MessageLike]],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        qps: float | None = None,
        on_progress: Callable[[BatchProgress], object] | None = None,
        **params: Unpack[ChatOptions],
    ) -> BatchIterator[Sequence[MessageLike], ChatResponse]:
        """Results of `batch_chat()` as they finish, reading the inputs lazily, so memory
        stays flat however many there are. `async for r in client.iter_batch_chat(...)`;
        use it as `async with ... as results` to be able to leave the loop early."""
        split_params("iter_batch_chat", params, ChatParams, CHAT_KEYS)
        refuse_batch_request_id(params)
        check_endpoint(endpoint)
        self._check_width(concurrency)
        call = _paced(partial(self.chat, endpoint, **params), qps)
        return BatchIterator(conversations, call, concurrency=concurrency, on_progress=on_progress)

    @show_keywords(CompletionOptions)
    def iter_batch_complete(
        self,
        endpoint: str,
        prompts: Iterable[str] | AsyncIterable[str],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        qps: float | None = None,
        on_progress: Callable[[BatchProgress], object] | None = None,
        **params: Unpack[CompletionOptions],
    ) -> BatchIterator[str, CompletionResponse]:
        """Results of `batch_complete()` as they finish; see `iter_batch_chat()`."""
        split_params("iter_batch_complete", params, CompletionParams, COMPLETION_KEYS)
        refuse_batch_request_id(params)
        check_endpoint(endpoint)
        self._check_width(concurrency)
        call = _paced(partial(self.complete, endpoint, **params), qps)
        return BatchIterator(prompts, call, concurrency=concurrency, on_progress=on_progress)


def _paced(call: Callable[[I], Awaitable[T]], qps: float | None) -> Callable[[I], Awaitable[T]]:
    """`call`, started at most `qps` times a second."""
    if qps is None:
        return call
    limiter = AdaptiveRateLimiter(qps=qps, adaptive=False)

    async def paced(item: I) -> T:
        await limiter.acquire()
        return await call(item)

    return paced
