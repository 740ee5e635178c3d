"""
The aiohttp transport (`http_backend="aiohttp"`, extra `aiohttp`): asyncio only.

Requests go to one keep-alive `aiohttp.ClientSession` as a URL string, a header dict and
bytes; answers come back as aiohttp's own response, read directly. No httpx request or
response object is built on the way, which is most of what a call costs beyond aiohttp's
own work when thousands are in flight. Imported only when this backend is chosen.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

import aiohttp
import anyio
import httpx

from ._errors import TimeoutLimit, TransportError
from ._transport import (
    OutgoingRequest,
    check_declared_length,
    connection_failed,
    has_control_character,
    join_within,
    read_failed,
    refused_locally,
    timed_out,
)

__all__ = ["AiohttpReply", "AiohttpTransport"]


# aiohttp's timeouts derive from asyncio.TimeoutError, which is not the builtin before 3.11.
_TIMEOUTS = (aiohttp.ServerTimeoutError, TimeoutError)
_FAILURES = (aiohttp.ClientError, TimeoutError)


def _limit_of(exc: BaseException) -> TimeoutLimit | None:
    """Which of httpx's limits an aiohttp timeout stands for (`connect` also covers the
    wait for a free connection, as aiohttp does not tell them apart)."""
    # Both classes are new in aiohttp 3.10; older ones say only "a timeout".
    if isinstance(exc, getattr(aiohttp, "ConnectionTimeoutError", ())):
        return "connect"
    if isinstance(exc, getattr(aiohttp, "SocketTimeoutError", ())):
        return "read"
    return None


def _read_failed(exc: BaseException, request: OutgoingRequest) -> TransportError:
    return read_failed(exc, request, timeout=isinstance(exc, _TIMEOUTS))


class AiohttpTransport:
    """A pool of `limits.max_connections` keep-alive connections, opened on first use (an
    aiohttp session belongs to the event loop it was made in). Certificates are checked by
    `tls`, the context the httpx backend would use."""

    def __init__(
        self, *, limits: httpx.Limits, timeout: httpx.Timeout, tls: ssl.SSLContext
    ) -> None:
        self._limits = limits
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._client_timeout(timeout)  # the client's default, converted once

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            if not anyio.get_cancelled_exc_class().__module__.startswith("asyncio"):
                raise RuntimeError(
                    'http_backend="aiohttp" runs on asyncio only; use the default "httpx" '
                    "backend under trio"
                )
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry or 0,
                ssl=self._tls,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Nothing of ours needs cookies, and a jar is work on every answer.
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    def _client_timeout(self, timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
        """httpx's four timeouts as aiohttp's: `pool` bounds the wait for a connection
        (aiohttp's `connect` covers that wait and the connecting), `connect` the TCP and
        TLS setup, `read` each silence; aiohttp has no write timeout."""
        key = (timeout.connect, timeout.read, timeout.pool)
        converted = self._timeouts.get(key)
        if converted is None:
            if len(self._timeouts) >= 64:
                self._timeouts.clear()
            pool_wait = None if timeout.pool is None else timeout.pool + (timeout.connect or 0)
            converted = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None,
                connect=pool_wait,
                sock_connect=timeout.connect,
                sock_read=timeout.read,
            )
        return converted

    async def send(self, request: OutgoingRequest) -> AiohttpReply:
        # Checked here whatever the release: aiohttp before 3.14 writes control characters
        # other than CR, LF and NUL to the wire.
        if has_control_character(request.headers):
            raise refused_locally(request, ValueError("a control character in a header"))
        try:
            response = await self.session.request(
                request.method,
                str(request.url),
                data=request.content,
                headers=request.headers,
                timeout=self._client_timeout(request.timeout),
                allow_redirects=False,
            )
        except _TIMEOUTS as exc:
            raise timed_out(request, _limit_of(exc), exc) from None
        except aiohttp.ClientError as exc:
            raise connection_failed(request, exc) from None
        except ValueError as exc:  # a header aiohttp will not write
            raise refused_locally(request, exc) from None
        return AiohttpReply(response, request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class AiohttpReply:
    __slots__ = ("headers", "request", "response")

    def __init__(self, response: aiohttp.ClientResponse, request: OutgoingRequest) -> None:
        self.response = response
        self.request = request
        self.headers: dict[str, str] = {
            name.lower(): value for name, value in response.headers.items()
        }

    @property
    def status_code(self) -> int:
        return self.response.status

    @property
    def reason_phrase(self) -> str:
        return self.response.reason or ""

    @property
    def is_closed(self) -> bool:
        return self.response.closed

    async def read(self, limit: int) -> bytes:
        try:
            check_declared_length(self.headers, limit)
            if "content-length" in self.headers and "content-encoding" not in self.headers:
                # The size is known and is the size we get: aiohttp's one-piece read.
                try:
                    return await self.response.read()
                except _FAILURES as exc:
                    raise _read_failed(exc, self.request) from None
            return await join_within(self.aiter_bytes(), limit)
        finally:
            await self.aclose()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for part in self.response.content.iter_any():
                yield part
        except _FAILURES as exc:
            raise _read_failed(exc, self.request) from None

    async def aclose(self) -> None:
        if self.response.content.at_eof():
            self.response.release()  # read to the end: the connection goes back to the pool
        else:
            self.response.close()  # unread bytes would garble the next answer on it

    def abort(self) -> None:
        connection = self.response.connection
        transport = connection.transport if connection is not None else None
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            # asyncio closes the socket itself a loop turn after `close()`; shutting it
            # down first tells the server now.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.response.close()
