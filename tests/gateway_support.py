"""The gateway served on loopback in front of an emulator, for the gateway's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import openai

import baiduwx_async as wx
from baiduwx_async.gateway import GatewayApp, create_app, serve
from baiduwx_async.testing import RunningEmulator, run_emulator

KEY = "sk-gateway-test-key-1"
OTHER_KEY = "sk-gateway-test-key-2"
MODELS = {
    "ernie": "chat:completions",
    "pythia": "completions:pythia12b",
    "bge": "embeddings:bge_large_zh",
}


@attrs.define
class Gateway:
    emu: RunningEmulator
    client: wx.AsyncClient
    app: GatewayApp
    url: str
    #: closed when the gateway stops: an open one would be closed by the garbage collector,
    #: on whatever event loop (closed, by then) the next test left behind
    opened: list[openai.AsyncOpenAI] = attrs.field(factory=list)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def openai(self, **options: Any) -> openai.AsyncOpenAI:
        options.setdefault("api_key", KEY)
        options.setdefault("max_retries", 0)  # the gateway's client retries, not the caller
        client = openai.AsyncOpenAI(base_url=self.base_url, **options)
        self.opened.append(client)
        return client

    def sync_openai(self, **options: Any) -> openai.OpenAI:
        options.setdefault("api_key", KEY)
        options.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.base_url, **options)

    def http(self, **options: Any) -> httpx.AsyncClient:
        """Plain httpx with the key set: for what the openai package would never send."""
        options.setdefault("headers", {"Authorization": f"Bearer {KEY}"})
        return httpx.AsyncClient(base_url=self.url, **options)


@asynccontextmanager
async def running_gateway(
    *,
    client_options: dict[str, Any] | None = None,
    app_options: dict[str, Any] | None = None,
    **emulator_fields: Any,
) -> AsyncIterator[Gateway]:
    emulator_fields.setdefault("seed", 1)
    async with run_emulator(**emulator_fields) as emu:
        options = {"max_retries": 0, **(client_options or {})}
        client = emu.client(**options)
        app = create_app(client, MODELS, [KEY, OTHER_KEY], **(app_options or {}))
        async with serve(app) as url:
            gateway = Gateway(emu, client, app, url)
            try:
                yield gateway
            finally:
                for caller in gateway.opened:
                    await caller.close()
