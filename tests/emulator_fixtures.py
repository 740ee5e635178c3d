"""Fixtures shared by the emulator's own tests. Each test module defines its `emu` (with
its own seed); `client` and `token` here are built on whichever `emu` the module has."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from baiduwx_async.emulator import Emulator

from .support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def asgi_client(emulator: Emulator) -> httpx.AsyncClient:
    """Plain httpx talking to the emulator in-process."""
    transport = httpx.ASGITransport(app=emulator.app)
    return httpx.AsyncClient(transport=transport, base_url="http://emulator")


@pytest.fixture
async def client(emu: Emulator, quiet_raw_httpx: None) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(emu) as http:
        yield http


@pytest.fixture
def quiet_raw_httpx(caplog: pytest.LogCaptureFixture) -> None:
    """These tests send keys and tokens in URLs with bare httpx, as the wire protocol has
    them, and httpx logs each URL at INFO: that is the test's own request, not the
    library leaking one, so httpx's INFO lines are left out (the library's are kept)."""
    caplog.set_level(logging.WARNING, logger="httpx")


@pytest.fixture
def token(emu: Emulator) -> str:
    return emu.issue_token()
