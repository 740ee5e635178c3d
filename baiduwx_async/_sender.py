"""
The retry loop: one prepared call, sent until it succeeds, its error is final, or its
retries are spent. With `_streaming`, the only code of the core that awaits the network,
through a `_transport.Transport` (httpx or aiohttp).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
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
    WenxinError,
)
from ._limits import RateLimiter, TokenRateLimiter
from ._models import RateLimitInfo
from ._retry import RetryPolicy, note_attempt
from ._token_budget import TokenCharge
from ._transport import OutgoingRequest, Reply, Transport, location, origin

__all__ = ["Answer", "PreparedCall", "Sender", "install_log_redaction"]

logger = logging.getLogger("baiduwx_async")

TPM_LIMIT_CODE = 336502  #: the service's "tokens per minute exceeded"

P = TypeVar("P")

#: Largest non-stream answer (and stream line) accepted; real answers are a few KiB.
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class PreparedCall:
    """Everything about a call that stays the same from one attempt to the next."""

    # Plain slotted classes here and below: one of each is made per call.
    __slots__ = ("auth", "content", "headers", "policy", "timeout", "tokens", "url")

    def __init__(
        self,
        *,
        url: httpx.URL,
        content: bytes,
        headers: dict[str, str],
        policy: RetryPolicy,
        timeout: httpx.Timeout,
        auth: RequestAuth | None = None,
        tokens: int | None = None,
    ) -> None:
        self.url = url
        self.tokens = tokens  # estimated tokens, charged to the token budget (None: none)
        self.content = content
        self.headers = headers
        self.policy = policy
        self.timeout = timeout
        self.auth = auth

    async def build(self) -> tuple[OutgoingRequest, str | None]:
        """A fresh request for one attempt, authorized (signed, token added) just now."""
        if self.auth is None:
            return OutgoingRequest("POST", self.url, self.headers, self.content, self.timeout), None
        url, token = await self.auth.url_for(self.url)
        headers = self.auth.authorize("POST", url, self.headers)
        return OutgoingRequest("POST", url, headers, self.content, self.timeout), token


class Answer:
    """A successful answer: its status, its decoded JSON (or, for a stream, what `prime`
    read of it), its headers (lower-case names), the request id the server echoed or we
    sent, its rate-limit headers and its body (empty for a stream)."""

    __slots__ = ("body", "charge", "data", "headers", "ratelimit", "request_id", "status_code")

    def __init__(
        self,
        status_code: int,
        data: Any,
        headers: dict[str, str],
        request_id: str | None,
        ratelimit: RateLimitInfo,
        body: bytes,
    ) -> None:
        self.status_code = status_code
        self.data = data
        self.headers = headers
        self.request_id = request_id
        self.ratelimit = ratelimit
        self.body = body
        self.charge: TokenCharge | None = None  # a stream's token charge, settled at its end


class Sender:
    """Sends prepared calls over one transport, under one rate limiter and one cap on
    requests in flight (a stream holds its place until it is closed)."""

    def __init__(
        self,
        transport: Transport,
        *,
        limiter: RateLimiter | None = None,
        max_in_flight: int | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.time,
        base_url_setting: str = "base_url= or QIANFAN_BASE_URL",
    ) -> None:
        self.transport = transport
        #: Where the client's address came from, for the hint of a connection failure.
        self.base_url_setting = base_url_setting
        self.closed = False
        self.max_response_bytes = max_response_bytes
        self.limiter = limiter
        #: the limiter again when it has a token budget (calls then carry `tokens`)
        self.budget: TokenRateLimiter | None = None
        self._slots = anyio.Semaphore(max_in_flight) if max_in_flight else None
        self._clock = clock
        self._to_close: list[Callable[[], Awaitable[None]]] = []
        #: Told of each retry (attempt, error, wait) by telemetry; None when it is off.
        self.on_retry: Callable[[int, BaseException, float], None] | None = None

    async def send(
        self,
        call: PreparedCall,
        *,
        prime: Callable[[Reply, str | None], Awaitable[P]] | None = None,
    ) -> Answer:
        """Send `call` until it succeeds.

        A 110/111 answer replays the call once with a new token, outside the retry budget.
        With `prime` the call is a stream: an event-stream answer is left open and `prime`
        reads its start (the first chunk) inside this loop, so a stream that breaks before
        then is retried too; what `prime` returns takes the place of the JSON, and the
        caller must `release()` the stream's place when it closes.
        """
        if self.closed:
            raise RuntimeError("this client is closed; make a new AsyncClient")
        if self._to_close:
            await self._close_dropped()
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
            charge = None
            if call.tokens is not None and self.budget is not None:
                charge = await self.budget.acquire_tokens(call.tokens)
            elif self.limiter is not None and call.auth is not None:
                await self.limiter.acquire()
            if self._slots is not None:
                try:
                    self._slots.acquire_nowait()  # a free place: no checkpoint, no loop trip
                except anyio.WouldBlock:
                    await self._slots.acquire()
            keep_slot = False
            error: WenxinError
            try:
                reply = await self.transport.send(request)
                headers = reply.headers
                request_id = headers.get(protocol.RESPONSE_ID_HEADER) or call.headers.get(
                    protocol.REQUEST_ID_HEADER
                )
                if prime is not None and _is_event_stream(reply.status_code, headers):
                    try:
                        ratelimit = await self._feedback(None, headers)
                        primed = await prime(reply, request_id)
                    except BaseException:
                        with anyio.CancelScope(shield=True):
                            await reply.aclose()
                        raise
                    keep_slot = True  # until the stream closes
                    answer = Answer(reply.status_code, primed, headers, request_id, ratelimit, b"")
                    answer.charge = charge
                    return answer
                body = await reply.read(self.max_response_bytes)
            except (APIError, TransportError, ProtocolError) as exc:  # also from `prime`
                error = exc
            else:
                found, data = protocol.error_in_answer(
                    reply.status_code,
                    reply.reason_phrase,
                    headers,
                    body,
                    request_id=request_id,
                    now=self._clock(),
                    expect_json=prime is None,
                )
                ratelimit = await self._feedback(found, headers)
                if found is None:
                    if charge is not None:
                        await self.settle(charge, data)
                    return Answer(reply.status_code, data, headers, request_id, ratelimit, body)
                error = found
            finally:
                if not keep_slot:
                    self.release()
            if charge is not None:  # refused or failed: the service counts nothing
                assert self.budget is not None
                throttled = isinstance(error, APIError) and error.code == TPM_LIMIT_CODE
                await self.budget.settle(charge, 0, throttled=throttled)
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
                elif isinstance(error, TransportError):
                    self._explain(error, request, retries + 1 + replayed)
                raise error
            delay = policy.wait(retries, getattr(error, "retry_after", None))
            logger.debug("retrying in %.2f s after %s", delay, type(error).__name__)
            if self.on_retry is not None:
                self.on_retry(retries + 1, error, delay)
            await anyio.sleep(delay)
            retries += 1

    async def settle(self, charge: TokenCharge, data: Any) -> None:
        """Settle a token charge by the `usage` of an answer (kept as charged without one)."""
        assert self.budget is not None
        usage = data.get("usage") if isinstance(data, dict) else None
        used = usage.get("total_tokens") if isinstance(usage, dict) else None
        if isinstance(used, int) and not isinstance(used, bool) and used >= 0:
            await self.budget.settle(charge, used)
        else:
            await self.budget.settle(charge, charge.tokens)

    def _explain(self, error: TransportError, request: OutgoingRequest, attempts: int) -> None:
        """Complete a connection failure's message: where, how many tries, what to change."""
        error.url = error.url or location(request.url)
        error.attempts = attempts
        if not isinstance(error, RequestTimeoutError):
            if error.hint is None:
                error.hint = (
                    f"is the service at {origin(request.url)} up and reachable? The address "
                    f"comes from {self.base_url_setting}"
                )
            return
        # Every timeout of a transport carries the value of its limit (`seconds`).
        limit = error.limit
        seconds = f"{error.seconds:g} s" if error.seconds is not None else "the time allowed"
        error.hint = _TIMEOUT_HINTS.get(limit, _TIMEOUT_HINTS[None]).format(
            seconds=seconds, origin=origin(request.url), setting=self.base_url_setting
        )

    def release(self) -> None:
        """Give back the place in flight a request (or an open stream) held."""
        if self._slots is not None:
            self._slots.release()

    def close_later(self, close: Callable[[], Awaitable[None]]) -> None:
        """A stream whose loop was left cut its connection without awaiting (nothing may
        await there): the next request closes its response, which frees its places."""
        self._to_close.append(close)

    async def _close_dropped(self) -> None:
        closes, self._to_close = self._to_close, []
        with anyio.CancelScope(shield=True):
            for close in closes:
                await close()

    async def _feedback(self, error: WenxinError | None, headers: dict[str, str]) -> RateLimitInfo:
        """Tell the limiter how the answer went; returns the answer's rate-limit headers."""
        ratelimit = RateLimitInfo.from_headers(headers)
        if self.limiter is not None:
            throttled = isinstance(error, RateLimitError) and not isinstance(
                error, QuotaExceededError
            )
            await self.limiter.feedback(throttled=throttled, ratelimit=ratelimit)
        return ratelimit


_TIMEOUT_HINTS = {
    "connect": "no connection to {origin} within {seconds}: check the address "
    "({setting}) and the network, or allow more with "
    "timeout=httpx.Timeout(..., connect=SECONDS)",
    "read": "the server sent nothing for {seconds}: allow more with timeout=SECONDS "
    "(or httpx.Timeout(..., read=SECONDS)); for a stream this is the longest silence "
    "allowed between two chunks",
    "write": "sending the request took over {seconds}: allow more with "
    "timeout=httpx.Timeout(..., write=SECONDS)",
    "pool": "every connection stayed busy for {seconds}: allow a longer wait with "
    "timeout=httpx.Timeout(..., pool=SECONDS), or a larger pool with max_concurrency=",
    None: "allow more time with timeout=SECONDS (or an httpx.Timeout)",
}


def _is_event_stream(status_code: int, headers: dict[str, str]) -> bool:
    return status_code == 200 and headers.get("content-type", "").startswith("text/event-stream")


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
