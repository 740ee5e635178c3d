"""
Many inputs through one client: bounded concurrency, flat memory, no lost item.

The engine knows nothing of chat or completions: it is given `call(input)`, a coroutine
function (the client's public `chat` or `complete` with the batch's parameters bound).
Inputs are read lazily, one per free worker, so a generator of a million prompts never
becomes a million tasks; results travel through a bounded stream, so a slow consumer
slows the workers instead of piling results up.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
import warnings
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, NoReturn, TypeAlias, TypeVar

import anyio
import attrs

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
from ._retry import count_attempts

if TYPE_CHECKING:  # anyio loads these on first use; importing us should not
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
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


@attrs.frozen
class BatchSuccess(Generic[I, R]):
    """An input that got its `response` (`ok` is True, `error` None). See `BatchResult`."""

    index: int
    input: I
    response: R
    #: HTTP attempts this item took (retries and a token replay included).
    attempts: int

    @property
    def ok(self) -> Literal[True]:
        return True

    @property
    def error(self) -> None:
        return None

    def unwrap(self) -> R:
        """The response."""
        return self.response


@attrs.frozen
class BatchFailure(Generic[I, R]):
    """An input that failed with `error` (`ok` is False, `response` None). See
    `BatchResult`."""

    index: int
    input: I
    #: What ended the item: a `WenxinError` for anything the input or the service caused
    #: (inputs are checked before sending); otherwise a `RuntimeError` for a client closed
    #: while the batch ran, or a bug, kept here so that it does not stop the other items.
    error: Exception
    #: HTTP attempts this item took (0 when its input was refused before sending).
    attempts: int

    @property
    def ok(self) -> Literal[False]:
        return False

    @property
    def response(self) -> None:
        return None

    def unwrap(self) -> NoReturn:
        """Raise the item's error."""
        raise self.error


#: The outcome of one input: a `BatchSuccess` (with its `response`) or a `BatchFailure`
#: (with the `error` that ended it). Both have `index`, `input`, `attempts`, `ok`,
#: `response`, `error` and `unwrap()`, and `ok` tells type checkers which one it is:
#: in `r.response.result if r.ok else r.error`, `r.response` is the response type.
BatchResult: TypeAlias = BatchSuccess[I, R] | BatchFailure[I, R]
"""One input's outcome: `if r.ok:` narrows it to a `BatchSuccess`, else a `BatchFailure`."""


@attrs.frozen
class BatchProgress:
    """Where a batch stands; passed to `on_progress` after every item."""

    done: int
    failed: int
    total: int | None
    elapsed: float
    #: tokens the answers so far used (their `usage.total_tokens`)
    tokens: int = 0

    @property
    def rate(self) -> float:
        """Items finished per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def tokens_per_minute(self) -> float:
        """Tokens used per minute so far (to set beside a `tpm` budget)."""
        return self.tokens * 60.0 / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, when the total is known."""
        if self.total is None or self.done == 0:
            return None
        return (self.total - self.done) / self.rate if self.rate > 0 else math.inf


class BatchIterator(Generic[I, R]):
    """Results as they finish. Use `async for r in it`; to leave early, prefer

    ```python
    async with client.iter_batch_chat(...) as results:
        async for r in results:
            ...
    ```
    which stops every request still in flight when the block ends.
    """

    def __init__(
        self,
        inputs: Iterable[I] | AsyncIterable[I],
        call: Callable[[I], Awaitable[R]],
        *,
        concurrency: int,
        on_progress: Callable[[BatchProgress], object] | None = None,
    ) -> None:
        self._inputs = inputs
        self._call = call
        self._concurrency = check_positive_int(concurrency, "concurrency")
        self._on_progress = on_progress
        self._total = len(inputs) if hasattr(inputs, "__len__") else None  # type: ignore[arg-type]
        self._task_group: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[BatchResult[I, R]] | None = None
        self._done = 0
        self._failed = 0
        self._tokens = 0
        self._started_at = 0.0

    async def __aenter__(self) -> BatchIterator[I, R]:
        if self._task_group is not None:
            raise RuntimeError("a batch runs once")
        send, self._receive = anyio.create_memory_object_stream[BatchResult[I, R]](
            self._concurrency
        )
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._started_at = time.monotonic()
        self._task_group.start_soon(self._run_workers, send)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None and self._receive is not None
        self._task_group.cancel_scope.cancel()  # left early: stop what is in flight
        self._receive.close()
        return await self._task_group.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> AsyncIterator[BatchResult[I, R]]:
        if self._task_group is None:
            return self._owning_iterator()
        return self

    async def __anext__(self) -> BatchResult[I, R]:
        assert self._receive is not None, "use `async with` or `async for`"
        try:
            # Results waiting are taken at once: a trip through the event loop per result
            # would let the workers fill the buffer and stall behind this one reader.
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def _owning_iterator(self) -> AsyncIterator[BatchResult[I, R]]:
        async with self:
            async for result in self:
                yield result

    async def _run_workers(self, send: MemoryObjectSendStream[BatchResult[I, R]]) -> None:
        take = _taker(self._inputs)
        async with send, anyio.create_task_group() as workers:
            for _ in range(self._concurrency):
                workers.start_soon(self._work, take, send.clone())

    async def _work(
        self,
        take: Callable[[], Awaitable[tuple[int, I] | None]],
        send: MemoryObjectSendStream[BatchResult[I, R]],
    ) -> None:
        async with send:
            while (taken := await take()) is not None:
                index, item = taken
                with count_attempts() as attempts:
                    result: BatchResult[I, R]
                    try:
                        response = await self._call(item)
                    except Exception as exc:  # one item's failure is its own, never the batch's
                        result = BatchFailure(index, item, exc, attempts.count)
                    else:
                        result = BatchSuccess(index, item, response, attempts.count)
                self._done += 1
                self._failed += not result.ok
                if self._on_progress is not None:
                    usage = getattr(result.response, "usage", None)
                    self._tokens += getattr(usage, "total_tokens", 0) or 0
                    self._on_progress(
                        BatchProgress(
                            self._done,
                            self._failed,
                            self._total,
                            time.monotonic() - self._started_at,
                            self._tokens,
                        )
                    )
                try:
                    send.send_nowait(result)  # room in the buffer: no trip through the loop
                except anyio.WouldBlock:
                    await send.send(result)
                except anyio.BrokenResourceError:
                    return  # the reader left early; the batch is being cancelled


def _taker(inputs: Iterable[Any] | AsyncIterable[Any]) -> Callable[[], Awaitable[Any]]:
    """What the workers call for the next (index, item), or None at the end. Every worker
    shares it, so the inputs are read lazily, once, in order."""
    if isinstance(inputs, AsyncIterable):
        items = aiter(inputs)
        lock = anyio.Lock(fast_acquire=True)  # an async iterator takes one reader at a time
        count = itertools.count()

        async def take_async() -> tuple[int, Any] | None:
            async with lock:
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    return None
            return next(count), item

        return take_async
    numbered = enumerate(inputs)

    async def take() -> tuple[int, Any] | None:
        # A plain iterator cannot be read by two tasks at once on one event loop: no lock.
        return next(numbered, None)

    return take


async def run_ordered(iterator: BatchIterator[I, R]) -> list[BatchResult[I, R]]:
    """Every result of a batch, in input order."""
    results = [result async for result in iterator]
    results.sort(key=lambda result: result.index)
    return results


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
