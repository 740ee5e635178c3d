"""The transport a client builds for itself: `http_backend` ("httpx" or "aiohttp") to a
`Transport`. Above both transports, so neither imports the other (aiohttp only when asked
for, being an extra)."""

from __future__ import annotations

import httpx

from ._errors import ValidationError
from ._transport import SHARD_SIZE, HttpxTransport, Transport

__all__ = ["make_transport"]


def make_transport(backend: str, pool_size: int, timeout: httpx.Timeout) -> Transport:
    """The transport of a client that owns its pool: keep-alive as large as the pool, so
    no connection is closed only to be opened again under load."""
    if backend == "httpx":
        shards = -(-pool_size // SHARD_SIZE)
        sizes = [pool_size // shards + (i < pool_size % shards) for i in range(shards)]
        tls = httpx.create_ssl_context()  # one for all: loading the CA bundle takes ~20 ms
        pools = [
            httpx.AsyncHTTPTransport(
                verify=tls,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            for size in sizes
        ]
        return HttpxTransport(pools=pools)
    limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
    if backend == "aiohttp":
        try:
            from ._aiohttp import AiohttpTransport
        except ImportError:
            raise ValidationError(
                "http_backend",
                "\"aiohttp\" needs the aiohttp extra: pip install 'baiduwx_async[aiohttp]'",
            ) from None
        return AiohttpTransport(limits=limits, timeout=timeout)
    raise ValidationError("http_backend", 'must be "httpx" or "aiohttp"', backend)
