"""The whole v1 service through the client against the emulator: embeddings, the ERNIE
fields and a function-call round trip, on real loopback sockets with both HTTP backends,
and in the ASGI mode under asyncio and trio."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import baiduwx_async as wx
from baiduwx_async.testing import RunningEmulator, run_emulator

pytestmark = pytest.mark.anyio

ERNIE_GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide" / "ernie.md"

ENDPOINT = "mpt30b"
FAST = wx.RetryPolicy(max_retries=3, initial_backoff=0.005, max_backoff=0.05)
WEATHER = wx.Function(
    "get_weather",
    "The weather of a city",
    {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
)


@pytest.fixture(params=["httpx", "aiohttp"])
def http_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on asyncio; the ASGI test below runs both loops


@asynccontextmanager
async def emulator_and_client(
    backend: str, **settings: Any
) -> AsyncIterator[tuple[RunningEmulator, wx.AsyncClient]]:
    settings.setdefault("seed", 7)
    async with run_emulator(**settings) as emu:
        with anyio.fail_after(30):
            async with emu.client(
                http_backend=backend, retry_policy=FAST, timeout=10.0, max_concurrency=4
            ) as client:
                yield emu, client


def embedding_stats(emu: RunningEmulator, endpoint: str) -> dict[str, int]:
    stats: dict[str, dict[str, int]] = emu.stats()["endpoints"]
    return stats.get(f"embeddings/{endpoint}", {})


async def test_embed_many_texts_in_order(http_backend: str) -> None:
    texts = [f"text number {i}" for i in range(50)]
    async with emulator_and_client(http_backend) as (emu, client):
        whole = await client.embed("embedding-v1", texts)
        one_by_one = [(await client.embed("embedding-v1", [t])).vectors[0] for t in texts[:5]]
        parts = [await client.embed("embedding-v1", texts[i : i + 16]) for i in range(0, 50, 16)]
        large = await client.embed("bge_large_zh", texts[:3], texts_per_request=2)
    assert [item.index for item in whole.data] == list(range(50))
    assert all(len(v) == 384 for v in whole.vectors)
    assert all(math.isclose(math.hypot(*v), 1, rel_tol=1e-6) for v in whole.vectors)
    assert whole.vectors[:5] == one_by_one, "each text's vector, whatever request it went in"
    assert whole.vectors == [v for part in parts for v in part.vectors]
    assert whole.usage.total_tokens == sum(p.usage.total_tokens for p in parts) > 0
    assert embedding_stats(emu, "embedding-v1") == {"ok": 4 + 5 + 4}  # 50 texts: 16+16+16+2
    assert [len(v) for v in large.vectors] == [1024] * 3
    assert embedding_stats(emu, "bge_large_zh") == {"ok": 2}


async def test_too_many_texts_for_a_model_is_the_services_error(http_backend: str) -> None:
    async with emulator_and_client(http_backend) as (emu, client):
        with pytest.raises(wx.InvalidRequestError) as caught:
            await client.embed("tao_8k", ["a", "b"], texts_per_request=2)
        reply = await client.embed("tao_8k", ["a", "b"], texts_per_request=1)
    assert caught.value.code == 336003
    assert embedding_stats(emu, "tao_8k") == {"error_336003": 1, "ok": 2}
    assert len(reply.vectors) == 2 and len(reply.vectors[0]) == 1024


async def test_batch_embed_one_result_per_text(http_backend: str) -> None:
    texts = [f"t{i}" for i in range(40)] + [""]
    async with emulator_and_client(http_backend) as (emu, client):
        results = await client.batch_embed("embedding-v1", texts, concurrency=4)
        expected = (await client.embed("embedding-v1", texts[:40])).vectors
    assert [r.index for r in results] == list(range(41))
    assert [r.response for r in results[:40]] == expected
    assert isinstance(results[40].error, wx.ValidationError)
    assert embedding_stats(emu, "embedding-v1") == {"ok": 3 + 3}


async def test_ernie_fields_are_honoured(http_backend: str) -> None:
    messages = [wx.user("Please introduce The Great Wall")]
    async with emulator_and_client(http_backend) as (_, client):
        styled = await client.chat(ENDPOINT, messages, system="You are a pirate")
        short = await client.chat(ENDPOINT, messages, max_output_tokens=5)
        as_json = await client.chat(ENDPOINT, messages, response_format="json_object")
        async with client.chat_stream(ENDPOINT, messages, max_output_tokens=5) as stream:
            streamed = await stream.collect()
        with pytest.raises(wx.InvalidRequestError):
            await client.chat(ENDPOINT, messages, extra_body={"max_output_tokens": "many"})
    assert styled.result.startswith("[You are a pirate] ")
    assert short.is_truncated and short.finish_reason == "length"
    assert short.usage.completion_tokens == 5
    assert streamed.result == short.result and streamed.is_truncated
    assert streamed.finish_reason == "length"
    assert isinstance(json.loads(as_json.result), dict)
    assert as_json.raw["result"] == as_json.result


async def test_function_call_round_trip(http_backend: str) -> None:
    messages: list[wx.MessageLike] = [wx.user("Use get_weather for Beijing")]
    async with emulator_and_client(http_backend) as (_, client):
        reply = await client.chat(ENDPOINT, messages, functions=[WEATHER])
        assert reply.function_call is not None and reply.finish_reason == "function_call"
        assert reply.function_call.name == "get_weather"
        arguments = reply.function_call.parse_arguments()
        assert isinstance(arguments["location"], str)
        async with client.chat_stream(ENDPOINT, messages, functions=[WEATHER]) as stream:
            streamed = await stream.collect()
        assert stream.function_call == reply.function_call == streamed.function_call
        messages += [reply.message, wx.function_result("get_weather", '{"temperature": 25}')]
        final = await client.chat(ENDPOINT, messages, functions=[WEATHER])
    assert final.function_call is None
    assert final.result.startswith('get_weather returned {"temperature": 25}. ')


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_asgi_mode_embeddings_and_functions(anyio_backend: str) -> None:
    async with run_emulator(asgi=True, seed=3) as emu:
        async with emu.client(retry_policy=FAST) as client:
            reply = await client.embed("embedding-v1", ["a", "b", "c"], texts_per_request=2)
            results = await client.batch_embed("embedding-v1", ["a", "b", "c"])
            call = await client.chat(
                ENDPOINT, [wx.user("Use get_weather please")], functions=[WEATHER]
            )
    assert [r.response for r in results] == reply.vectors
    assert call.function_call is not None and call.function_call.name == "get_weather"


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_readme_round_trip_runs_as_written(anyio_backend: str) -> None:
    [block] = [
        b
        for b in re.findall(r"```python\n(.*?)```", ERNIE_GUIDE.read_text(), re.DOTALL)
        if "function_result" in b and not b.startswith("import json\n\nimport anyio")
    ]
    source = "async def round_trip(client):\n" + textwrap.indent(block, "    ")
    namespace: dict[str, Any] = {"wx": wx}
    exec(compile(source, "docs/guide/ernie.md", "exec"), namespace)
    printed = io.StringIO()
    async with run_emulator(asgi=True, seed=5) as emu:
        async with emu.client(retry_policy=FAST) as client:
            with contextlib.redirect_stdout(printed):
                await namespace["round_trip"](client)
    assert printed.getvalue().startswith("get_weather returned {")
    assert emu.stats()["endpoints"]["chat/ernie-4.0-8k"] == {"ok": 2}


async def test_citations_reach_the_typed_search_info(http_backend: str) -> None:
    messages = [wx.user("Please introduce The Great Wall")]
    async with emulator_and_client(http_backend) as (_, client):
        reply = await client.chat(ENDPOINT, messages, enable_citation=True)
        plain = await client.chat(ENDPOINT, messages)
        async with client.chat_stream(ENDPOINT, messages, enable_citation=True) as stream:
            chunks = [chunk async for chunk in stream]
            streamed = await stream.collect()
    assert reply.search_info is not None and plain.search_info is None
    [result] = reply.search_info.search_results
    assert result.index == 1 and result.url and result.title
    assert reply.raw["search_info"]["search_results"][0]["url"] == result.url
    assert "^[1]^" in reply.result
    assert streamed.search_info == reply.search_info and streamed.result == reply.result
    assert [c.search_info is not None for c in chunks].count(True) >= 1
