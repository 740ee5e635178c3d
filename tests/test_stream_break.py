"""Leaving `async for` early closes the connection then and there, not when the
`async with` block ends: watched from the server's side of a real loopback connection.

The server runs in a thread on plain blocking sockets, so whether it saw the connection
end does not depend on the client's event loop taking turns: each check below runs with
no `await` between the end of the loop and the look at the server's socket.
"""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Iterator

import anyio
import pytest

import baiduwx_async as wx

from .support import TOKEN
from .test_streaming import chunk

pytestmark = pytest.mark.anyio

MESSAGES = [wx.user("hi")]


class HangingSSEServer:
    """Answers each request with the head of an event stream and two chunks, then never
    sends more: the client must end the connection. Keeps each accepted socket."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                buffer += conn.recv(65536)
            head, _, body = buffer.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += conn.recv(65536)
            self.connections.append(conn)
            events = b"".join(
                b"data: " + json.dumps(chunk(i, f"s{i}")).encode() + b"\n\n" for i in range(2)
            )
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(events), events)
            )

    def close(self) -> None:
        self._listener.close()
        for conn in self.connections:
            conn.close()


def peer_closed(conn: socket.socket, wait: float) -> bool:
    """Whether the client ended the connection (EOF or reset), waiting at most `wait`
    seconds on the server's socket alone."""
    readable, _, _ = select.select([conn], [], [], wait)
    if not readable:
        return False
    try:
        return conn.recv(65536, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def server() -> Iterator[HangingSSEServer]:
    running = HangingSSEServer()
    yield running
    running.close()


def backends(anyio_backend: str) -> list[str]:
    return ["httpx", "aiohttp"] if anyio_backend == "asyncio" else ["httpx"]


def client_for(server: HangingSSEServer, backend: str) -> wx.AsyncClient:
    return wx.AsyncClient(
        credentials=wx.StaticToken(TOKEN),
        base_url=server.base_url,
        http_backend=backend,
        max_retries=0,
        max_concurrency=1,
    )


async def test_break_closes_the_connection_inside_the_block(
    server: HangingSSEServer, anyio_backend: str
) -> None:
    for backend in backends(anyio_backend):
        async with client_for(server, backend) as client:
            async with client.chat_stream("mpt30b", MESSAGES) as stream:
                async for seen in stream:
                    conn = server.connections[-1]
                    assert not peer_closed(conn, 0.05), "open while the loop runs"
                    assert seen.result == "s0"
                    break
                assert peer_closed(conn, 1.0), f"{backend}: still open after break"
                assert stream.text == "s0"
                # The stream's place in flight is free: another call goes out at once.
                with anyio.fail_after(5):
                    async with client.chat_stream("mpt30b", MESSAGES) as second:
                        async for _ in second:
                            break
                with pytest.raises(wx.StreamError, match="closed before its end"):
                    await stream.__anext__()


async def test_an_error_in_the_loop_body_closes_the_connection_inside_the_block(
    server: HangingSSEServer, anyio_backend: str
) -> None:
    for backend in backends(anyio_backend):
        async with client_for(server, backend) as client:
            async with client.chat_stream("mpt30b", MESSAGES) as stream:
                with pytest.raises(LookupError):
                    async for _ in stream:
                        raise LookupError("the caller's own failure")
                assert peer_closed(server.connections[-1], 1.0), backend


async def test_the_connection_stays_open_while_the_loop_is_only_paused(
    server: HangingSSEServer, anyio_backend: str
) -> None:
    """The check above can fail: a loop that is still running keeps its connection."""
    for backend in backends(anyio_backend):
        async with client_for(server, backend) as client:
            async with client.chat_stream("mpt30b", MESSAGES) as stream:
                iterator = aiter(stream)
                await anext(iterator)
                await anyio.sleep(0.05)
                assert not peer_closed(server.connections[-1], 0.1), backend
                del iterator  # dropping the iterator is leaving the loop
                assert peer_closed(server.connections[-1], 1.0), backend
