"""Certificates, through behaviour, on both backends: a local TLS server whose certificate
comes from a CA made for the test is refused by default and accepted once the user passes
that CA (`verify=`, `SSL_CERT_FILE`, or a caller's own httpx client)."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
import trustme
from anyio.streams.tls import TLSListener

import baiduwx_async as wx

from .support import TOKEN, chat_body

pytestmark = pytest.mark.anyio

ANSWER = json.dumps(chat_body("over tls")).encode()
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(ANSWER),
    ANSWER,
)
# (http_backend, event loop): aiohttp runs on asyncio only
CASES = [("httpx", "asyncio"), ("httpx", "trio"), ("aiohttp", "asyncio")]


@pytest.fixture(params=CASES, ids=["httpx-asyncio", "httpx-trio", "aiohttp"])
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
def backend(case: tuple[str, str]) -> str:
    return case[0]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


class TLSServer:
    def __init__(self) -> None:
        self.port = 0
        self.requests = 0


@asynccontextmanager
async def tls_server(ca: trustme.CA, *names: str) -> AsyncIterator[TLSServer]:
    """HTTPS on 127.0.0.1, port 0, with a certificate `ca` issued for `names`; every
    request gets one chat answer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    server = TLSServer()

    async def handle(stream: anyio.abc.ByteStream) -> None:
        buffer = b""
        try:
            async with stream:
                while b"\r\n\r\n" not in buffer:
                    buffer += await stream.receive()
                server.requests += 1
                await stream.send(RESPONSE)
                await stream.receive()  # until the client hangs up
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener = TLSListener(tcp, context, standard_compatible=False)
    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        with anyio.fail_after(15):
            yield server
        group.cancel_scope.cancel()


def client_for(server: TLSServer, backend: str, **options: Any) -> wx.AsyncClient:
    return wx.AsyncClient(
        credentials=wx.StaticToken(TOKEN),
        base_url=f"https://127.0.0.1:{server.port}",
        http_backend=backend,  # type: ignore[arg-type]
        rate_limiter=wx.NoLimit(),
        max_retries=0,
        **options,
    )


@pytest.fixture(autouse=True)
def _no_ca_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture(autouse=True)
def _quiet_handshake_failures(caplog: pytest.LogCaptureFixture) -> None:
    # The server logs each refused handshake with its traceback; nothing here to see.
    caplog.set_level(logging.CRITICAL, logger="anyio.streams.tls")


def assert_refused(error: wx.TransportError, anyio_backend: str) -> None:
    assert not isinstance(error, wx.RequestTimeoutError)
    if anyio_backend == "asyncio":  # under trio, httpcore's error carries no text
        assert "CERTIFICATE_VERIFY_FAILED" in str(error)


async def test_an_unknown_ca_is_refused_by_default(
    backend: str, anyio_backend: str, ca: trustme.CA
) -> None:
    async with tls_server(ca, "127.0.0.1") as server:
        async with client_for(server, backend) as client:
            with pytest.raises(wx.TransportError) as caught:
                await client.chat("mpt30b", [wx.user("hi")])
    assert_refused(caught.value, anyio_backend)
    assert not isinstance(caught.value, wx.RequestTimeoutError)
    assert server.requests == 0, "no request went over an unverified connection"


async def test_the_users_ca_is_accepted(backend: str, ca: trustme.CA) -> None:
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    async with tls_server(ca, "127.0.0.1") as server:
        async with client_for(server, backend, verify=trusted) as client:
            answer = await client.chat("mpt30b", [wx.user("hi")])
    assert answer.result == "over tls"
    assert server.requests == 1


async def test_a_ca_from_ssl_cert_file_is_accepted(
    backend: str, ca: trustme.CA, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    async with tls_server(ca, "127.0.0.1") as server:
        async with client_for(server, backend) as client:
            answer = await client.chat("mpt30b", [wx.user("hi")])
    assert answer.result == "over tls"


async def test_a_trusted_certificate_for_another_host_is_refused(
    backend: str, anyio_backend: str, ca: trustme.CA
) -> None:
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    async with tls_server(ca, "qianfan.example") as server:
        async with client_for(server, backend, verify=trusted) as client:
            with pytest.raises(wx.TransportError) as caught:
                await client.chat("mpt30b", [wx.user("hi")])
    assert_refused(caught.value, anyio_backend)
    assert server.requests == 0


async def test_verify_false_accepts_any_certificate(backend: str, ca: trustme.CA) -> None:
    async with tls_server(ca, "qianfan.example") as server:
        async with client_for(server, backend, verify=False) as client:
            answer = await client.chat("mpt30b", [wx.user("hi")])
    assert answer.result == "over tls"


@pytest.mark.parametrize("case", [("httpx", "asyncio"), ("httpx", "trio")], indirect=True)
async def test_a_callers_httpx_client_carries_its_own_ca(backend: str, ca: trustme.CA) -> None:
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    async with tls_server(ca, "127.0.0.1") as server:
        async with httpx.AsyncClient(verify=trusted) as http:
            async with client_for(server, backend, http_client=http) as client:
                answer = await client.chat("mpt30b", [wx.user("hi")])
        async with httpx.AsyncClient() as http:
            async with client_for(server, backend, http_client=http) as client:
                with pytest.raises(wx.TransportError):
                    await client.chat("mpt30b", [wx.user("hi")])
    assert answer.result == "over tls"
    assert server.requests == 1


def test_verify_is_checked_before_any_connection() -> None:
    with pytest.raises(wx.ValidationError, match="verify"):
        wx.AsyncClient(credentials=wx.StaticToken(TOKEN), verify="/etc/ca.pem")  # type: ignore[arg-type]
    with pytest.raises(wx.ValidationError, match="verify"):
        wx.AsyncClient(
            credentials=wx.StaticToken(TOKEN), http_client=httpx.AsyncClient(), verify=False
        )
