"""How every example gets its client: the real service when credentials are set in the
environment (QIANFAN_AK/QIANFAN_SK, QIANFAN_ACCESS_KEY/QIANFAN_SECRET_KEY or
QIANFAN_ACCESS_TOKEN), else the emulator, started in-process on a loopback port."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import baiduwx_async as wx

CREDENTIAL_VARIABLES = ("QIANFAN_AK", "QIANFAN_ACCESS_KEY", "QIANFAN_ACCESS_TOKEN")


@asynccontextmanager
async def open_client(**client_options: Any) -> AsyncIterator[wx.AsyncClient]:
    if any(os.environ.get(name) for name in CREDENTIAL_VARIABLES):
        async with wx.AsyncClient(**client_options) as client:
            yield client
        return
    from baiduwx_async.testing import run_emulator

    # asgi=True: no socket, so this works under trio as well as asyncio
    async with (
        run_emulator(asgi=True, latency=0.01) as emulator,
        emulator.client(**client_options) as client,
    ):
        yield client
