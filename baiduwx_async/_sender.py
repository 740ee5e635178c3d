"""
The retry loop: one prepared call, sent until it succeeds, its error is final, or its
retries are spent. With `_streaming`, the only code of the core that awaits the network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import attrs
import httpx

from . import _protocol as protocol
from ._auth import RequestAuth
from ._errors import (
    TOKEN_REFRESH_CODES,
    APIError,
    AuthenticationError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    TransportError,
    ValidationError,
    WenxinError,
)
from ._limits import RateLimiter
from ._models import RateLimitInfo
from ._retry import RetryPolicy, note_attempt

__all__ = ["Answer", "PreparedCall", "Sender", "install_log_redaction"]

logger = logging.getLogger("baiduwx_async")

P = TypeVar("P")

#: Largest non-stream answer (and stream line) accepted; real answers are a few KiB.
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024


@attrs.frozen
class PreparedCall:
    """Everything about a call that stays the same from one attempt to the next."""

    url: httpx.URL
    content: bytes
    headers: dict[str, str]
    policy: RetryPolicy
    auth: RequestAuth | None = None
    extensions: dict[str, Any] = attrs.field(factory=dict)

    async def build(self) -> tuple[httpx.Request, str | None]:
        """A fresh request for one attempt, authorized (signed, token added) just now."""
        url, token = (self.url, None) if self.auth is None else await self.auth.url_for(self.url)
        request = httpx.Request(
            "POST", url, content=self.content, headers=self.headers, extensions=self.extensions
        )
        if self.auth is not None:
            self.auth.authorize(request)
        return request, token


@attrs.frozen
class Answer:
    """A successful answer: the response, its decoded JSON (or, for a stream, what `prime`
    read of it), its headers as a plain dict (lower-case names; read once, since
    `httpx.Headers` lookups are slow) and the request id the server echoed or we sent."""

    response: httpx.Response
    data: Any
    headers: dict[str, str]
    request_id: str | None
    ratelimit: RateLimitInfo
    body: bytes


class Sender:
    """Sends prepared calls over one `httpx.AsyncClient`, under one rate limiter and one
    cap on requests in flight (a stream holds its place until it is closed)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        asyncio_only: bool = False,
        limiter: RateLimiter | None = None,
        max_in_flight: int | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.max_response_bytes = max_response_bytes
        # With our own client, prepared requests go straight to its transport: httpx's
        # client layer (URL and header merging, cookies, auth and redirect flows, event
        # hooks) costs more CPU than the transport and does nothing for us.
        self._transport = transport
        self._asyncio_only = asyncio_only
        self.limiter = limiter
        self._slots = anyio.Semaphore(max_in_flight) if max_in_flight else None
        self._clock = clock

    async def send(
        self,
        call: PreparedCall,
        *,
        prime: Callable[[httpx.Response], Awaitable[P]] | None = None,
    ) -> Answer:
        """Send `call` until it succeeds.

        A 110/111 answer replays the call once with a new token, outside the retry budget.
        With `prime` the call is a stream: an event-stream answer is left open and `prime`
        reads its start (the first chunk) inside this loop, so a stream that breaks before
        then is retried too; what `prime` returns takes the place of the JSON, and the
        caller must `release()` the stream's place when it closes.
        """
        if self._asyncio_only:
            _require_asyncio()
        policy = call.policy
        retries = 0
        replayed = False
        while True:
            request, token = await call.build()
            if call.auth is not None:  # a model call; the token fetch it may cause is not one
                note_attempt()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s %s attempt %d", request.method, protocol.redact(request.url), retries + 1
                )
            if self.limiter is not None and call.auth is not None:
                await self.limiter.acquire()
            if self._slots is not None:
                await self._slots.acquire()
            keep_slot = False
            error: WenxinError
            try:
                if self._transport is not None:
                    response = await self._transport.handle_async_request(request)
                    response.request = request
                else:
                    response = await self.http.send(request, stream=True)
                headers = dict(response.headers.items())
                request_id = headers.get(protocol.RESPONSE_ID_HEADER) or call.headers.get(
                    protocol.REQUEST_ID_HEADER
                )
                if prime is not None and _is_event_stream(response.status_code, headers):
                    try:
                        ratelimit = await self._feedback(None, headers)
                        primed = await prime(response)
                    except BaseException:
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
                        raise
                    keep_slot = True  # until the stream closes
                    return Answer(response, primed, headers, request_id, ratelimit, b"")
                try:
                    body = await _read_body(response, self.max_response_bytes)
                finally:
                    await response.aclose()
            except httpx.TimeoutException as exc:
                error = RequestTimeoutError(f"{_route(request)} timed out: {exc!r}")
            except httpx.TransportError as exc:
                error = TransportError(f"{_route(request)} failed: {protocol.redact(repr(exc))}")
            except (APIError, TransportError, ProtocolError) as exc:  # from `prime`, `_read_body`
                error = exc
            else:
                found, data = protocol.error_in_answer(
                    response.status_code,
                    response.reason_phrase,
                    headers,
                    body,
                    request_id=request_id,
                    now=self._clock(),
                    expect_json=prime is None,
                )
                ratelimit = await self._feedback(found, headers)
                if found is None:
                    return Answer(response, data, headers, request_id, ratelimit, body)
                error = found
            finally:
                if not keep_slot:
                    self.release()
            if (
                call.auth is not None
                and isinstance(error, APIError)
                and error.code in TOKEN_REFRESH_CODES
                and not replayed
                and await call.auth.recover(error, token)
            ):
                replayed = True
                logger.debug("access token rejected (%s); replaying with a new one", error.code)
                continue
            if not policy.allows(error, retries):
                if isinstance(error, AuthenticationError) and error.hint is None:
                    error.hint = call.auth.hint() if call.auth is not None else None
                raise error
            delay = policy.wait(retries, getattr(error, "retry_after", None))
            logger.debug("retrying in %.2f s after %s", delay, type(error).__name__)
            await anyio.sleep(delay)
            retries += 1

    def release(self) -> None:
        """Give back the place in flight a request (or an open stream) held."""
        if self._slots is not None:
            self._slots.release()

    async def _feedback(self, error: WenxinError | None, headers: dict[str, str]) -> RateLimitInfo:
        """Tell the limiter how the answer went; returns the answer's rate-limit headers."""
        ratelimit = RateLimitInfo.from_headers(headers)
        if self.limiter is not None:
            throttled = isinstance(error, RateLimitError) and not isinstance(
                error, QuotaExceededError
            )
            await self.limiter.feedback(throttled=throttled, ratelimit=ratelimit)
        return ratelimit


async def _read_body(response: httpx.Response, limit: int) -> bytes:
    """The whole (decoded) body, refused once it passes `limit` bytes: a broken or hostile
    server must not make us hold gigabytes, compressed or not."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProtocolError(f"answer of {declared} bytes is over the limit of {limit}")
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        size += len(part)
        if size > limit:
            raise ProtocolError(f"answer is over the limit of {limit} bytes")
        parts.append(part)
    return b"".join(parts)


def make_transport(backend: str, pool: int) -> httpx.AsyncBaseTransport:
    """The transport of a client we own: keep-alive as large as the pool, so no
    connection is closed only to be opened again under load."""
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    if backend == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits)
    if backend == "aiohttp":
        try:
            from httpx_aiohttp import AiohttpTransport
        except ImportError:
            raise ValidationError(
                "http_backend",
                "\"aiohttp\" needs the aiohttp extra: pip install 'baiduwx_async[aiohttp]'",
            ) from None
        transport: httpx.AsyncBaseTransport = AiohttpTransport(limits=limits)
        return transport
    raise ValidationError("http_backend", 'must be "httpx" or "aiohttp"', backend)


def _require_asyncio() -> None:
    if not anyio.get_cancelled_exc_class().__module__.startswith("asyncio"):
        raise RuntimeError(
            'http_backend="aiohttp" runs on asyncio only; use the default "httpx" backend '
            "under trio"
        )


def _is_event_stream(status_code: int, headers: dict[str, str]) -> bool:
    return status_code == 200 and headers.get("content-type", "").startswith("text/event-stream")


def _route(request: httpx.Request) -> str:
    return f"{request.method} {request.url.host}{request.url.path}"


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


def install_log_redaction() -> None:
    """Make the `httpx` logger, which we do not own, print `access_token=***`."""
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactTokens) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactTokens())
