"""What the socket tests of the client against the emulator share (test_integration and
test_integration_faults): each of them runs on both HTTP backends.

A module opts in with `pytest_generate_tests = both_backends` and the `http_backend`
fixture (tests/conftest.py), which points `emulator_and_client` at the backend of the run.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import pytest

import baiduwx_async as wx
from baiduwx_async.testing import RunningEmulator, run_emulator

from .support import FAST_RETRIES

ENDPOINT = "mpt30b"
COMPLETIONS = "pythia12b"
MESSAGES = [wx.user("Please introduce The Great Wall")]
PROMPT = "Introduce the city Beijing"
#: The suite's fast backoff, with the budget that fault tests need.
FAST = attrs.evolve(FAST_RETRIES, max_retries=6)

#: Options every client of `emulator_and_client` starts from (the `http_backend` fixture
#: sets the transport).
CLIENT_DEFAULTS: dict[str, Any] = {}
BACKENDS = ("httpx", "aiohttp")


def both_backends(metafunc: pytest.Metafunc) -> None:
    """A `pytest_generate_tests`: each socket test once per backend. The ASGI tests, which
    name their event loop, bring their own (httpx) transport."""
    if "anyio_backend" not in inspect.signature(metafunc.function).parameters:
        metafunc.parametrize("http_backend", BACKENDS, indirect=True)


@asynccontextmanager
async def emulator_and_client(
    *, client: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[tuple[RunningEmulator, wx.AsyncClient]]:
    """An emulator on a socket and a client of it with fast retries and a 10 s timeout."""
    settings.setdefault("seed", 1)
    options: dict[str, Any] = {
        "retry_policy": FAST,
        "timeout": 10.0,
        **CLIENT_DEFAULTS,
        **(client or {}),
    }
    async with run_emulator(**settings) as emu:
        with anyio.fail_after(30):
            yield emu, emu.client(**options)


def endpoint_stats(emu: RunningEmulator, key: str = f"chat/{ENDPOINT}") -> dict[str, int]:
    endpoints: dict[str, dict[str, int]] = emu.stats()["endpoints"]
    return endpoints.get(key, {})
