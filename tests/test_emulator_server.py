"""The emulator over real loopback sockets (uvicorn, asyncio only) and its command line."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from baiduwx_async.emulator import Emulator, EmulatorConfig, main, serve

from .processes import emulator_process, run
from .test_emulator import CHAT, COMPLETIONS, GOOD_CLIENT, MESSAGES, assert_error, assert_ok
from .test_emulator_stream import data_chunks

# These tests speak the wire protocol with bare httpx: see `quiet_raw_httpx`.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("quiet_raw_httpx")]

STREAM = {"messages": MESSAGES, "stream": True}


@pytest.fixture
def anyio_backend() -> str:
    """uvicorn runs on asyncio only."""
    return "asyncio"


async def wait_for(predicate: object, timeout: float = 3.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await anyio.sleep(0.01)


async def test_serve_answers_over_a_socket() -> None:
    emulator = Emulator(EmulatorConfig(seed=1))
    async with serve(emulator) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        assert base_url.startswith("http://127.0.0.1:")
        assert int(base_url.rsplit(":", 1)[1]) > 0
        token = (await http.post("/oauth/2.0/token", params=GOOD_CLIENT)).json()["access_token"]
        params = {"access_token": token}
        whole = assert_ok(await http.post(CHAT, params=params, json={"messages": MESSAGES}))
        lines = []
        async with http.stream("POST", CHAT, params=params, json=STREAM) as response:
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["x-ratelimit-limit-requests"] == "300"
            async for line in response.aiter_lines():
                lines.append(line)
        chunks = data_chunks("\n".join(lines) + "\n")
        assert "".join(c["result"] for c in chunks) == whole["result"]
        assert chunks[-1]["is_end"] is True
        response = await http.post(CHAT, params={"access_token": "nope"}, json=STREAM)
        assert_error(response, 110)
        stats = (await http.get("/_emulator/stats")).json()
        assert stats["endpoints"] == {"chat/mpt30b": {"ok": 2, "error_110": 1}}
    assert emulator.stats()["in_flight"] == 0


async def test_embeddings_and_function_calls_over_a_socket() -> None:
    emulator = Emulator(EmulatorConfig(seed=1))
    embed = CHAT.replace("/chat/mpt30b", "/embeddings/tao_8k")
    function = {
        "name": "get_weather",
        "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    ask = {"messages": [{"role": "user", "content": "get_weather"}], "functions": [function]}
    async with serve(emulator) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        params = {"access_token": emulator.issue_token()}
        body = assert_ok(await http.post(embed, params=params, json={"input": ["长城"]}))
        assert len(body["data"][0]["embedding"]) == 1024
        response = await http.post(embed, params=params, json={"input": ["a", "b"]})
        assert_error(response, 336003)
        called = assert_ok(await http.post(CHAT, params=params, json=ask))
        lines = []
        async with http.stream("POST", CHAT, params=params, json={**ask, "stream": True}) as r:
            async for line in r.aiter_lines():
                lines.append(line)
        chunks = data_chunks("\n".join(lines) + "\n")
    assert called["finish_reason"] == "function_call"
    assert chunks[-1]["function_call"] == called["function_call"]
    assert emulator.stats()["endpoints"] == {
        "embeddings/tao_8k": {"ok": 1, "error_336003": 1},
        "chat/mpt30b": {"ok": 2},
    }


async def test_drop_is_a_transport_error(caplog: pytest.LogCaptureFixture) -> None:
    emulator = Emulator(EmulatorConfig(faults={"drop": 1.0}))
    params = {"access_token": emulator.issue_token()}
    caplog.set_level(logging.WARNING)
    async with serve(emulator) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        for body in ({"messages": MESSAGES}, STREAM):
            with pytest.raises(httpx.RemoteProtocolError, match="disconnected without sending"):
                await http.post(CHAT, params=params, json=body)
        emulator.configure(faults={})
        assert_ok(await http.post(CHAT, params=params, json={"messages": MESSAGES}))
    assert emulator.stats()["endpoints"]["chat/mpt30b"] == {"drop": 2, "ok": 1}
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]


async def test_stream_faults_over_a_socket(caplog: pytest.LogCaptureFixture) -> None:
    emulator = Emulator(EmulatorConfig(faults={"reset_stream": 1.0}))
    params = {"access_token": emulator.issue_token()}
    caplog.set_level(logging.WARNING)
    async with serve(emulator) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        received: list[str] = []

        async def read() -> None:
            async with http.stream("POST", CHAT, params=params, json=STREAM) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    received.append(line)

        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            await read()
        assert received
        assert received[0].startswith("data: {")

        emulator.configure(faults={"cut_stream": 1.0})
        response = await http.post(COMPLETIONS, params=params, json={"prompt": "x", "stream": True})
        chunks = data_chunks(response.text)
        assert chunks
        assert not any(c["is_end"] for c in chunks)
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]


async def test_abandoned_stream_is_counted() -> None:
    emulator = Emulator(EmulatorConfig(tokens_per_second=100.0, sentences_min=5))
    params = {"access_token": emulator.issue_token()}
    async with serve(emulator) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        async with http.stream("POST", CHAT, params=params, json=STREAM) as response:
            async for line in response.aiter_lines():
                assert line.startswith("data: {")
                break  # leave after the first chunk; closing the response drops the connection
        await wait_for(lambda: emulator.stats()["streams_abandoned"] == 1)
        stats = emulator.stats()
        assert stats["endpoints"] == {"chat/mpt30b": {"abandoned": 1}}
        assert stats["in_flight"] == 0
        assert stats["streams_completed"] == 0


async def test_max_in_flight_over_a_socket() -> None:
    emulator = Emulator(EmulatorConfig(latency=0.2))
    params = {"access_token": emulator.issue_token()}
    async with serve(emulator) as base_url, httpx.AsyncClient(base_url=base_url) as http:

        async def one() -> None:
            assert_ok(await http.post(CHAT, params=params, json={"messages": MESSAGES}))

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(one)
    assert emulator.stats()["max_in_flight"] == 8


async def test_serve_propagates_the_body_error() -> None:
    with pytest.raises(KeyError, match="boom"):
        async with serve(Emulator()):
            raise KeyError("boom")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_serve_refuses_trio() -> None:
    with pytest.raises(RuntimeError, match="asyncio"):
        async with serve(Emulator()):
            pass  # pragma: no cover


def test_command_line_help() -> None:
    done = run([sys.executable, "-m", "baiduwx_async.emulator", "--help"], timeout=30)
    assert done.returncode == 0, done.stderr
    assert "--port" in done.stdout
    assert "--config" in done.stdout


def test_command_line_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"qps": -1}')
    with pytest.raises(SystemExit) as caught:
        main(["--config", str(bad)])
    assert caught.value.code == 2
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "missing.json")])


def test_command_line_serves(tmp_path: Path) -> None:
    # --port 0: the server binds a free port and prints the URL it got
    with emulator_process(tmp_path, {"qps": 50, "endpoints": ["m"]}) as base_url:
        answer = httpx.get(f"{base_url}/_emulator/config", timeout=5)
    assert answer.json()["qps"] == 50
    assert answer.json()["endpoints"] == ["m"]
