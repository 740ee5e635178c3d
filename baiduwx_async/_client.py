"""
`AsyncClient`: builds each call from the checked inputs, sends it, reads the answer
and retries what may be retried. The only module of the core that awaits the network
(with the stream classes).
"""

from __future__ import annotations

import json
import logging
import os
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
    token_request,
)
from ._errors import (
    TOKEN_REFRESH_CODES,
    APIError,
    AuthenticationError,
    RequestTimeoutError,
    StreamError,
    TransportError,
    ValidationError,
    WenxinError,
)
from ._models import (
    DEFAULT_MAX_INPUT_CHARS,
    ChatParams,
    ChatResponse,
    CompletionParams,
    CompletionResponse,
    MessageLike,
    RateLimitInfo,
    check_endpoint,
    check_messages,
    check_prompt,
    decode,
)
from ._retry import RetryPolicy
from ._streaming import ChatStream, CompletionStream
from ._tokens import AccessToken, TokenManager, TokenStore

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "AsyncClient"]

logger = logging.getLogger("baiduwx_async")

DEFAULT_BASE_URL = "https://aip.baidubce.com"
#: Generation is slow: a long answer may take minutes before its first byte (the
#: official SDK allows 300 s). Connecting should not.
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
DEFAULT_MAX_CONNECTIONS = 100

TimeoutLike = float | httpx.Timeout | None
R = TypeVar("R", ChatResponse, CompletionResponse)
P = TypeVar("P")


def _as_timeout(value: float | httpx.Timeout, field: str = "timeout") -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValidationError(field, "must be a positive number of seconds or httpx.Timeout", value)
    return httpx.Timeout(float(value), connect=min(float(value), DEFAULT_TIMEOUT.connect or 10.0))


class _RedactTokens(logging.Filter):
    """httpx logs every request URL at INFO, and ours carry the token and keys."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, httpx.URL) or "=" in str(arg) for arg in record.args
        ):
            record.args = tuple(
                protocol.redact(arg) if isinstance(arg, httpx.URL | str) else arg
                for arg in record.args
            )
        return True


def _install_log_redaction() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactTokens) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactTokens())


class AsyncClient:
    """A client for Wenxin Workshop model serving; use it as `async with AsyncClient(...)`.

    Keywords:
        credentials: `OAuthCredentials`, `IAMCredentials` or `StaticToken`; read from the
            environment when omitted (see `credentials_from_env`).
        base_url: the service root; `QIANFAN_BASE_URL`, else `https://aip.baidubce.com`.
        timeout: seconds, or an `httpx.Timeout`; for streams the read timeout is the
            longest silence allowed between two chunks. Default 300 s, connect 10 s.
        max_retries: retries after the first attempt for retryable failures (default 3).
        retry_policy: backoff settings (`RetryPolicy`); `max_retries` overrides its budget.
        http_client: your own `httpx.AsyncClient`; it is used as is and left open.
        token_store: where access tokens are kept (default: in this client's memory);
            a `FileTokenStore` lets a token outlive the process.
        max_input_chars: the most characters all messages of a chat may hold together
            (4800, the service's limit); `None` leaves the check to the server.
    """

    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        base_url: str | httpx.URL | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        http_backend: Literal["httpx"] = "httpx",
        http_client: httpx.AsyncClient | None = None,
        token_store: TokenStore | None = None,
        max_input_chars: int | None = DEFAULT_MAX_INPUT_CHARS,
        retry_policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if credentials is None:
            credentials = credentials_from_env()
        if not isinstance(credentials, OAuthCredentials | IAMCredentials | StaticToken):
            raise ValidationError(
                "credentials", "must be OAuthCredentials, IAMCredentials or StaticToken"
            )
        if http_backend != "httpx":
            raise ValidationError("http_backend", 'must be "httpx"', http_backend)
        self._base_url = httpx.URL(
            str(base_url or os.environ.get("QIANFAN_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        )
        if self._base_url.scheme not in ("http", "https") or not self._base_url.host:
            raise ValidationError("base_url", "must be an absolute http(s) URL", str(base_url))
        self._timeout = _as_timeout(timeout)
        self._retry = retry_policy or RetryPolicy()
        if max_retries is not None:
            self._retry = attrs.evolve(self._retry, max_retries=max_retries)
        self._max_input_chars = max_input_chars
        self._clock = clock
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=self._timeout,
            limits=httpx.Limits(
                max_connections=DEFAULT_MAX_CONNECTIONS,
                max_keepalive_connections=DEFAULT_MAX_CONNECTIONS,
            ),
        )
        self._credentials = credentials
        self._tokens: TokenManager | None = None
        self._auth: RequestAuth
        if isinstance(credentials, OAuthCredentials):
            token_url = f"{self._base_url}{TOKEN_PATH}"
            self._tokens = TokenManager(
                self._fetch_token,
                key=credentials.cache_key(token_url),
                store=token_store,
                clock=clock,
            )
            self._auth = AccessTokenAuth(self._tokens)
        elif isinstance(credentials, IAMCredentials):
            self._auth = BceSigningAuth(credentials, clock=clock)
        else:
            self._auth = AccessTokenAuth(credentials)
        _install_log_redaction()

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
        """Close the connection pool, unless it belongs to a caller's `http_client`."""
        if self._owns_http:
            with anyio.CancelScope(shield=True):
                await self._http.aclose()

    @property
    def base_url(self) -> httpx.URL:
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
        response, data = await self._send(call.build, policy=call.policy)
        return _decode_answer(response, data, ChatResponse)

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
        response, data = await self._send(call.build, policy=call.policy)
        return _decode_answer(response, data, CompletionResponse)

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
        return ChatStream(partial(self._open_stream, call))

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
        return CompletionStream(partial(self._open_stream, call))

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
    ) -> _PreparedCall:
        """Everything about a model call that does not change between attempts."""
        url = httpx.URL(f"{self._base_url}{protocol.model_path(kind, check_endpoint(endpoint))}")
        policy = self._retry
        if max_retries is not None:
            policy = attrs.evolve(policy, max_retries=max_retries)
        return _PreparedCall(
            auth=self._auth,
            url=url,
            content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
            headers={
                "Content-Type": "application/json",
                protocol.REQUEST_ID_HEADER: request_id or protocol.new_request_id(),
            },
            extensions={} if timeout is None else {"timeout": _as_timeout(timeout).as_dict()},
            policy=policy,
        )

    async def _open_stream(
        self,
        call: _PreparedCall,
        first_chunk: Callable[[httpx.Response], Awaitable[P]],
    ) -> P:
        _, primed = await self._send(call.build, policy=call.policy, prime=first_chunk)
        return primed  # type: ignore[return-value]

    async def _fetch_token(self) -> AccessToken:
        assert isinstance(self._credentials, OAuthCredentials)
        credentials = self._credentials

        async def build() -> tuple[httpx.Request, str | None]:
            return token_request(self._base_url, credentials), None

        response, _ = await self._send(build, policy=self._retry)
        return parse_token_response(response.status_code, response.content, now=self._clock())

    async def _send(
        self,
        build: Callable[[], Awaitable[tuple[httpx.Request, str | None]]],
        *,
        policy: RetryPolicy,
        prime: Callable[[httpx.Response], Awaitable[P]] | None = None,
    ) -> tuple[httpx.Response, object]:
        """Send until an attempt succeeds, the error is final, or the retries are spent.

        A 110/111 answer replays the call once with a new token, outside the retry budget.
        Returns the response and its decoded JSON. With `prime` the call is a stream: an
        event-stream answer is left open and `prime` reads its start (the first chunk)
        inside this loop, so a stream that breaks before then is retried too; what
        `prime` returns takes the place of the JSON.
        """
        stream = prime is not None
        retries = 0
        replayed = False
        while True:
            request, token = await build()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s %s attempt %d", request.method, protocol.redact(request.url), retries + 1
                )
            error: WenxinError
            try:
                response = await self._http.send(request, stream=True)
                if prime is not None and _is_event_stream(response):
                    try:
                        return response, await prime(response)
                    except BaseException:
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
                        raise
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            except httpx.TimeoutException as exc:
                error = RequestTimeoutError(
                    f"{request.method} {_route(request)} timed out: {exc!r}"
                )
            except httpx.TransportError as exc:
                error = TransportError(
                    f"{request.method} {_route(request)} failed: {protocol.redact(repr(exc))}"
                )
            except (APIError, TransportError, StreamError) as exc:  # from `prime`
                error = exc
            else:
                found, data = protocol.error_in_answer(
                    response.status_code,
                    response.reason_phrase,
                    response.headers,
                    response.content,
                    request_id=response.headers.get(protocol.RESPONSE_ID_HEADER)
                    or request.headers.get(protocol.REQUEST_ID_HEADER),
                    now=self._clock(),
                    expect_json=not stream,
                )
                if found is None:
                    return response, data
                error = found
            if (
                isinstance(error, APIError)
                and error.code in TOKEN_REFRESH_CODES
                and not replayed
                and await self._auth.recover(error, token)
            ):
                replayed = True
                logger.debug("access token rejected (%s); replaying with a new one", error.code)
                continue
            if not policy.allows(error, retries):
                if isinstance(error, AuthenticationError) and error.hint is None:
                    error.hint = self._auth.hint()
                raise error
            delay = policy.wait(retries, getattr(error, "retry_after", None))
            logger.debug("retrying in %.2f s after %s", delay, type(error).__name__)
            await anyio.sleep(delay)
            retries += 1


@attrs.frozen
class _PreparedCall:
    auth: RequestAuth
    url: httpx.URL
    content: bytes
    headers: dict[str, str]
    extensions: dict[str, Any]
    policy: RetryPolicy

    async def build(self) -> tuple[httpx.Request, str | None]:
        """A fresh request for one attempt, authorized for now."""
        request = httpx.Request(
            "POST",
            self.url,
            content=self.content,
            headers=self.headers,
            extensions=self.extensions,
        )
        return request, await self.auth.authorize(request)


def _completion_body(prompt: str, params: CompletionParams, stream: bool) -> dict[str, Any]:
    return {"prompt": check_prompt(prompt), **params.body_fields(), "stream": stream}


def _decode_answer(response: httpx.Response, data: object, cls: type[R]) -> R:
    return decode(
        data,
        cls,
        request_id=response.headers.get(protocol.RESPONSE_ID_HEADER)
        or response.request.headers.get(protocol.REQUEST_ID_HEADER),
        ratelimit=RateLimitInfo.from_headers(response.headers),
    )


def _is_event_stream(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.headers.get("content-type", "").startswith(
        "text/event-stream"
    )


def _route(request: httpx.Request) -> str:
    return f"{request.url.host}{request.url.path}"
