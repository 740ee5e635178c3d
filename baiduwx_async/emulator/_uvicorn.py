"""An ASGI app served by uvicorn on a socket of ours, in the running event loop: the
emulator's `serve()`, and the gateway's (which imports it from here)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

__all__ = ["bind", "serve_app", "url_of", "uvicorn_server"]


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it: without it, Nagle holds back the body written after
        # the headers until the client's delayed ACK, 40 ms a request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app: Any, *, log_level: str = "warning", shutdown_timeout: int = 5) -> Any:
    """A uvicorn `Server` for `app`: no access log (our apps count or log requests)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        ws="none",
        # nothing reads the caller's address; put X-Forwarded-* to use in a proxy of your own
        proxy_headers=False,
        timeout_graceful_shutdown=shutdown_timeout,
    )
    return uvicorn.Server(config)


@asynccontextmanager
async def serve_app(
    app: Any, *, host: str, port: int, shutdown_timeout: int, what: str
) -> AsyncIterator[str]:
    """Serve `app` while the block runs and yield its base URL. On exit the server stops
    accepting, lets running answers finish for up to `shutdown_timeout` seconds, and
    closes. uvicorn runs on asyncio only: under trio this raises RuntimeError."""
    try:
        asyncio.get_running_loop()  # only a check: uvicorn itself needs asyncio's loop
    except RuntimeError:
        raise RuntimeError(
            f"serving the {what} needs the asyncio event loop (uvicorn does not run under "
            "trio); under trio, use httpx.ASGITransport(app=...) instead"
        ) from None
    sock = bind(host, port)
    server = uvicorn_server(app, shutdown_timeout=shutdown_timeout)
    finished = anyio.Event()

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()
            finished.set()

    body_error: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(run)
        while not server.started:
            if finished.is_set():
                raise RuntimeError(f"the {what} failed to start on {host}:{port}")
            await anyio.sleep(0.005)
        try:
            yield url_of(sock)
        except Exception as exc:  # re-raised below, not wrapped in an exception group
            body_error = exc
        finally:
            server.should_exit = True
    if body_error is not None:
        raise body_error
