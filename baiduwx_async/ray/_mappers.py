"""The mappers: one `AsyncClient` per actor, a batch's rows sent concurrently."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import anyio

from .._auth import Credentials
from .._batch import BatchResult
from .._client import AsyncClient
from .._errors import ValidationError
from .._models import check_endpoint, check_positive_int
from .._params import ChatOptions, CompletionOptions, EmbedOptions

__all__ = ["ChatMapper", "CompletionMapper", "EmbeddingMapper", "PerActorLimitsWarning"]

logger = logging.getLogger("baiduwx_async.ray")

#: Requests in flight per actor when `max_concurrency` is not given.
DEFAULT_MAX_CONCURRENCY = 16

#: `AsyncClient` keywords the mapper sets itself, so `client_options` may not.
_OWN_OPTIONS = frozenset(
    {"credentials", "qps", "rpm", "tpm", "max_concurrency", "token_store", "rate_limiter"}
)


class PerActorLimitsWarning(UserWarning):
    """A mapper without `redis_url` applies its limits per actor, not per cluster."""


#: The columns every mapper adds beside its result column.
_COMMON_COLUMNS = ("prompt_tokens", "completion_tokens", "error", "attempts")


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _plain(value: Any) -> Any:
    """A cell as plain Python: Ray hands columns over as numpy arrays (of arrays, for
    nested lists), and the client wants lists and dicts."""
    tolist = getattr(value, "tolist", None)
    if tolist is not None and not isinstance(value, str | bytes):
        value = tolist()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


class _Mapper:
    """What the three mappers share: construction, the lazy client, the output batch."""

    default_input_column: ClassVar[str]
    result_column: ClassVar[str] = "result"
    #: The keywords `params` may hold: the call's own.
    call_options: ClassVar[frozenset[str]]

    def __init__(
        self,
        *,
        endpoint: str,
        input_column: str | None = None,
        credentials: Credentials | None = None,
        redis_url: str | None = None,
        qps: float | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        client_options: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self.input_column = input_column or self.default_input_column
        self.max_concurrency = check_positive_int(max_concurrency, "max_concurrency")
        self._credentials = credentials
        self._redis_url = redis_url
        self._limits = {"qps": qps, "rpm": rpm, "tpm": tpm}
        self._client_options = dict(client_options or {})
        clash = sorted(_OWN_OPTIONS & self._client_options.keys())
        if clash:
            raise ValidationError(
                "client_options", f"{', '.join(clash)} are mapper keywords: pass them directly"
            )
        self._params = dict(params or {})
        unknown = sorted(self._params.keys() - self.call_options)
        if unknown:
            raise ValidationError(
                "params", f"{', '.join(unknown)} are not parameters of this mapper's call"
            )
        self._client: AsyncClient | None = None
        self._starting: anyio.Event | None = None
        self._resources = contextlib.AsyncExitStack()
        if redis_url is None and any(v is not None for v in self._limits.values()):
            warnings.warn(
                f"{type(self).__name__} without redis_url: qps/rpm/tpm apply to each actor "
                "on its own, so N actors may send N times as much; pass redis_url to share "
                "one budget (and one access token) across the cluster",
                PerActorLimitsWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        # No credentials and no Redis URL (it may hold a password): reprs reach Ray's logs.
        return (
            f"{type(self).__name__}(endpoint={self.endpoint!r}, "
            f"input_column={self.input_column!r}, shared={self._redis_url is not None})"
        )

    async def _get_client(self) -> AsyncClient:
        """The actor's client, built on first use on the actor's event loop; concurrent
        first batches wait for the one that builds it."""
        if self._client is not None:
            return self._client
        if self._starting is not None:
            await self._starting.wait()
            if self._client is None:
                raise RuntimeError("the client of this actor failed to start")
            return self._client
        self._starting = anyio.Event()
        try:
            self._client = await self._build_client()
        finally:
            self._starting.set()
            if self._client is None:
                self._starting = None  # let the next batch try again
        return self._client

    async def _build_client(self) -> AsyncClient:
        # a stack of its own: a build that fails halfway closes what it had opened, and
        # the next batch starts clean
        async with contextlib.AsyncExitStack() as stack:
            client = await self._open_client(stack)
            self._resources = stack.pop_all()
        return client

    async def _open_client(self, stack: contextlib.AsyncExitStack) -> AsyncClient:
        options: dict[str, Any] = dict(self._client_options)
        options["max_concurrency"] = self.max_concurrency
        limits: dict[str, Any] = {k: v for k, v in self._limits.items() if v is not None}
        if self._redis_url is not None:
            from ..redis import RedisRateLimiter, RedisTokenStore

            store = RedisTokenStore(self._redis_url)
            options["token_store"] = await stack.enter_async_context(store)
            # even without limits: the actors then share the slow-down after a rate-limit
            # answer, instead of each learning the service's limit alone
            limiter = RedisRateLimiter(self._redis_url, **limits)
            options["rate_limiter"] = await stack.enter_async_context(limiter)
        else:
            options.update(limits)
        if self._credentials is not None:
            options["credentials"] = self._credentials
        return await stack.enter_async_context(AsyncClient(**options))

    async def aclose(self) -> None:
        """Close the client and the Redis connections (Ray ends the actor's process
        without it; tests and notebooks that call a mapper directly may call this)."""
        self._client = None
        self._starting = None
        await self._resources.aclose()

    async def __call__(self, batch: Any) -> Any:
        """Answer every row of `batch` (a dict of columns, or a pandas DataFrame) and
        return it with the result columns added."""
        if self.input_column not in batch:
            raise ValidationError(
                "input_column", f"the batch has no column {self.input_column!r}", list(batch)
            )
        taken = sorted({self.result_column, *_COMMON_COLUMNS} & set(batch.keys()))
        if taken:
            raise ValidationError(
                "input_column", f"the batch already has the output column(s) {taken}: rename them"
            )
        inputs = [_plain(value) for value in batch[self.input_column]]
        client = await self._get_client()
        results = await self._run(client, inputs)
        columns = self._columns(results)
        if hasattr(batch, "assign"):  # a pandas DataFrame
            return batch.assign(**columns)
        out = dict(batch)
        out.update(columns)
        return out

    async def _run(self, client: AsyncClient, inputs: list[Any]) -> list[BatchResult[Any, Any]]:
        raise NotImplementedError

    def _columns(self, results: Sequence[BatchResult[Any, Any]]) -> dict[str, list[Any]]:
        answers, prompt_tokens, completion_tokens = [], [], []
        for result in results:
            response = result.response
            answers.append(None if response is None else response.result)
            usage = None if response is None else response.usage
            prompt_tokens.append(None if usage is None else usage.prompt_tokens)
            completion_tokens.append(None if usage is None else usage.completion_tokens)
        return {
            self.result_column: answers,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "error": [None if r.error is None else _describe(r.error) for r in results],
            "attempts": [r.attempts for r in results],
        }


class CompletionMapper(_Mapper):
    """Completes the `"prompt"` column (or `input_column`) on a completions endpoint."""

    default_input_column = "prompt"
    call_options = CompletionOptions.__optional_keys__ | CompletionOptions.__required_keys__

    async def _run(self, client: AsyncClient, inputs: list[Any]) -> list[BatchResult[Any, Any]]:
        return await client.batch_complete(
            self.endpoint, inputs, concurrency=self.max_concurrency, **self._params
        )


class ChatMapper(_Mapper):
    """Answers the `"messages"` column (or `input_column`): each cell a conversation, a
    list of `{"role", "content"}` mappings."""

    default_input_column = "messages"
    call_options = ChatOptions.__optional_keys__ | ChatOptions.__required_keys__

    async def _run(self, client: AsyncClient, inputs: list[Any]) -> list[BatchResult[Any, Any]]:
        return await client.batch_chat(
            self.endpoint, inputs, concurrency=self.max_concurrency, **self._params
        )


class EmbeddingMapper(_Mapper):
    """Embeds the `"text"` column (or `input_column`); the vector goes to `embedding`.

    Texts go out packed `texts_per_request` to a request (16, or 1 for `tao_8k`; set it
    in `params`). The service counts tokens per request, not per text, so
    `prompt_tokens` and `completion_tokens` are `None` on embedding rows.
    """

    default_input_column = "text"
    result_column = "embedding"
    call_options = EmbedOptions.__optional_keys__ | EmbedOptions.__required_keys__

    async def _run(self, client: AsyncClient, inputs: list[Any]) -> list[BatchResult[Any, Any]]:
        return await client.batch_embed(
            self.endpoint, inputs, concurrency=self.max_concurrency, **self._params
        )

    def _columns(self, results: Sequence[BatchResult[Any, Any]]) -> dict[str, list[Any]]:
        return {
            self.result_column: [r.response for r in results],
            "prompt_tokens": [None] * len(results),
            "completion_tokens": [None] * len(results),
            "error": [None if r.error is None else _describe(r.error) for r in results],
            "attempts": [r.attempts for r in results],
        }
