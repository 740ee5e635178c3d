"""The transport a client builds for itself: `http_backend` ("httpx" or "aiohttp") to a
`Transport`. Above both transports, so neither imports the other (aiohttp only when asked
for, being an extra)."""

from __future__ import annotations

import ssl

import httpx

from ._errors import ValidationError
from ._transport import SHARD_SIZE, HttpxTransport, Transport

__all__ = ["make_transport"]


def make_transport(
    backend: str, pool_size: int, timeout: httpx.Timeout, verify: ssl.SSLContext | bool = True
) -> Transport:
    """The transport of a client that owns its pool: keep-alive as large as the pool, so
    no connection is closed only to be opened again under load. `verify` is httpx's: an
    `ssl.SSLContext` (with the CA to trust), True for the CA bundle httpx uses (or the
    `SSL_CERT_FILE`/`SSL_CERT_DIR` of the environment), False for no check at all."""
    if not isinstance(verify, ssl.SSLContext | bool):
        raise ValidationError("verify", "must be an ssl.SSLContext, True or False")
    # One for all pools: loading the CA bundle takes ~20 ms
    tls = httpx.create_ssl_context(verify=verify)
    if backend == "httpx":
        shards = -(-pool_size // SHARD_SIZE)
        sizes = [pool_size // shards + (i < pool_size % shards) for i in range(shards)]
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
        return AiohttpTransport(limits=limits, timeout=timeout, tls=tls)
    raise ValidationError("http_backend", 'must be "httpx" or "aiohttp"', backend)
