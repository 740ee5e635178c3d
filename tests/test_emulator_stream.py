"""Emulator streams (framing, options) and rate limits, over httpx.ASGITransport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from baiduwx_async.emulator import Emulator, EmulatorConfig

from .support import FakeClock
from .test_emulator import (
    CHAT,
    COMPLETIONS,
    ID_RE,
    MESSAGES,
    assert_error,
    assert_ok,
    call,
)

# These tests speak the wire protocol with bare httpx: see `quiet_raw_httpx`.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("quiet_raw_httpx")]

ENVELOPE = [
    "id",
    "object",
    "created",
    "sentence_id",
    "is_end",
    "is_truncated",
    "result",
    "need_clear_history",
    "finish_reason",
    "usage",
]
RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
)


def sse_events(text: str) -> list[str]:
    """The events of an SSE body, checking the `...\\n\\n` framing."""
    assert text.endswith("\n\n"), text[-50:]
    events = text[:-2].split("\n\n")
    assert all(event and "\n" not in event for event in events), events
    return events


def data_chunks(text: str) -> list[dict[str, Any]]:
    """Every event must be `data: ` + one-line JSON."""
    chunks = []
    for event in sse_events(text):
        assert event.startswith("data: {"), event
        chunks.append(json.loads(event[len("data: ") :]))
    return chunks


@pytest.fixture
def emu(clock: FakeClock) -> Emulator:
    return Emulator(EmulatorConfig(seed=11), clock=clock)


# --- framing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "object_name"),
    [
        (CHAT, {"messages": MESSAGES}, "chat.completion"),
        (COMPLETIONS, {"prompt": "Introduce the city Beijing"}, "completion"),
    ],
)
async def test_stream_framing(
    client: httpx.AsyncClient, token: str, path: str, body: dict[str, Any], object_name: str
) -> None:
    whole = assert_ok(await call(client, token, body, path=path))
    response = await call(client, token, {**body, "stream": True}, path=path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    for name in RATE_HEADERS:
        assert int(response.headers[name]) >= 0
    chunks = data_chunks(response.text)
    assert len(chunks) >= 2
    for index, chunk in enumerate(chunks):
        assert list(chunk) == ENVELOPE
        assert chunk["id"] == chunks[0]["id"]
        assert ID_RE.fullmatch(chunk["id"])
        assert chunk["object"] == object_name
        assert chunk["sentence_id"] == index
        assert chunk["is_end"] is (index == len(chunks) - 1)
        assert chunk["is_truncated"] is False
        assert chunk["need_clear_history"] is False
        assert chunk["finish_reason"] == "normal"
        usage = chunk["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        if index:
            previous = chunks[index - 1]["usage"]["completion_tokens"]
            assert usage["completion_tokens"] > previous
    assert "".join(c["result"] for c in chunks) == whole["result"]
    assert chunks[-1]["usage"] == whole["usage"]
    assert chunks[0]["id"] != whole["id"]


async def test_stream_options(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    body = {"messages": MESSAGES, "stream": True}
    expected = assert_ok(await call(client, token, {"messages": MESSAGES}))

    emu.configure(sse_keepalive=True, sse_done=True)
    events = sse_events((await call(client, token, body)).text)
    assert events[-1] == "data: [DONE]"
    assert events[0] == ": keep-alive"
    data = [e for e in events if e.startswith("data: {")]
    assert events.count(": keep-alive") == len(data)
    chunks = [json.loads(e[6:]) for e in data]
    assert "".join(c["result"] for c in chunks) == expected["result"]
    assert chunks[-1]["is_end"] is True

    emu.configure(sse_keepalive=False, sse_done=False, stream_empty_end=True)
    chunks = data_chunks((await call(client, token, body)).text)
    assert [c["is_end"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1]["result"] == ""
    assert chunks[-1]["sentence_id"] == len(chunks) - 1
    assert "".join(c["result"] for c in chunks) == expected["result"]
    assert chunks[-1]["usage"] == expected["usage"]


async def test_sentence_id_zero_on_every_chunk(
    client: httpx.AsyncClient, emu: Emulator, token: str
) -> None:
    body = {"messages": MESSAGES, "stream": True}
    numbered = data_chunks((await call(client, token, body)).text)
    assert len(numbered) >= 2
    emu.configure(stream_sentence_id_zero=True)
    chunks = data_chunks((await call(client, token, body)).text)
    assert [c["sentence_id"] for c in chunks] == [0] * len(numbered)
    assert [c["result"] for c in chunks] == [c["result"] for c in numbered]
    assert [c["is_end"] for c in chunks] == [c["is_end"] for c in numbered]
    assert (await client.get("/_emulator/config")).json()["stream_sentence_id_zero"] is True


@pytest.mark.parametrize(
    ("token_value", "body", "code"),
    [
        ("bad", {"messages": MESSAGES, "stream": True}, 110),
        (None, {"messages": [], "stream": True}, 336003),
        (None, {"messages": [{"role": "user", "content": "x" * 4801}], "stream": True}, 336003),
    ],
)
async def test_stream_errors_at_start_are_one_line_json(
    client: httpx.AsyncClient, token: str, token_value: str | None, body: Any, code: int
) -> None:
    response = await call(client, token_value or token, body)
    assert_error(response, code)
    for name in RATE_HEADERS:
        assert name in response.headers


# --- rate limits -----------------------------------------------------------------------------


async def test_rate_limit_headers(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    first = await call(client, token, {"messages": MESSAGES})
    usage = first.json()["usage"]
    assert first.headers["x-ratelimit-limit-requests"] == "300"
    assert first.headers["x-ratelimit-limit-tokens"] == "300000"
    assert first.headers["x-ratelimit-remaining-requests"] == "299"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 300000 - usage["total_tokens"]
    error = await call(client, None, {"messages": MESSAGES})
    assert error.headers["x-ratelimit-remaining-requests"] == "299"  # refused calls don't count
    emu.configure(rpm=50, tpm=5000)
    stream = await call(client, token, {"messages": MESSAGES, "stream": True})
    assert stream.headers["x-ratelimit-limit-requests"] == "50"
    assert stream.headers["x-ratelimit-limit-tokens"] == "5000"
    assert stream.headers["x-ratelimit-remaining-requests"] == "48"
    emu.configure(rpm=None, tpm=None, advertised_rpm=10_000, advertised_tpm=10_000_000)
    response = await call(client, token, {"prompt": "x"}, path=COMPLETIONS)
    assert response.headers["x-ratelimit-limit-requests"] == "10000"
    assert response.headers["x-ratelimit-limit-tokens"] == "10000000"


async def test_qps_limit(
    client: httpx.AsyncClient, emu: Emulator, clock: FakeClock, token: str
) -> None:
    emu.configure(qps=2)
    body = {"messages": MESSAGES}
    assert_ok(await call(client, token, body))
    clock.now += 0.5
    assert_ok(await call(client, token, body))
    assert_error(await call(client, token, body), 18, "Open api qps request limit reached")
    clock.now += 0.6  # the first call left the 1-second window
    assert_ok(await call(client, token, body))
    assert_error(await call(client, token, body), 18)
    assert emu.stats()["endpoints"]["chat/mpt30b"] == {"ok": 3, "error_18": 2}


async def test_rpm_tpm_and_quotas(
    client: httpx.AsyncClient, emu: Emulator, clock: FakeClock, token: str
) -> None:
    body = {"messages": MESSAGES}
    emu.configure(rpm=2)
    assert_ok(await call(client, token, body))
    assert_ok(await call(client, token, body))
    response = await call(client, token, body)
    assert_error(response, 336501, "Rate limit reached for RPM")
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 61
    assert_ok(await call(client, token, body))

    emu.configure(rpm=None)
    clock.now += 61
    cost = assert_ok(await call(client, token, body))["usage"]["total_tokens"]
    clock.now += 61
    emu.configure(tpm=2 * cost)
    assert_ok(await call(client, token, body))
    assert_ok(await call(client, token, body))
    assert_error(await call(client, token, body), 336502, "Rate limit reached for TPM")

    emu.configure(tpm=None)
    emu.reset_limits()
    emu.configure(daily_quota=1)
    assert_ok(await call(client, token, body))
    assert_error(await call(client, token, body), 17, "Open api daily request limit reached")
    clock.now += 86400
    assert_ok(await call(client, token, body))

    emu.configure(daily_quota=None, total_quota=3)
    assert_ok(await call(client, token, body))
    assert_error(await call(client, token, body), 19, "Open api total request limit reached")
    clock.now += 86400
    assert_error(await call(client, token, body), 19)
    assert (await client.post("/_emulator/reset_limits")).json() == {"ok": True}
    assert_ok(await call(client, token, body))
