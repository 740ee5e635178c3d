"""Both transports (httpx and aiohttp) against a scripted HTTP server on loopback that
answers each request with raw bytes the test chose: what the wire can do wrong, and what
each transport must make of it (our errors, retries, limits, decoding, closing)."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import attrs
import httpx
import pytest

import baiduwx_async as wx
from baiduwx_async._transport import SHARD_SIZE, HttpxTransport, OutgoingRequest

from .support import FAST_RETRIES, TOKEN, chat_body

pytestmark = pytest.mark.anyio

BACKENDS = ["httpx", "aiohttp"]
MESSAGES = [wx.user("hi")]
RETRIES = attrs.evolve(FAST_RETRIES, max_retries=2)

#: What the server does with one request: bytes to write, and then whether to hang up.
Script = Callable[[int], tuple[bytes, bool]]


def http_answer(
    body: bytes, *, headers: dict[str, str] | None = None, length: int | None = None
) -> bytes:
    fields = {"content-type": "application/json", "content-length": str(len(body))}
    if length is not None:
        fields["content-length"] = str(length)
    fields.update(headers or {})
    head = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode() + b"\r\n" + body


def chunked_answer(pieces: list[bytes]) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return head + b"\r\n" + body


class ScriptedServer:
    """Counts requests and connections; answers request number n with `script(n)`."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections_open = 0
        self.port = 0

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        self.connections_open += 1
        buffer = b""
        try:
            async with stream:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        buffer += await stream.receive()
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(buffer) < length:
                        buffer += await stream.receive()
                    buffer = buffer[length:]
                    self.requests.append(head)
                    answer, hang_up = self.script(len(self.requests))
                    if answer:
                        await stream.send(answer)
                    if hang_up:
                        return
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            self.connections_open -= 1


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(script)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, server.handle)
        with anyio.fail_after(15):
            yield server
        group.cancel_scope.cancel()


def client_of(server: ScriptedServer, backend: str, **options: Any) -> wx.AsyncClient:
    options.setdefault("retry_policy", RETRIES)
    return wx.AsyncClient(
        credentials=wx.StaticToken(TOKEN),
        base_url=f"http://127.0.0.1:{server.port}",
        http_backend=backend,  # type: ignore[arg-type]
        rate_limiter=wx.NoLimit(),
        **options,
    )


def always(answer: bytes, hang_up: bool = False) -> Script:
    return lambda n: (answer, hang_up)


GOOD = http_answer(json.dumps(chat_body("fine")).encode())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the aiohttp transport is asyncio's; trio has its own test below


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_plain_answer_and_its_headers(backend: str) -> None:
    answer = http_answer(
        json.dumps(chat_body("fine")).encode(),
        headers={"X-Baidu-Request-Id": "as-echo-1", "X-Ratelimit-Limit-Requests": "300"},
    )
    async with scripted(always(answer)) as server, client_of(server, backend) as client:
        reply = await client.chat("mpt30b", MESSAGES, request_id="mine-1")
    assert reply.result == "fine"
    assert reply.request_id == "as-echo-1"
    assert reply.ratelimit.limit_requests == 300
    head = server.requests[0].decode().lower()
    assert head.startswith("post /rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt30b?access_token=")
    assert "request_id: mine-1" in head and "content-type: application/json" in head


@pytest.mark.parametrize("backend", BACKENDS)
async def test_oversized_answer_is_refused_by_its_length_without_a_retry(backend: str) -> None:
    big = json.dumps(chat_body("x" * 5000)).encode()
    async with scripted(always(http_answer(big))) as server:
        async with client_of(server, backend, max_response_bytes=4096) as client:
            with pytest.raises(wx.ProtocolError, match="over the limit of 4096"):
                await client.chat("mpt30b", MESSAGES)
    assert len(server.requests) == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_oversized_chunked_answer_is_refused_while_reading(backend: str) -> None:
    pieces = [b"x" * 3000] * 4  # 12,000 bytes, no length given
    async with scripted(always(chunked_answer(pieces))) as server:
        async with client_of(server, backend, max_response_bytes=8192) as client:
            with pytest.raises(wx.ProtocolError, match="over the limit of 8192"):
                await client.chat("mpt30b", MESSAGES)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_gzip_answer_is_decoded_and_its_decoded_size_is_limited(backend: str) -> None:
    body = json.dumps(chat_body("z" * 20_000)).encode()
    packed = gzip.compress(body)
    answer = http_answer(packed, headers={"content-encoding": "gzip"})
    assert len(packed) < 1000 < 20_000
    async with scripted(always(answer)) as server:
        async with client_of(server, backend) as client:
            assert (await client.chat("mpt30b", MESSAGES)).result == "z" * 20_000
        async with client_of(server, backend, max_response_bytes=10_000) as client:
            with pytest.raises(wx.ProtocolError, match="over the limit"):
                await client.chat("mpt30b", MESSAGES)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_truncated_answer_is_a_transport_error_and_retried(backend: str) -> None:
    cut = http_answer(b'{"id": "as-1", "res', length=500)

    def script(n: int) -> tuple[bytes, bool]:
        return (cut, True) if n == 1 else (GOOD, False)

    async with scripted(script) as server, client_of(server, backend) as client:
        assert (await client.chat("mpt30b", MESSAGES)).result == "fine"
    assert len(server.requests) == 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_hang_up_without_an_answer_is_retried_then_reported(backend: str) -> None:
    async with scripted(always(b"", hang_up=True)) as server, client_of(server, backend) as client:
        with pytest.raises(wx.TransportError) as caught:
            await client.chat("mpt30b", MESSAGES)
    assert len(server.requests) == 3  # the first attempt and RETRIES' two
    text = str(caught.value)
    route = f"POST http://127.0.0.1:{server.port}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt30b"
    assert route in text
    assert "after 3 attempts" in text
    assert TOKEN not in text


@pytest.mark.parametrize("backend", BACKENDS)
async def test_refused_connection_names_the_route_not_the_token(backend: str) -> None:
    # A port bound but not listening refuses; a free one could even be connected to itself.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        closed = ScriptedServer(always(GOOD))
        closed.port = bound.getsockname()[1]
        async with client_of(closed, backend, max_retries=0) as client:
            with pytest.raises(wx.TransportError) as caught:
                await client.chat("mpt30b", MESSAGES)
    assert not isinstance(caught.value, wx.RequestTimeoutError)
    assert "wenxinworkshop/chat/mpt30b failed" in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_silence_is_a_timeout(backend: str) -> None:
    async with scripted(always(b"")) as server:
        async with client_of(server, backend, timeout=0.2, max_retries=1) as client:
            started = anyio.current_time()
            with pytest.raises(wx.RequestTimeoutError):
                await client.chat("mpt30b", MESSAGES)
            elapsed = anyio.current_time() - started
    assert len(server.requests) == 2
    # two silences of 0.2 s at least; the upper bound only tells a timeout from a hang
    assert 0.4 <= elapsed < 10


@pytest.mark.parametrize("backend", BACKENDS)
async def test_stream_broken_midway_is_reported_and_its_connection_closed(backend: str) -> None:
    chunk = {"id": "as-s", "object": "chat.completion", "created": 1, "sentence_id": 0,
             "is_end": False, "is_truncated": False, "result": "one. ", "need_clear_history": False,
             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}  # fmt: skip
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 4000\r\n\r\n"
    answer = head + b"data: " + json.dumps(chunk).encode() + b"\n\n"
    async with scripted(always(answer, hang_up=True)) as server:
        async with client_of(server, backend) as client:
            seen = []
            with pytest.raises(wx.TransportError, match="stream broken"):
                async with client.chat_stream("mpt30b", MESSAGES) as stream:
                    async for piece in stream:
                        seen.append(piece.result)
            assert stream._reader is not None and stream._reader.reply.is_closed
    assert seen == ["one. "]
    assert len(server.requests) == 1  # a chunk had been read: never retried


@pytest.mark.parametrize("backend", BACKENDS)
async def test_connections_are_reused_and_closed_with_the_client(backend: str) -> None:
    async with scripted(always(GOOD)) as server:
        client = client_of(server, backend)
        for _ in range(5):
            await client.chat("mpt30b", MESSAGES)
        assert server.connections_open == 1  # one keep-alive connection for 5 calls
        await client.aclose()
        with anyio.fail_after(3):
            while server.connections_open:
                await anyio.sleep(0.01)
    assert len(server.requests) == 5


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_aiohttp_backend_refuses_trio_before_sending(anyio_backend: str) -> None:
    client = wx.AsyncClient(
        credentials=wx.StaticToken(TOKEN), base_url="http://127.0.0.1:9", http_backend="aiohttp"
    )
    with pytest.raises(RuntimeError, match="asyncio only"):
        await client.chat("mpt30b", MESSAGES)
    await client.aclose()


async def test_httpx_pool_is_split_in_shards_that_share_the_load() -> None:
    """httpcore's pool costs CPU that grows with the square of its size, so ours is split
    in pools of at most SHARD_SIZE, each request going to the least busy one."""
    cut = http_answer(b'{"id": "as-1"', length=500)

    def script(n: int) -> tuple[bytes, bool]:
        return (GOOD, False) if n <= 60 else (cut, True)

    async with scripted(script) as server:
        client = client_of(server, "httpx", max_concurrency=20, max_retries=0)
        transport = client._sender.transport
        assert isinstance(transport, HttpxTransport)
        pools = [pool._pool for pool in transport.pools]  # type: ignore[attr-defined]
        sizes = [pool._max_connections for pool in pools]
        assert sum(sizes) == 20 and max(sizes) <= SHARD_SIZE and max(sizes) - min(sizes) <= 1
        async with anyio.create_task_group() as group:
            for _ in range(60):
                group.start_soon(client.chat, "mpt30b", MESSAGES)
        used = [len(pool.connections) for pool in pools]
        assert all(0 < n <= size for n, size in zip(used, sizes, strict=True)), (used, sizes)
        assert transport._busy == [0] * len(pools)
        with pytest.raises(wx.TransportError):
            await client.chat("mpt30b", MESSAGES)
        assert transport._busy == [0] * len(pools), "a failed read still frees its shard"
        await client.aclose()
    assert len(server.requests) == 61


STREAM_CHUNK = {
    "id": "as-s",
    "object": "chat.completion",
    "created": 1,
    "sentence_id": 0,
    "is_end": False,
    "is_truncated": False,
    "result": "one. ",
    "need_clear_history": False,
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_stream_that_stalls_midway_names_its_address_and_timeout(backend: str) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 4000\r\n\r\n"
    answer = head + b"data: " + json.dumps(STREAM_CHUNK).encode() + b"\n\n"
    async with scripted(always(answer)) as server:
        async with client_of(server, backend, timeout=httpx.Timeout(5.0, read=0.3)) as client:
            with pytest.raises(wx.RequestTimeoutError) as caught:
                async with client.chat_stream("mpt30b", MESSAGES) as stream:
                    async for _ in stream:
                        pass
    error = caught.value
    assert error.limit == "read" and error.seconds == 0.3
    assert (
        error.url
        == f"http://127.0.0.1:{server.port}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt30b"
    )
    assert f"127.0.0.1:{server.port}" in str(error) and "0.3 s" in str(error)
    assert TOKEN not in str(error)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_body_that_stalls_after_its_headers_reports_the_read_timeout(backend: str) -> None:
    partial = http_answer(b'{"id": "as-1", ', length=4000)
    async with scripted(always(partial)) as server:
        timeout = httpx.Timeout(5.0, read=0.3)
        async with client_of(server, backend, timeout=timeout, max_retries=0) as client:
            with pytest.raises(wx.RequestTimeoutError) as caught:
                await client.chat("mpt30b", MESSAGES)
    assert caught.value.limit == "read" and caught.value.seconds == 0.3
    assert "0.3 s" in str(caught.value) and f"127.0.0.1:{server.port}" in str(caught.value)


UNSENDABLE_HEADERS = {
    "NUL in a value": ("X-Key", "s3cret\x00value"),
    "SOH in a value": ("X-Key", "s3cret\x01value"),
    "US in a value": ("X-Key", "s3cret\x1fvalue"),
    "DEL in a value": ("X-Key", "s3cret\x7fvalue"),
    "SOH in a name": ("X-K\x01ey", "s3cret"),
    "DEL in a name": ("X-K\x7fey", "s3cret"),
}


@pytest.mark.parametrize("header", UNSENDABLE_HEADERS.values(), ids=UNSENDABLE_HEADERS.keys())
@pytest.mark.parametrize(
    ("backend", "library_may_refuse"),
    [("httpx", True), ("aiohttp", True), ("aiohttp", False)],
    ids=["httpx", "aiohttp", "aiohttp-never-reached"],
)
async def test_a_header_the_http_library_refuses_is_not_retried_nor_quoted(
    backend: str,
    library_may_refuse: bool,
    header: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The call keywords refuse such a header first; the transports must not rely on it.
    # h11 and aiohttp before 3.14 refuse CR, LF and NUL but write the other control
    # characters to the wire: our transports refuse them before the library sees them.
    if not library_may_refuse:
        import baiduwx_async._aiohttp as aiohttp_transport

        def reached(*args: object, **kwargs: object) -> None:
            raise AssertionError("the header reached aiohttp")

        monkeypatch.setattr(aiohttp_transport.aiohttp.ClientSession, "request", reached)
    async with scripted(always(GOOD)) as server:
        async with client_of(server, backend) as client:
            request = OutgoingRequest(
                "POST",
                httpx.URL(f"http://127.0.0.1:{server.port}/x?access_token={TOKEN}"),
                dict([header]),
                b"{}",
                httpx.Timeout(5.0),
            )
            with pytest.raises(wx.TransportError) as caught:
                await client._sender.transport.send(request)
    assert caught.value.retryable is False
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(caught.value)
    assert TOKEN not in str(caught.value)
    assert server.requests == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_tab_in_a_header_value_is_sent(backend: str) -> None:
    async with scripted(always(GOOD)) as server:
        async with client_of(server, backend) as client:
            request = OutgoingRequest(
                "POST",
                httpx.URL(f"http://127.0.0.1:{server.port}/x?access_token={TOKEN}"),
                {"X-Note": "a\tb"},
                b"{}",
                httpx.Timeout(5.0),
            )
            reply = await client._sender.transport.send(request)
            await reply.read(1 << 16)
            await reply.aclose()
    assert b"x-note: a\tb" in server.requests[0].lower()
