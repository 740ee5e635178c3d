"""Serving the gateway with uvicorn in the running event loop: `baiduwx serve` and tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..emulator._uvicorn import serve_app

__all__ = ["serve"]


@asynccontextmanager
async def serve(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` with uvicorn while the block runs; yields its base URL (asyncio only).

    ```python
    async with serve(create_app(client, models)) as url:
        openai_client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused")
    ```
    """
    async with serve_app(app, host=host, port=port, shutdown_timeout=2, what="gateway") as url:
        yield url
