"""Serving the gateway with uvicorn in the running event loop: `baiduwx serve` and tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

__all__ = ["bind", "serve", "uvicorn_server"]


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it: without it, Nagle holds back a small answer's body
        # until the caller's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def uvicorn_server(app: Any, *, log_level: str = "warning", shutdown_timeout: int = 5) -> Any:
    """A uvicorn `Server` for `app`: no access log (the app logs one line per request)."""
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


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@asynccontextmanager
async def serve(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` with uvicorn while the block runs; yields its base URL (asyncio only).

    ```python
    async with serve(create_app(client, models)) as url:
        openai_client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused")
    ```
    """
    sock = bind(host, port)
    server = uvicorn_server(app, shutdown_timeout=2)
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
                raise RuntimeError(f"the gateway failed to start on {host}:{port}")
            await anyio.sleep(0.005)
        try:
            yield url_of(sock)
        except Exception as exc:  # re-raised below, not wrapped in an exception group
            body_error = exc
        finally:
            server.should_exit = True
    if body_error is not None:
        raise body_error
