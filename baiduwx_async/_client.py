"""
`AsyncClient`: the public calls. Each checks its inputs, prepares the request once
(`PreparedCall`) and hands it to the `Sender`, which sends, reads and retries it; this
module decodes what comes back.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import attrs
import httpx

from . import _protocol as protocol
from ._auth import (
    TOKEN_PATH,
    AccessTokenAuth,
    BceSigningAuth,
    Credentials,
    IAMCredentials,
    OAuthCredentials,
    RequestAuth,
    StaticToken,
    credentials_from_env,
    oauth_hint,
    parse_token_response,
    token_url,
)
from ._batch import BatchMethods
from ._batch_embed import EmbedBatchMethods
from ._calls import CallTemplate, base_url_setting, is_loopback
from ._embeddings import (
    EmbeddingResponse,
    check_texts,
    decode_embeddings,
    embed_in_parts,
    split_embed_params,
)
from ._errors import AuthenticationError, ValidationError
from ._extras import DEFAULT_TIMEOUT, Extras, as_timeout
from ._keywords import show_keywords
from ._limits import AdaptiveRateLimiter, RateLimiter, TokenRateLimiter
from ._models import (
    DEFAULT_MAX_INPUT_CHARS,
    ChatChunk,
    ChatParams,
    ChatResponse,
    CompletionChunk,
    CompletionParams,
    CompletionResponse,
    MessageLike,
    Usage,
    check_endpoint,
    check_messages,
    check_positive_int,
    check_prompt,
    decode,
)
from ._params import (
    CHAT_KEYS,
    COMPLETION_KEYS,
    ChatOptions,
    CompletionOptions,
    EmbedOptions,
    split_params,
)
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
from ._token_budget import TokenCharge, TokenEstimator, estimate_tokens
from ._tokens import AccessToken, TokenManager, TokenStore
from ._transport import HttpxTransport, Reply, Transport, make_transport

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "AsyncClient"]

logger = logging.getLogger("baiduwx_async")

DEFAULT_BASE_URL = "https://aip.baidubce.com"
DEFAULT_MAX_CONNECTIONS = 100

#: A call's `timeout=`: seconds for the whole wait (connecting capped at 10 s), an
#: `httpx.Timeout` for each limit (connect, read, write, pool), or None: the client's.
TimeoutLike = float | httpx.Timeout | None
R = TypeVar("R", ChatResponse, CompletionResponse)
C = TypeVar("C", ChatChunk, CompletionChunk)


class AsyncClient(BatchMethods, EmbedBatchMethods):
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
        if credentials is None:
            credentials = credentials_from_env()
        if not isinstance(credentials, OAuthCredentials | IAMCredentials | StaticToken):
            raise ValidationError(
                "credentials", "must be OAuthCredentials, IAMCredentials or StaticToken"
            )
        self._base_url = httpx.URL(
            str(base_url or os.environ.get("QIANFAN_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        )
        if self._base_url.scheme not in ("http", "https") or not self._base_url.host:
            raise ValidationError("base_url", "must be an absolute http(s) URL", str(base_url))
        if self._base_url.scheme == "http" and not is_loopback(self._base_url.host):
            logger.warning(
                "base_url %s is plain http: access tokens and answers cross the network "
                "unencrypted; use https",
                self._base_url,
            )
        self._timeout = as_timeout(timeout)
        self._retry = retry_policy or RetryPolicy()
        if max_retries is not None:
            self._retry = attrs.evolve(self._retry, max_retries=max_retries)
        self._max_input_chars = max_input_chars
        self._urls: dict[tuple[str, str], httpx.URL] = {}
        self._clock = clock
        if max_concurrency is not None:
            check_positive_int(max_concurrency, "max_concurrency")
        if rate_limiter is not None and (qps is not None or rpm is not None):
            raise ValidationError("rate_limiter", "give either rate_limiter or qps/rpm, not both")
        if rate_limiter is not None and tpm is not None:
            raise ValidationError("tpm", "give it to your rate_limiter (it keeps the budget)")
        limiter = rate_limiter or AdaptiveRateLimiter(qps=qps, rpm=rpm, tpm=tpm)
        # Requests are estimated only with a token budget: nothing is added to calls without.
        budget = limiter if isinstance(limiter, TokenRateLimiter) else None
        self._estimate: TokenEstimator | None = None
        if budget is not None and budget.tpm is not None:
            self._estimate = token_estimator or estimate_tokens
        elif token_estimator is not None:
            raise ValidationError("token_estimator", "needs a token budget (tpm=...)")
        transport: Transport
        # The most requests that can be on the wire at once (None: the caller's pool decides)
        self._capacity = max_concurrency
        if http_client is None:
            pool_size = max_concurrency or DEFAULT_MAX_CONNECTIONS
            self._capacity = pool_size
            transport = make_transport(http_backend, pool_size, self._timeout, verify)
        elif verify is not True:
            raise ValidationError("verify", "set it on your own http_client instead")
        elif http_backend != "httpx":
            raise ValidationError("http_backend", "cannot be chosen with your own http_client")
        else:
            transport = HttpxTransport(client=http_client)
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
        self._tokens: TokenManager | None = None
        self._auth: RequestAuth
        if isinstance(credentials, OAuthCredentials):
            self._tokens = TokenManager(
                self._fetch_token,
                key=credentials.cache_key(f"{self._base_url}{TOKEN_PATH}"),
                store=token_store,
                clock=clock,
            )
            self._auth = AccessTokenAuth(self._tokens)
        elif isinstance(credentials, IAMCredentials):
            self._auth = BceSigningAuth(credentials, clock=clock)
        else:
            self._auth = AccessTokenAuth(credentials)
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

    def _prepare_chat(
        self,
        name: str,
        endpoint: str,
        messages: Sequence[MessageLike],
        params: Mapping[str, Any],
        stream: bool,
    ) -> PreparedCall:
        fields, extras = split_params(name, params, ChatParams, CHAT_KEYS)
        body = {
            "messages": check_messages(messages, max_chars=self._max_input_chars),
            **fields,
            "stream": stream,
        }
        return self._template("chat", endpoint, extras).call(body, extras)

    def _prepare_completion(
        self, name: str, endpoint: str, prompt: str, params: Mapping[str, Any], stream: bool
    ) -> PreparedCall:
        fields, extras = split_params(name, params, CompletionParams, COMPLETION_KEYS)
        body = {"prompt": check_prompt(prompt), **fields, "stream": stream}
        return self._template("completions", endpoint, extras).call(body, extras)

    def _template(self, kind: protocol.Kind, endpoint: str, extras: Extras) -> CallTemplate:
        """What every request of a call shares: checked before the first one is sent."""
        url = self._model_url(kind, endpoint)
        if extras.query:
            url = url.copy_merge_params(extras.query)
        policy = self._retry
        if extras.max_retries is not None:
            policy = attrs.evolve(policy, max_retries=extras.max_retries)
        timeout = self._timeout if extras.timeout is None else extras.timeout
        tokens_for = None if self._estimate is None else self._tokens_for
        return CallTemplate(self._auth, url, timeout, policy, tokens_for)

    def _tokens_for(self, body: dict[str, Any]) -> int:
        """The estimated tokens of a request, refused if it could never fit the budget."""
        assert self._estimate is not None and self._sender.budget is not None
        tokens = self._estimate(body)
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValidationError("token_estimator", "must return a whole number >= 0", tokens)
        field = "messages" if "messages" in body else "prompt" if "prompt" in body else "input"
        self._sender.budget.check_tokens(tokens, field)
        return tokens

    def _model_url(self, kind: protocol.Kind, endpoint: str) -> httpx.URL:
        # Parsing a URL is the dearest step of building a request: parse each route once.
        url = self._urls.get((kind, endpoint))
        if url is None:
            if len(self._urls) >= 256:
                self._urls.clear()
            path = protocol.model_path(kind, check_endpoint(endpoint))
            url = self._urls[kind, endpoint] = httpx.URL(f"{self._base_url}{path}")
        return url

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
        call = PreparedCall(
            url=token_url(self._base_url, self._credentials),
            content=b"",
            headers={},
            policy=self._retry,
            timeout=self._timeout,
        )
        try:
            answer = await self._sender.send(call)
            return parse_token_response(answer.status_code, answer.body, now=self._clock())
        except AuthenticationError as exc:
            if exc.hint is None:
                exc.hint = oauth_hint(self._credentials)
            raise


def _decode_answer(answer: Answer, cls: type[R]) -> R:
    return decode(
        answer.data,
        cls,
        request_id=answer.request_id,
        ratelimit=answer.ratelimit,
    )
