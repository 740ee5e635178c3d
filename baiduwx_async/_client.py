"""
`AsyncClient`: the public calls. Each checks its inputs, prepares the request once
(`PreparedCall`) and hands it to the `Sender`, which sends, reads and retries it; this
module decodes what comes back. How the constructor's keywords become the parts of a
client is `_client_setup`; how a call becomes its request, `_call_preparation`.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import attrs
import httpx

from ._auth import Credentials, OAuthCredentials
from ._batch import BatchMethods
from ._batch_embed import EmbedBatchMethods
from ._call_preparation import CallPreparation
from ._calls import base_url_setting
from ._client_setup import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_CONNECTIONS,
    client_auth,
    client_base_url,
    client_credentials,
    client_limiter,
    client_transport,
    fetch_token,
)
from ._embeddings import (
    EmbeddingResponse,
    check_texts,
    decode_embeddings,
    embed_in_parts,
    split_embed_params,
)
from ._extras import DEFAULT_TIMEOUT, as_timeout
from ._keywords import show_keywords
from ._limits import RateLimiter
from ._models import (
    DEFAULT_MAX_INPUT_CHARS,
    ChatChunk,
    ChatResponse,
    CompletionChunk,
    CompletionResponse,
    MessageLike,
    Usage,
    check_positive_int,
    decode,
)
from ._params import ChatOptions, CompletionOptions, EmbedOptions
from ._retry import RetryPolicy
from ._sender import (
    DEFAULT_MAX_RESPONSE_BYTES,
    Answer,
    PreparedCall,
    Sender,
    install_log_redaction,
)
from ._streaming import ChatStream, ChunkReader, CompletionStream
from ._telemetry import make_telemetry, traced, traced_stream
from ._token_budget import TokenCharge, TokenEstimator
from ._tokens import AccessToken, TokenStore
from ._transport import Reply

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "AsyncClient"]

#: A call's `timeout=`: seconds for the whole wait (connecting capped at 10 s), an
#: `httpx.Timeout` for each limit (connect, read, write, pool), or None: the client's.
TimeoutLike = float | httpx.Timeout | None
R = TypeVar("R", ChatResponse, CompletionResponse)
C = TypeVar("C", ChatChunk, CompletionChunk)


class AsyncClient(CallPreparation, BatchMethods, EmbedBatchMethods):
    """A client for Wenxin Workshop model serving; use it as `async with AsyncClient(...)`.

    Calls: `chat`, `complete` (awaited: a `ChatResponse` / `CompletionResponse`),
    `chat_stream`, `complete_stream` (not awaited: `async with` the stream), and the
    `batch_*` / `iter_batch_*` helpers. Every error is a `WenxinError`: `ValidationError`
    before sending, `APIError` subclasses when the service refuses, `TransportError` (and
    `RequestTimeoutError`) when the connection fails, `ProtocolError` for a malformed
    answer. The keywords of the constructor are described in `help(AsyncClient.__init__)`.
    """

    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        base_url: str | httpx.URL | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        http_backend: Literal["httpx", "aiohttp"] = "httpx",
        http_client: httpx.AsyncClient | None = None,
        token_store: TokenStore | None = None,
        max_input_chars: int | None = DEFAULT_MAX_INPUT_CHARS,
        retry_policy: RetryPolicy | None = None,
        max_concurrency: int | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        qps: float | None = None,
        rpm: float | None = None,
        rate_limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.time,
        verify: ssl.SSLContext | bool = True,
        telemetry: bool = True,
        tpm: float | None = None,
        token_estimator: TokenEstimator | None = None,
    ) -> None:
        """Make a client; nothing is sent until the first call. All arguments are keywords:

        credentials: `OAuthCredentials`, `IAMCredentials` or `StaticToken`; read from the
            environment when omitted (see `credentials_from_env`).
        base_url: the service root; `QIANFAN_BASE_URL`, else `https://aip.baidubce.com`.
        timeout: seconds, or an `httpx.Timeout`; for streams the read timeout is the
            longest silence allowed between two chunks. Default 300 s, connect 10 s.
        max_retries: retries after the first attempt for retryable failures (default 3).
        retry_policy: backoff settings (`RetryPolicy`); `max_retries` overrides its budget.
        http_backend: `"httpx"` (default: portable, asyncio and trio, mockable with respx)
            or `"aiohttp"` (asyncio only, extra `aiohttp`: several times the throughput).
        http_client: your own `httpx.AsyncClient`; it is used as is and left open.
        verify: as httpx's `verify`, on either backend: an `ssl.SSLContext` trusting your
            CA (`ssl.create_default_context(cafile=...)`), True (default: the CA bundle
            httpx uses, or `SSL_CERT_FILE`), or False. With `http_client`, set it there.
        token_store: where access tokens are kept (default: in this client's memory);
            a `FileTokenStore` lets a token outlive the process.
        max_input_chars: the most characters all messages of a chat may hold together
            (4800, the service's limit); `None` leaves the check to the server.
        max_concurrency: the most requests (and open streams) in flight at once; also the
            size of the connection pool. Default: unlimited requests, 100 connections.
        max_response_bytes: the largest answer (or stream line) accepted; 8 MiB.
        qps, rpm: a client-side rate limit, requests per second / per minute. Without
            either, the client still slows down by itself after rate-limit answers.
        rate_limiter: a limiter of your own (e.g. one shared between processes) instead.
        clock: the wall clock (unix seconds) for token expiry and signatures; for tests.
        telemetry: OpenTelemetry spans and metrics for each call when `opentelemetry-api`
            is installed (extra `otel`); `False` turns them off.
        tpm: a tokens-per-minute budget: each request is charged ahead by an estimate of
            its tokens (prompt, and the room of the answer: `max_output_tokens`, else
            1024) and settled by the answer's `usage`; a request whose estimate exceeds
            the whole budget raises `ValidationError` before it is sent.
        token_estimator: the estimate, a function of the JSON body about to be sent that
            returns tokens (default `estimate_tokens`: characters, 1 per CJK ideograph and
            1 per 3 other characters, leaning high since the difference is given back).

        Raises `ValidationError` for a bad value, and `AuthenticationError` when no
        `credentials=` is given and the environment holds none.
        """
        credentials = client_credentials(credentials)
        self._base_url = client_base_url(base_url)
        self._timeout = as_timeout(timeout)
        self._retry = retry_policy or RetryPolicy()
        if max_retries is not None:
            self._retry = attrs.evolve(self._retry, max_retries=max_retries)
        self._max_input_chars = max_input_chars
        self._urls: dict[tuple[str, str], httpx.URL] = {}
        self._clock = clock
        if max_concurrency is not None:
            check_positive_int(max_concurrency, "max_concurrency")
        limiter, budget, self._estimate = client_limiter(
            rate_limiter, qps, rpm, tpm, token_estimator
        )
        transport, self._capacity = client_transport(
            http_backend, http_client, max_concurrency, self._timeout, verify
        )
        self._sender = Sender(
            transport,
            limiter=limiter,
            max_in_flight=max_concurrency,
            max_response_bytes=check_positive_int(max_response_bytes, "max_response_bytes"),
            clock=clock,
            base_url_setting=base_url_setting(base_url),
        )
        if self._estimate is not None:
            self._sender.budget = budget
        self._credentials = credentials
        self._tokens, self._auth = client_auth(
            credentials, self._base_url, self._fetch_token, token_store, clock
        )
        install_log_redaction()
        self._telemetry = make_telemetry(telemetry, self._base_url, self._sender)

    # --- lifecycle

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool, unless it belongs to a caller's `http_client`.
        Calls made afterwards raise `RuntimeError`."""
        self._sender.closed = True
        with anyio.CancelScope(shield=True):
            await self._sender.transport.aclose()

    @property
    def is_closed(self) -> bool:
        """True once `aclose()` was called (or the `async with` block was left)."""
        return self._sender.closed

    @property
    def in_flight_capacity(self) -> int | None:
        """The most requests this client has on the wire at once: `max_concurrency`, else
        the size of its connection pool; `None` with your own `http_client` and no cap."""
        return self._capacity

    @property
    def base_url(self) -> httpx.URL:
        """The service root every route is appended to."""
        return self._base_url

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={str(self._base_url)!r}, credentials={self._credentials!r})"

    # --- calls

    @traced("chat")
    @show_keywords(ChatOptions)
    async def chat(
        self, endpoint: str, messages: Sequence[MessageLike], **params: Unpack[ChatOptions]
    ) -> ChatResponse:
        """Send a conversation to a chat endpoint and return the model's answer.

        `messages` alternate between the user side (`user`, or `function` with a function's
        result) and `assistant`, starting with a user turn and ending on the user side (an
        odd count); each is a `Message` or a mapping with non-blank content (an assistant
        turn with a `function_call` may have empty content), at most 4800 characters in all.

        Parameters left `None` keep the server's defaults: `temperature` in (0, 1],
        `top_p` in [0, 1], `penalty_score` in [1, 2], `top_k` >= 1, `stop` up to 4 strings
        of up to 20 characters, `metadata` up to 16 string pairs, `user_id`. The ERNIE
        family's fields are checked for type and shape (the service judges the values):
        `system`, `max_output_tokens`, `response_format` ("text" | "json_object"),
        `disable_search`, `enable_citation`, `enable_trace`, `functions` (`Function`s or
        mappings), `tool_choice`, `user_ip`.

        `extra_body` is merged into the JSON body last (not `stream`); `extra_headers` and
        `extra_query` are sent as given (and signed, with IAM credentials). `timeout` and
        `max_retries` override the client's for this call; `request_id` is sent as
        `Request_id` (one is generated otherwise). A broken rule raises `ValidationError`
        before anything is sent; an unknown keyword, `TypeError`.
        """
        call = self._prepare_chat("chat", endpoint, messages, params, False)
        return _decode_answer(await self._sender.send(call), ChatResponse)

    @traced("text_completion")
    @show_keywords(CompletionOptions)
    async def complete(
        self, endpoint: str, prompt: str, **params: Unpack[CompletionOptions]
    ) -> CompletionResponse:
        """Send a prompt to a completions endpoint and return the generated text.

        `prompt` is a non-blank string; the other keywords follow the rules of `chat()`.
        """
        call = self._prepare_completion("complete", endpoint, prompt, params, False)
        return _decode_answer(await self._sender.send(call), CompletionResponse)

    @traced_stream("chat")
    @show_keywords(ChatOptions)
    def chat_stream(
        self, endpoint: str, messages: Sequence[MessageLike], **params: Unpack[ChatOptions]
    ) -> ChatStream:
        """Stream a chat answer sentence by sentence. Not awaited:

        ```python
        async with client.chat_stream("mpt30b", messages) as stream:
            async for chunk in stream:
                print(chunk.result, end="")
        print(stream.text, stream.usage)
        ```

        Inputs are checked now, as in `chat()`. The request is sent when the `async with`
        is entered (or the first chunk is awaited) and retried until its first chunk has
        arrived, never after. The read timeout is the longest silence allowed between two
        chunks. Leaving the block, `break` or cancellation closes the connection at once.
        """
        call = self._prepare_chat("chat_stream", endpoint, messages, params, True)
        return ChatStream(partial(self._open_stream, call), self._sender.max_response_bytes)

    @traced_stream("text_completion")
    @show_keywords(CompletionOptions)
    def complete_stream(
        self, endpoint: str, prompt: str, **params: Unpack[CompletionOptions]
    ) -> CompletionStream:
        """Stream a completion sentence by sentence; used like `chat_stream()`."""
        call = self._prepare_completion("complete_stream", endpoint, prompt, params, True)
        return CompletionStream(partial(self._open_stream, call), self._sender.max_response_bytes)

    @traced("embeddings")
    @show_keywords(EmbedOptions)
    async def embed(
        self, endpoint: str, texts: Sequence[str], **params: Unpack[EmbedOptions]
    ) -> EmbeddingResponse:
        """The embedding vectors of `texts` (a non-empty list of non-blank strings), in order.

        More texts than `texts_per_request` (default: 16, and 1 for `tao_8k`) go out as
        several requests, concurrently within the client's limits, merged back in input
        order with their usage summed; the first failure fails the call. `user_id`,
        `extra_*`, `timeout` and `max_retries` are as for `chat()`; `request_id` too, with
        `-0`, `-1`, ... after it when the texts take several requests.
        """
        per_request, user_id, extras = split_embed_params("embed", endpoint, params)
        checked = check_texts(texts)
        template = self._template("embeddings", endpoint, extras)

        async def send(part: list[str], number: int | None) -> EmbeddingResponse:
            body: dict[str, Any] = {"input": part}
            if user_id is not None:
                body["user_id"] = user_id
            # one request id per request: the caller's, numbered when the texts take several
            mine = extras.request_id
            request_id = f"{mine}-{number}" if mine and number is not None else None
            answer = await self._sender.send(template.call(body, extras, request_id))
            return decode_embeddings(
                answer.data, len(part), request_id=answer.request_id, ratelimit=answer.ratelimit
            )

        width = self._capacity or DEFAULT_MAX_CONNECTIONS
        return await embed_in_parts(checked, per_request, send, width)

    async def _open_stream(
        self,
        call: PreparedCall,
        first_chunk: Callable[[Reply, str | None], Awaitable[tuple[ChunkReader[C], C | None]]],
    ) -> tuple[ChunkReader[C], C | None]:
        answer = await self._sender.send(call, prime=first_chunk)
        reader, first = answer.data
        reader.on_close = self._sender.release  # an open stream holds its place in flight
        reader.on_abort = self._sender.close_later
        if answer.charge is not None:
            reader.on_end = partial(self._settle_stream, answer.charge)
        return reader, first

    async def _settle_stream(self, charge: TokenCharge, usage: Usage | None, ended: bool) -> None:
        """A stream's tokens: its last usage once it ended; closed early, the last usage it
        carried (partial, the service counts what it generated), else the estimate."""
        assert self._sender.budget is not None
        # no usage at all (a stream whose last chunk carried none): keep the estimate, as
        # a non-stream answer without usage does; settling at 0 would overspend the budget
        used = usage.total_tokens if usage is not None else None
        await self._sender.budget.settle(
            charge, used if used is not None and (ended or used > 0) else charge.tokens
        )

    async def _fetch_token(self) -> AccessToken:
        assert isinstance(self._credentials, OAuthCredentials)
        return await fetch_token(
            self._sender, self._base_url, self._credentials, self._retry, self._timeout, self._clock
        )


def _decode_answer(answer: Answer, cls: type[R]) -> R:
    return decode(
        answer.data,
        cls,
        request_id=answer.request_id,
        ratelimit=answer.ratelimit,
    )
