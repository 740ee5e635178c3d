"""A caller that goes away mid-stream: the gateway closes the upstream stream within a
second and gives its place in the client's concurrency limit back."""

from __future__ import annotations

import logging
import time

import anyio
import pytest

from .gateway_support import Gateway, running_gateway

pytestmark = pytest.mark.anyio

QUESTION = [{"role": "user", "content": "Please introduce The Great Wall"}]
STREAM = {"model": "ernie", "messages": QUESTION, "stream": True}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def abandoned_within(gw: Gateway, seconds: float) -> float:
    """Seconds until the emulator saw the stream abandoned (fails after `seconds`)."""
    left = time.monotonic()
    while gw.emu.stats()["streams_abandoned"] == 0:
        assert time.monotonic() - left < seconds, "the upstream stream is still open"
        await anyio.sleep(0.01)
    return time.monotonic() - left


async def the_place_is_free(gw: Gateway) -> None:
    """With max_concurrency=1, a new call goes through only once the stream's place is back."""
    gw.emu.configure(tokens_per_second=None, first_token_latency=0.0)
    with anyio.fail_after(5):
        reply = await gw.openai().chat.completions.create(model="ernie", messages=QUESTION)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    assert gw.emu.stats()["in_flight"] == 0


@pytest.mark.parametrize("http_backend", ["httpx", "aiohttp"])
async def test_leaving_mid_stream_closes_upstream_within_a_second(
    http_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="baiduwx_async.gateway")
    options = {"max_concurrency": 1, "http_backend": http_backend}
    # about 0.5 s a sentence: the stream would last seconds
    async with running_gateway(client_options=options, tokens_per_second=15) as gw:
        async with (
            gw.http() as http,
            http.stream("POST", "/v1/chat/completions", json=STREAM) as answer,
        ):
            assert answer.status_code == 200
            async for line in answer.aiter_lines():
                if '"content":"' in line and '"role"' not in line:
                    break  # one sentence arrived; leaving the block drops the connection
        assert gw.emu.stats()["streams_completed"] == 0
        await abandoned_within(gw, 1.0)
        await the_place_is_free(gw)
    lines = [r.getMessage() for r in caplog.records if r.name == "baiduwx_async.gateway"]
    assert lines[0].startswith("POST /v1/chat/completions model=ernie status=499 ")


async def test_leaving_before_the_first_chunk_closes_upstream_too() -> None:
    options = {"max_concurrency": 1}
    async with running_gateway(client_options=options, first_token_latency=5.0) as gw:
        async with gw.http() as http:
            with anyio.move_on_after(0.5):  # the caller gives up while the model thinks
                await http.post("/v1/chat/completions", json=STREAM)
        assert gw.emu.stats()["streams_started"] == 1
        await abandoned_within(gw, 1.0)
        await the_place_is_free(gw)
