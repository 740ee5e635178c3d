"""
The HTTP layer under the sender: send one request, get a `Reply` whose body is read next.

Two implementations share the `Transport` protocol: `HttpxTransport` (the default: any
anyio backend, mockable with respx, or the caller's own `httpx.AsyncClient`) and
`AiohttpTransport` in `_aiohttp` (asyncio only, and no httpx objects on the way: the fast
path for large batches). Either library's failures leave a transport as our
`TransportError` or `RequestTimeoutError`, so the sender and the streams never need to
know which one runs.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Protocol

import httpx

from ._errors import (
    ProtocolError,
    RequestTimeoutError,
    TimeoutLimit,
    TransportError,
)
from ._protocol import redact

__all__ = [
    "HttpxTransport",
    "OutgoingRequest",
    "Reply",
    "Transport",
]


#: Most connections in one httpx pool (see `HttpxTransport`).
SHARD_SIZE = 8


class OutgoingRequest:
    """One attempt of a call, authorized and ready to go on the wire."""

    # A plain slotted class: one is built per attempt, on the hottest path there is.
    __slots__ = ("content", "headers", "method", "timeout", "url")

    def __init__(
        self,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        content: bytes,
        timeout: httpx.Timeout,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.content = content
        self.timeout = timeout

    @property
    def route(self) -> str:
        """Method and `location`, for error messages."""
        return f"{self.method} {location(self.url)}"


class Reply(Protocol):
    """An answer whose status and headers have arrived and whose body has not been read."""

    @property
    def status_code(self) -> int: ...

    @property
    def reason_phrase(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]:
        """Every header, names in lower case (read once: library header maps are slow)."""
        ...

    @property
    def is_closed(self) -> bool: ...

    async def read(self, limit: int) -> bytes:
        """The whole decoded body, then close. `ProtocolError` past `limit` bytes: a broken
        or hostile server must not make us hold gigabytes, compressed or not."""
        ...

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The decoded body piece by piece, as it arrives (for streams)."""
        ...

    async def aclose(self) -> None:
        """Give the connection back, or close it if the body was not read to its end."""
        ...

    def abort(self) -> None:
        """Cut the connection now, without awaiting: the server sees it closed at once.
        `aclose()` must still follow; it frees what is left."""
        ...


class Transport(Protocol):
    """Sends requests over a connection pool it owns (or borrows)."""

    async def send(self, request: OutgoingRequest) -> Reply:
        """Send `request`; the reply's body is left to read. Raises `TransportError`."""
        ...

    async def aclose(self) -> None:
        """Close the pool (unless it is borrowed)."""
        ...


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: httpx.URL) -> str:
    """`scheme://host:port`, the port shown even when it is the scheme's default."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    return f"{url.scheme}://{host}:{port}" if port else f"{url.scheme}://{host}"


def location(url: httpx.URL) -> str:
    """`origin` and path: where a request went, for messages (never the query: it holds
    the access token or the OAuth keys)."""
    return f"{origin(url)}{url.path}"


def timed_out(
    request: OutgoingRequest, limit: TimeoutLimit | None, exc: BaseException
) -> RequestTimeoutError:
    """The error for a request that hit one of its timeouts (`limit`, when known)."""
    seconds = getattr(request.timeout, limit) if limit is not None else None
    expired = f"the {limit} timeout" if limit is not None else "a timeout"
    if seconds is not None:
        expired += f" ({seconds:g} s)"
    return RequestTimeoutError(
        f"{request.route} timed out: {expired} expired ({type(exc).__name__})",
        limit=limit,
        seconds=seconds,
        url=location(request.url),
    )


def connection_failed(request: OutgoingRequest, exc: BaseException) -> TransportError:
    # Libraries may quote the URL in their messages, and ours carries the token
    return TransportError(f"{request.route} failed: {redact(repr(exc))}", url=location(request.url))


# HTTP allows no control character in a header but the tab (in values). h11 (under httpx)
# and aiohttp before 3.14 refuse CR, LF and NUL only, and write the others to the wire.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def has_control_character(headers: Mapping[str, str]) -> bool:
    """Whether a header name or value holds a character HTTP does not allow there."""
    search = _CONTROL_CHARACTER.search  # over joined strings: one scan each, not one a header
    return search("".join(headers)) is not None or search("".join(headers.values())) is not None


def refused_locally(request: OutgoingRequest, exc: BaseException) -> TransportError:
    """The request cannot be sent (a header that HTTP does not allow, or that the HTTP
    library cannot encode): the same request would be refused again, so it is not retried.
    The library's own message is left out, as it quotes the offending header, which may
    hold a secret."""
    error = TransportError(
        f"{request.route} was not sent: a header name or value cannot be sent "
        f"({type(exc).__name__})",
        url=location(request.url),
        hint="check the names and values of extra_headers and request_id",
    )
    error.retryable = False
    return error


def check_declared_length(headers: Mapping[str, str], limit: int) -> None:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProtocolError(f"answer of {declared} bytes is over the limit of {limit}")


async def join_within(parts: AsyncIterator[bytes], limit: int) -> bytes:
    """The pieces of a body joined, refused as soon as they pass `limit` bytes."""
    joined: list[bytes] = []
    size = 0
    async for part in parts:
        size += len(part)
        if size > limit:
            raise ProtocolError(f"answer is over the limit of {limit} bytes")
        joined.append(part)
    return b"".join(joined)


def read_failed(exc: BaseException, request: OutgoingRequest, *, timeout: bool) -> TransportError:
    """The error for a body that stopped coming: silence past the read timeout, or a break."""
    if timeout:
        seconds = request.timeout.read
        within = f"the read timeout ({seconds:g} s)" if seconds is not None else "the read timeout"
        return RequestTimeoutError(
            f"{request.route}: no data within {within} ({type(exc).__name__})",
            limit="read",
            seconds=seconds,
            url=location(request.url),
            hint="allow a longer silence with timeout=SECONDS (or httpx.Timeout(..., "
            "read=SECONDS)); in a stream it is the longest wait between two chunks",
        )
    return TransportError(
        f"{request.route}: connection broken while reading: {type(exc).__name__}: "
        f"{redact(str(exc))}",
        url=location(request.url),
    )


# --- httpx


class HttpxTransport:
    """Sends through httpx transports of ours (`pools`), or through the caller's client.

    With our own pools, requests go straight to a transport: httpx's client layer (URL
    and header merging, cookies, auth and redirect flows, event hooks) costs more CPU than
    the transport and does nothing for us. A caller's client is used whole, hooks and all.

    Our connections are split over several pools of at most `SHARD_SIZE`, each request
    going to the least busy: httpcore's pool does work that grows with the square of its
    connection count on every request (1.0.x), which at 200 connections costs ten times
    more CPU than the rest of the call.
    """

    def __init__(
        self,
        *,
        pools: Sequence[httpx.AsyncBaseTransport] = (),
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if bool(pools) == (client is not None):
            raise TypeError("give either pools or a client")
        self.pools = tuple(pools)
        self.client = client
        self._busy = [0] * len(self.pools)

    async def send(self, request: OutgoingRequest) -> HttpxReply:
        if has_control_character(request.headers):
            raise refused_locally(request, ValueError("a control character in a header"))
        outgoing = httpx.Request(
            request.method,
            request.url,
            content=request.content,
            headers=request.headers,
            extensions={"timeout": request.timeout.as_dict()},
        )
        shard = -1
        try:
            if self.client is not None:
                response = await self.client.send(outgoing, stream=True)
            else:
                busy = self._busy
                shard = busy.index(min(busy)) if len(busy) > 1 else 0
                busy[shard] += 1
                response = await self.pools[shard].handle_async_request(outgoing)
                response.request = outgoing
        except BaseException as exc:
            if shard >= 0:
                self._busy[shard] -= 1
            if isinstance(exc, httpx.TimeoutException):
                raise timed_out(request, _HTTPX_LIMITS.get(type(exc)), exc) from None
            if isinstance(exc, httpx.LocalProtocolError | UnicodeError):
                raise refused_locally(request, exc) from None
            if isinstance(exc, httpx.TransportError):
                raise connection_failed(request, exc) from None
            raise
        return HttpxReply(response, request, self._done_with(shard) if shard >= 0 else None)

    def _done_with(self, shard: int) -> Callable[[], None]:
        def done() -> None:
            self._busy[shard] -= 1

        return done

    async def aclose(self) -> None:
        for pool in self.pools:  # a caller's client stays open: it is theirs
            await pool.aclose()


_HTTPX_LIMITS: dict[type[Exception], TimeoutLimit] = {
    httpx.ConnectTimeout: "connect",
    httpx.ReadTimeout: "read",
    httpx.WriteTimeout: "write",
    httpx.PoolTimeout: "pool",
}


class HttpxReply:
    __slots__ = ("_on_close", "headers", "request", "response")

    def __init__(
        self,
        response: httpx.Response,
        request: OutgoingRequest,
        on_close: Callable[[], None] | None,
    ) -> None:
        self.response = response
        self.request = request
        self.headers: dict[str, str] = dict(response.headers.items())
        self._on_close = on_close

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def reason_phrase(self) -> str:
        return self.response.reason_phrase

    @property
    def is_closed(self) -> bool:
        return self.response.is_closed

    async def read(self, limit: int) -> bytes:
        try:
            check_declared_length(self.headers, limit)
            return await join_within(self.aiter_bytes(), limit)
        finally:
            await self.aclose()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for part in self.response.aiter_bytes():
                yield part
        except httpx.TimeoutException as exc:
            raise read_failed(exc, self.request, timeout=True) from None
        except httpx.TransportError as exc:
            raise read_failed(exc, self.request, timeout=False) from None
        except httpx.DecodingError as exc:
            raise ProtocolError(f"answer body cannot be decoded: {exc}") from None

    async def aclose(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
        await self.response.aclose()

    def abort(self) -> None:
        response = self.response
        # HTTP/2 carries other requests on the same socket: only HTTP/1 is cut here.
        if response.is_closed or response.extensions.get("http_version") == b"HTTP/2":
            return
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            # Shut down, not closed: the descriptor stays valid for the event loop, which
            # still watches it until `aclose()` closes it.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
