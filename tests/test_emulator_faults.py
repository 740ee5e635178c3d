"""Emulator faults, speed, statistics and run-time configuration, over httpx.ASGITransport."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
import pytest

from baiduwx_async.emulator import (
    FAULT_NAMES,
    STREAM_FAULTS,
    ConnectionDropped,
    Emulator,
    EmulatorConfig,
)

from .support import FakeClock
from .test_emulator import (
    COMPLETIONS,
    MESSAGES,
    asgi_client,
    assert_error,
    assert_ok,
    call,
)
from .test_emulator_stream import RATE_HEADERS, data_chunks, sse_events

# These tests speak the wire protocol with bare httpx: see `quiet_raw_httpx`.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("quiet_raw_httpx")]

BODY = {"messages": MESSAGES}
STREAM = {"messages": MESSAGES, "stream": True}


@pytest.fixture
def emu(clock: FakeClock) -> Emulator:
    return Emulator(EmulatorConfig(seed=5), clock=clock)


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_http_faults(
    client: httpx.AsyncClient, emu: Emulator, token: str, status: int
) -> None:
    emu.configure(faults={f"http_{status}": 1.0}, retry_after=7)
    for body in (BODY, STREAM):
        response = await call(client, token, body, headers={"Request_id": "r1"})
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["x-baidu-request-id"] == "r1"
        assert all(name in response.headers for name in RATE_HEADERS)
        assert ("retry-after" in response.headers) is (status == 429)
    if status == 429:
        assert response.headers["retry-after"] == "7"
    stats = emu.stats()
    assert stats["endpoints"]["chat/mpt30b"] == {f"http_{status}": 2}
    assert stats["faults"] == {f"http_{status}": 2}


@pytest.mark.parametrize("code", [1, 2, 4, 15, 336000, 336100])
async def test_error_code_faults(
    client: httpx.AsyncClient, emu: Emulator, token: str, code: int
) -> None:
    emu.configure(faults={f"error_{code}": 1.0})
    assert_error(await call(client, token, BODY), code)
    assert_error(await call(client, token, STREAM), code)  # error at stream start: plain JSON
    assert_error(await call(client, token, {"prompt": "x"}, path=COMPLETIONS), code)
    if code == 336100:
        assert (await call(client, token, BODY)).json()["error_msg"] == "high load"


async def test_drop(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    emu.configure(faults={"drop": 1.0})
    for body in (BODY, STREAM):
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await call(client, token, body)
        assert isinstance(caught.value, ConnectionDropped)
    assert emu.stats()["endpoints"]["chat/mpt30b"] == {"drop": 2}
    assert emu.stats()["in_flight"] == 0


async def test_reset_stream(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    emu.configure(faults={"reset_stream": 1.0})
    with pytest.raises(ConnectionDropped):
        await call(client, token, STREAM)
    assert_ok(await call(client, token, BODY))  # stream faults spare non-stream calls
    assert emu.stats()["endpoints"]["chat/mpt30b"] == {"reset_stream": 1, "ok": 1}


async def test_slow_first_byte(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    emu.configure(faults={"slow_first_byte": 1.0}, slow_seconds=0.15)
    for body in (BODY, STREAM):
        started = time.monotonic()
        response = await call(client, token, body)
        assert time.monotonic() - started >= 0.15
        assert response.status_code == 200
        assert "error_code" not in response.text
    assert emu.stats()["faults"] == {"slow_first_byte": 2}
    assert emu.stats()["outcomes"] == {"ok": 2}


async def test_cut_stream(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    whole = data_chunks((await call(client, token, STREAM)).text)
    emu.configure(faults={"cut_stream": 1.0})
    cut = data_chunks((await call(client, token, STREAM)).text)
    assert 1 <= len(cut) < len(whole)
    assert not any(c["is_end"] for c in cut)
    assert [c["result"] for c in cut] == [c["result"] for c in whole[: len(cut)]]
    assert_ok(await call(client, token, BODY))


async def test_malformed_line(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    emu.configure(faults={"malformed_line": 1.0})
    events = sse_events((await call(client, token, STREAM)).text)
    bad = []
    chunks = []
    for event in events:
        assert event.startswith("data: ")
        try:
            chunks.append(json.loads(event[6:]))
        except ValueError:
            bad.append(event)
    assert len(bad) == 1
    assert events[1] == bad[0]
    assert chunks[-1]["is_end"] is True
    assert emu.stats()["outcomes"] == {"malformed_line": 1}


@pytest.mark.parametrize(
    ("fault", "prefix"), [("midstream_error", "data: "), ("midstream_error_line", "")]
)
async def test_midstream_errors(
    client: httpx.AsyncClient, emu: Emulator, token: str, fault: str, prefix: str
) -> None:
    emu.configure(faults={fault: 1.0})
    response = await call(client, token, STREAM)
    assert response.headers["content-type"] == "text/event-stream"
    events = sse_events(response.text)
    assert len(events) >= 2
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert not any(c["is_end"] for c in chunks)
    assert events[-1].startswith(prefix + "{")
    error = json.loads(events[-1][len(prefix) :])
    assert error["error_code"] == 336100
    assert error["error_msg"] == "high load"
    assert error["id"] == chunks[0]["id"]


async def test_fault_fractions_are_seeded() -> None:
    faults = {"http_500": 0.3, "error_2": 0.2}

    async def outcomes(seed: int) -> list[int | None]:
        emulator = Emulator(EmulatorConfig(seed=seed, faults=faults))
        token = emulator.issue_token()
        seen: list[int | None] = []
        async with asgi_client(emulator) as http:
            for _ in range(200):
                response = await call(http, token, BODY)
                code = response.json().get("error_code") if response.status_code == 200 else None
                seen.append(response.status_code if code is None else code)
        return seen

    first, second, other = await outcomes(1), await outcomes(1), await outcomes(2)
    assert first == second
    assert first != other
    assert 30 <= first.count(500) <= 90
    assert 15 <= first.count(2) <= 70
    assert first.count(200) + first.count(500) + first.count(2) == 200


def test_fault_names() -> None:
    assert {"http_500", "http_502", "http_503", "http_429", "drop", "cut_stream"} <= FAULT_NAMES
    assert STREAM_FAULTS <= FAULT_NAMES
    with pytest.raises(ValueError, match="bogus"):
        EmulatorConfig(faults={"bogus": 0.1})
    with pytest.raises(ValueError, match="at most 1"):
        EmulatorConfig(faults={"http_500": 0.6, "drop": 0.6})
    with pytest.raises(ValueError, match="fraction"):
        EmulatorConfig(faults={"http_500": -0.1})


# --- speed, concurrency, statistics ----------------------------------------------------------


async def test_latency_and_max_in_flight(
    client: httpx.AsyncClient, emu: Emulator, token: str
) -> None:
    emu.configure(latency=0.2)
    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(call, client, token, BODY)
    assert time.monotonic() - started < 0.9  # concurrent, not 6 x 0.2 s
    stats = emu.stats()
    assert stats["max_in_flight"] == 6
    assert stats["in_flight"] == 0
    assert stats["endpoints"] == {"chat/mpt30b": {"ok": 6}}


async def test_generation_speed(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    tokens = assert_ok(await call(client, token, BODY))["usage"]["completion_tokens"]
    emu.configure(tokens_per_second=tokens / 0.2, first_token_latency=0.1)
    for body in (BODY, STREAM):
        started = time.monotonic()
        await call(client, token, body)
        assert 0.29 <= time.monotonic() - started < 1.5


async def test_stats(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    await client.get("/oauth/2.0/token", params={"client_id": "x"})
    assert_ok(await call(client, token, BODY))
    assert data_chunks((await call(client, token, STREAM)).text)[-1]["is_end"] is True
    assert_ok(await call(client, token, {"prompt": "hello"}, path=COMPLETIONS))
    assert_error(await call(client, None, BODY), 110)
    assert_error(await call(client, token, {}, path=COMPLETIONS), 336001)
    assert_error(await call(client, token, BODY, path="/nope"), 3)
    stats = emu.stats()
    assert stats["token_requests"] == 1
    assert stats["calls"] == 6
    assert stats["endpoints"] == {
        "chat/mpt30b": {"ok": 2, "error_110": 1},
        "completions/pythia12b": {"ok": 1, "error_336001": 1},
        "(unknown)": {"error_3": 1},
    }
    assert stats["outcomes"] == {"ok": 3, "error_110": 1, "error_336001": 1, "error_3": 1}
    assert stats["streams_started"] == stats["streams_completed"] == 1
    assert stats["streams_abandoned"] == 0
    assert stats["prompt_tokens"] == 5 + 5 + 1
    assert stats["requests_per_second"] > 0
    assert json.loads(json.dumps(stats)) == stats

    over_http = (await client.get("/_emulator/stats")).json()
    assert over_http["endpoints"] == stats["endpoints"]
    assert (await client.post("/_emulator/reset_stats")).json() == {"ok": True}
    assert emu.stats()["calls"] == 0
    assert emu.stats()["endpoints"] == {}
    emu.reset_stats()
    assert emu.stats()["token_requests"] == 0


# --- configuration ---------------------------------------------------------------------------


async def test_config_route(client: httpx.AsyncClient, emu: Emulator) -> None:
    current = (await client.get("/_emulator/config")).json()
    assert current["token_lifetime"] == 2592000
    assert current["credentials"] == {"test-api-key": "test-secret-key"}
    response = await client.post("/_emulator/config", json={"qps": 5, "endpoints": ["a", "b"]})
    assert response.status_code == 200
    assert response.json()["endpoints"] == ["a", "b"]
    assert emu.config.qps == 5
    assert emu.config.endpoints == {"a", "b"}
    for bad in ({"nope": 1}, {"qps": -1}, [1], {"faults": {"zzz": 1}}):
        response = await client.post("/_emulator/config", json=bad)
        assert response.status_code == 400
        assert "error" in response.json()
    response = await client.post("/_emulator/config", json={"nope": 1})
    assert "nope" in response.json()["error"]
    assert emu.config.qps == 5


def test_configure_validates() -> None:
    emulator = Emulator()
    with pytest.raises(TypeError, match="frobnicate"):
        emulator.configure(frobnicate=1)
    with pytest.raises(ValueError, match="qps"):
        emulator.configure(qps=0, rpm=10)
    assert emulator.config.rpm is None  # nothing applied
    emulator.configure(sentences_min=8, sentences_max=10)  # checked together
    assert (emulator.config.sentences_min, emulator.config.sentences_max) == (8, 10)
    with pytest.raises(ValueError, match="sentences_min"):
        emulator.configure(sentences_min=11)
    with pytest.raises(ValueError, match="tokens_per_second"):
        emulator.config.tokens_per_second = -1.0
    with pytest.raises(ValueError, match="rpm"):
        emulator.config.rpm = True
    emulator.config.fail_prompts = {"x": 2}
    assert emulator.config.fail_prompts == {"x": 2}
    with pytest.raises(ValueError, match="oauth_error_status"):
        EmulatorConfig(oauth_error_status=99)


async def test_reseed(clock: FakeClock) -> None:
    emulator = Emulator(EmulatorConfig(seed=1), clock=clock)
    token = emulator.issue_token()
    async with asgi_client(emulator) as http:
        emulator.configure(seed=42)
        first = (await call(http, token, BODY)).json()["id"]
        emulator.configure(seed=42)
        assert (await call(http, token, BODY)).json()["id"] == first


async def test_emulator_routes_are_not_model_calls(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    await client.get("/_emulator/stats")
    await client.get("/_emulator/config")
    stats: dict[str, Any] = emu.stats()
    assert stats["calls"] == 0
