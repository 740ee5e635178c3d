"""`mock_wenxin()`'s embeddings and function-call answers: shaped exactly as the emulator's."""

from __future__ import annotations

import json
import math
from typing import Any

import anyio
import httpx
import pytest

from baiduwx_async import testing
from baiduwx_async.emulator import Emulator, EmulatorConfig

URL = "https://wx.test/rpc/2.0/ai_custom/v1/wenxinworkshop"
ASK = [{"role": "user", "content": "Use get_weather for Beijing"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather of a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
}


def emulator_answer(path: str, body: dict[str, Any]) -> httpx.Response:
    """What the emulator answers to `body` (in-process, under asyncio)."""
    emulator = Emulator(EmulatorConfig(seed=1))

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=emulator.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as http:
            params = {"access_token": emulator.issue_token()}
            response = await http.post(
                f"/rpc/2.0/ai_custom/v1/wenxinworkshop/{path}", params=params, json=body
            )
            await response.aread()
            return response

    return anyio.run(main)


def sse_chunks(text: str) -> list[dict[str, Any]]:
    events = text.split("\n\n")
    assert events[-1] == ""
    assert all(e.startswith("data: {") for e in events[:-1])
    return [json.loads(e[len("data: ") :]) for e in events[:-1]]


# --- embeddings ------------------------------------------------------------------------------


@pytest.mark.usefixtures("quiet_raw_httpx")  # bare httpx: tokens in URLs
def test_embed_default_vectors_are_the_emulators() -> None:
    body = {"input": ["hello world", "你好"]}
    with testing.mock_wenxin(base_url="https://wx.test") as mock, httpx.Client() as http:
        route = mock.embed("bge_large_en")
        mocked = http.post(f"{URL}/embeddings/bge_large_en", json=body, headers={"Request_id": "q"})
    real = emulator_answer("embeddings/bge_large_en", body)
    assert route.call_count == 1
    mine, theirs = mocked.json(), real.json()
    assert list(mine) == list(theirs) == ["id", "object", "created", "data", "usage"]
    assert mine["object"] == "embedding_list"
    assert [list(d) for d in mine["data"]] == [list(d) for d in theirs["data"]]
    assert mine["data"] == theirs["data"]  # the very same vectors
    assert len(mine["data"][0]["embedding"]) == 1024
    assert mine["usage"] == theirs["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert mocked.headers["content-type"] == "application/json"
    assert mocked.headers["x-baidu-request-id"] == "q"
    assert mocked.headers["x-ratelimit-limit-tokens"] == "300000"
    assert mock.requests("bge_large_en", kind="embeddings") == [body]


def test_embed_dimension_and_unknown_endpoints() -> None:
    with testing.mock_wenxin(base_url="https://wx.test") as mock, httpx.Client() as http:
        mock.embed("mine")
        mock.embed("small", dimension=8)
        default = http.post(f"{URL}/embeddings/mine", json={"input": ["x"]}).json()
        small = http.post(f"{URL}/embeddings/small", json={"input": ["x", "y"]}).json()
    assert len(default["data"][0]["embedding"]) == 384
    assert [len(d["embedding"]) for d in small["data"]] == [8, 8]
    assert all(math.isclose(math.hypot(*d["embedding"]), 1, abs_tol=1e-8) for d in small["data"])


def test_embed_given_vectors() -> None:
    with testing.mock_wenxin(base_url="https://wx.test") as mock, httpx.Client() as http:
        mock.embed("e", [[1, 0], [0.5, 0.5]], usage={"prompt_tokens": 7}, times=2)
        mock.embed("e", lambda text: [float(len(text)), 1.0])
        given = http.post(f"{URL}/embeddings/e", json={"input": ["a", "bb"]}).json()
        wrong_count = http.post(f"{URL}/embeddings/e", json={"input": ["a"]}).json()
        computed = http.post(f"{URL}/embeddings/e", json={"input": ["abc", "d"]}).json()
    assert given["data"] == [
        {"object": "embedding", "embedding": [1.0, 0.0], "index": 0},
        {"object": "embedding", "embedding": [0.5, 0.5], "index": 1},
    ]
    assert given["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert wrong_count["error_code"] == 336003
    assert wrong_count["error_msg"] == "the mock has 2 vectors for 1 texts"
    assert [d["embedding"] for d in computed["data"]] == [[3.0, 1.0], [1.0, 1.0]]


def test_embeddings_errors_and_bad_arguments() -> None:
    with testing.mock_wenxin(base_url="https://wx.test") as mock, httpx.Client() as http:
        mock.error("e", 336003, kind="embeddings", times=1)
        mock.http_error("e", 503, kind="embeddings", times=1)
        mock.embed("e")
        first = http.post(f"{URL}/embeddings/e", json={"input": ["a"]})
        second = http.post(f"{URL}/embeddings/e", json={"input": ["a"]})
        third = http.post(f"{URL}/embeddings/e", json={"input": ["a"]})
    assert first.json()["error_code"] == 336003
    assert second.status_code == 503
    assert third.json()["object"] == "embedding_list"
    mock = testing.mock_wenxin()
    with pytest.raises(ValueError, match="use embed"):
        mock.stream("e", ["x"], kind="embeddings")
    with pytest.raises(ValueError, match="dimension must be an even integer"):
        mock.embed("e", dimension=7)


# --- function calls --------------------------------------------------------------------------


@pytest.mark.usefixtures("quiet_raw_httpx")  # bare httpx: tokens in URLs
def test_function_call_answer_is_shaped_as_the_emulators() -> None:
    body = {"messages": ASK, "functions": [WEATHER]}
    with testing.mock_wenxin(base_url="https://wx.test") as mock, httpx.Client() as http:
        mock.function_call("ernie", "get_weather", {"location": "北京"}, thoughts="I look it up")
        mocked = http.post(f"{URL}/chat/ernie", json=body).json()
        streamed = http.post(f"{URL}/chat/ernie", json={**body, "stream": True})
    real = emulator_answer("chat/ernie", body).json()
    real_stream = sse_chunks(emulator_answer("chat/ernie", {**body, "stream": True}).text)
    assert list(mocked) == list(real)
    assert mocked["result"] == "" and mocked["finish_reason"] == "function_call"
    assert mocked["function_call"] == {
        "name": "get_weather",
        "arguments": '{"location": "北京"}',
        "thoughts": "I look it up",
    }
    # the arguments' and thoughts' tokens: 北 and 京 one each, and each run of non-spaces
    assert mocked["usage"]["completion_tokens"] == 5 + 4
    chunks = sse_chunks(streamed.text)
    assert [list(c) for c in chunks] == [list(c) for c in real_stream]
    assert chunks[-1]["function_call"] == mocked["function_call"]
    assert chunks[-1]["finish_reason"] == "function_call"
    assert chunks[-1]["is_end"] is True


def test_function_call_arguments_as_text_or_none() -> None:
    with testing.mock_wenxin(base_url="https://wx.test") as mock, httpx.Client() as http:
        mock.function_call("ernie", "ping", times=1)
        mock.function_call("ernie", "get_weather", '{"location": "x"}')
        first = http.post(f"{URL}/chat/ernie", json={"messages": ASK}).json()
        second = http.post(f"{URL}/chat/ernie", json={"messages": ASK}).json()
    assert first["function_call"] == {"name": "ping", "arguments": "{}", "thoughts": ""}
    assert second["function_call"]["arguments"] == '{"location": "x"}'


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_mock_under_both_loops(anyio_backend: str) -> None:
    async with testing.mock_wenxin(base_url="https://wx.test") as mock:
        mock.embed("e")
        mock.function_call("c", "f", {"a": 1})
        async with httpx.AsyncClient() as http:
            vectors = (await http.post(f"{URL}/embeddings/e", json={"input": ["a"]})).json()
            called = (await http.post(f"{URL}/chat/c", json={"messages": ASK})).json()
    assert len(vectors["data"][0]["embedding"]) == 384
    assert json.loads(called["function_call"]["arguments"]) == {"a": 1}
