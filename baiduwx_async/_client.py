"""
`AsyncClient`: the public calls. Each checks its inputs, prepares the request once
(`PreparedCall`) and hands it to the `Sender`, which sends, reads and retries it; this
module decodes what comes back.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Literal, TypeVar

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
    parse_token_response,
    token_url,
)
from ._batch import BatchMethods
from ._errors import ValidationError
from ._limits import AdaptiveRateLimiter, RateLimiter
from ._models import (
    DEFAULT_MAX_INPUT_CHARS,
    ChatChunk,
    ChatParams,
    ChatResponse,
    CompletionChunk,
    CompletionParams,
    CompletionResponse,
    MessageLike,
    check_endpoint,
    check_messages,
    check_positive_int,
    check_prompt,
    decode,
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
from ._tokens import AccessToken, TokenManager, TokenStore
from ._transport import HttpxTransport, Reply, Transport, make_transport

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "AsyncClient"]

logger = logging.getLogger("baiduwx_async")

DEFAULT_BASE_URL = "https://aip.baidubce.com"
#: Generation is slow: a long answer may take minutes before its first byte (the
#: official SDK allows 300 s). Connecting should not.
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
DEFAULT_MAX_CONNECTIONS = 100

TimeoutLike = float | httpx.Timeout | None
R = TypeVar("R", ChatResponse, CompletionResponse)
C = TypeVar("C", ChatChunk, CompletionChunk)


def _as_timeout(value: float | httpx.Timeout, field: str = "timeout") -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValidationError(field, "must be a positive number of seconds or httpx.Timeout", value)
    return httpx.Timeout(float(value), connect=min(float(value), DEFAULT_TIMEOUT.connect or 10.0))


class AsyncClient(BatchMethods):
    """A client for Wenxin Workshop model serving; use it as `async with AsyncClient(...)`.

    Keywords:
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
    ) -> None:
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
        if self._base_url.scheme == "http" and not _is_loopback(self._base_url.host):
            logger.warning(
                "base_url %s is plain http: access tokens and answers cross the network "
                "unencrypted; use https",
                self._base_url,
            )
        self._timeout = _as_timeout(timeout)
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
            limiter=rate_limiter or AdaptiveRateLimiter(qps=qps, rpm=rpm),
            max_in_flight=max_concurrency,
            max_response_bytes=check_positive_int(max_response_bytes, "max_response_bytes"),
            clock=clock,
        )
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

    async def chat(
        self,
        endpoint: str,
        messages: Sequence[MessageLike],
        *,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        penalty_score: float | None = None,
        stop: Sequence[str] | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: TimeoutLike = None,
        max_retries: int | None = None,
        request_id: str | None = None,
    ) -> ChatResponse:
        """Send a conversation to a chat endpoint and return the model's answer.

        `messages` alternate user/assistant turns, starting and ending with a user turn
        (an odd count), each a `Message` or a `{"role", "content"}` mapping with non-blank
        content, at most 4800 characters in all. Parameters left `None` keep the server's
        defaults: `temperature` in (0, 1], `top_p` in [0, 1], `penalty_score` in [1, 2],
        `top_k` >= 1, `stop` up to 4 strings of up to 20 characters, `metadata` up to 16
        string pairs. A broken rule raises `ValidationError` before anything is sent.
        `timeout` and `max_retries` override the client's for this call; `request_id` is
        sent as `Request_id` (one is generated otherwise).
        """
        params = ChatParams(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            penalty_score=penalty_score,
            stop=stop,
            user_id=user_id,
            metadata=metadata,
        )
        call = self._prepare(
            "chat",
            endpoint,
            self._chat_body(messages, params, False),
            timeout,
            max_retries,
            request_id,
        )
        return _decode_answer(await self._sender.send(call), ChatResponse)

    async def complete(
        self,
        endpoint: str,
        prompt: str,
        *,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        penalty_score: float | None = None,
        stop: Sequence[str] | None = None,
        user_id: str | None = None,
        timeout: TimeoutLike = None,
        max_retries: int | None = None,
        request_id: str | None = None,
    ) -> CompletionResponse:
        """Send a prompt to a completions endpoint and return the generated text.

        `prompt` is a non-blank string; the other parameters follow the rules of `chat()`.
        """
        params = CompletionParams(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            penalty_score=penalty_score,
            stop=stop,
            user_id=user_id,
        )
        call = self._prepare(
            "completions",
            endpoint,
            _completion_body(prompt, params, False),
            timeout,
            max_retries,
            request_id,
        )
        return _decode_answer(await self._sender.send(call), CompletionResponse)

    def chat_stream(
        self,
        endpoint: str,
        messages: Sequence[MessageLike],
        *,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        penalty_score: float | None = None,
        stop: Sequence[str] | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: TimeoutLike = None,
        max_retries: int | None = None,
        request_id: str | None = None,
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
        params = ChatParams(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            penalty_score=penalty_score,
            stop=stop,
            user_id=user_id,
            metadata=metadata,
        )
        call = self._prepare(
            "chat",
            endpoint,
            self._chat_body(messages, params, True),
            timeout,
            max_retries,
            request_id,
        )
        return ChatStream(partial(self._open_stream, call), self._sender.max_response_bytes)

    def complete_stream(
        self,
        endpoint: str,
        prompt: str,
        *,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        penalty_score: float | None = None,
        stop: Sequence[str] | None = None,
        user_id: str | None = None,
        timeout: TimeoutLike = None,
        max_retries: int | None = None,
        request_id: str | None = None,
    ) -> CompletionStream:
        """Stream a completion sentence by sentence; used like `chat_stream()`."""
        params = CompletionParams(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            penalty_score=penalty_score,
            stop=stop,
            user_id=user_id,
        )
        call = self._prepare(
            "completions",
            endpoint,
            _completion_body(prompt, params, True),
            timeout,
            max_retries,
            request_id,
        )
        return CompletionStream(partial(self._open_stream, call), self._sender.max_response_bytes)

    def _chat_body(
        self, messages: Sequence[MessageLike], params: ChatParams, stream: bool
    ) -> dict[str, Any]:
        return {
            "messages": check_messages(messages, max_chars=self._max_input_chars),
            **params.body_fields(),
            "stream": stream,
        }

    def _prepare(
        self,
        kind: protocol.Kind,
        endpoint: str,
        body: dict[str, Any],
        timeout: TimeoutLike,
        max_retries: int | None,
        request_id: str | None,
    ) -> PreparedCall:
        """Everything about a model call that does not change between attempts."""
        url = self._model_url(kind, endpoint)
        policy = self._retry
        if max_retries is not None:
            policy = attrs.evolve(policy, max_retries=max_retries)
        return PreparedCall(
            auth=self._auth,
            url=url,
            content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
            headers={
                "Content-Type": "application/json",
                protocol.REQUEST_ID_HEADER: request_id or protocol.new_request_id(),
            },
            timeout=self._timeout if timeout is None else _as_timeout(timeout),
            policy=policy,
        )

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
        reader, first = (await self._sender.send(call, prime=first_chunk)).data
        reader.on_close = self._sender.release  # an open stream holds its place in flight
        return reader, first

    async def _fetch_token(self) -> AccessToken:
        assert isinstance(self._credentials, OAuthCredentials)
        call = PreparedCall(
            url=token_url(self._base_url, self._credentials),
            content=b"",
            headers={},
            policy=self._retry,
            timeout=self._timeout,
        )
        answer = await self._sender.send(call)
        return parse_token_response(answer.status_code, answer.body, now=self._clock())


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")  # RFC 6761: loopback


def _completion_body(prompt: str, params: CompletionParams, stream: bool) -> dict[str, Any]:
    return {"prompt": check_prompt(prompt), **params.body_fields(), "stream": stream}


def _decode_answer(answer: Answer, cls: type[R]) -> R:
    return decode(
        answer.data,
        cls,
        request_id=answer.request_id,
        ratelimit=answer.ratelimit,
    )
