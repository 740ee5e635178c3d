"""The client against the emulator's faults over real loopback sockets: every fault of
`FAULT_NAMES` is retried through or reported; abandoned streams; server-side validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import attrs
import pytest

import baiduwx_async as wx
from baiduwx_async.emulator import FAULT_NAMES, STREAM_FAULTS

from .integration_support import (
    COMPLETIONS,
    ENDPOINT,
    FAST,
    MESSAGES,
    PROMPT,
    both_backends,
    emulator_and_client,
    endpoint_stats,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("http_backend")]
pytest_generate_tests = both_backends


@pytest.fixture
def anyio_backend() -> str:
    """uvicorn runs on asyncio only."""
    return "asyncio"


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


#: Faults a call survives by retrying: what the emulator records as the call's outcome.
RETRYABLE = {
    "http_500": "http_500",
    "http_502": "http_502",
    "http_503": "http_503",
    "http_429": "http_429",
    "error_1": "error_1",
    "error_2": "error_2",
    "error_4": "error_4",
    "error_15": "error_15",
    "error_336100": "error_336100",
    "drop": "drop",
    "slow_first_byte": "ok",  # the answer comes, too late for the client's read timeout
}
#: Faults that answer "too many requests".
THROTTLING = {"http_429", "error_4"}
#: Stream faults that come after a chunk reached the caller: reported, never retried.
REPORTED = {
    "cut_stream": wx.StreamError,
    "reset_stream": wx.TransportError,
    "malformed_line": wx.StreamError,
    "midstream_error": wx.ServerError,
    "midstream_error_line": wx.ServerError,
}


def test_every_fault_is_covered() -> None:
    assert set(RETRYABLE) | set(REPORTED) | {"error_336000"} == FAULT_NAMES
    assert set(REPORTED) == STREAM_FAULTS


@pytest.mark.parametrize("fault", sorted(RETRYABLE))
async def test_retryable_fault_is_retried_through(fault: str) -> None:
    settings: dict[str, Any] = {
        "faults": {fault: 0.3},
        "seed": 11,
        "retry_after": 0,
        "slow_seconds": 0.25,
    }
    client: dict[str, object] = {}
    if fault == "slow_first_byte":
        client["timeout"] = 0.1
    if fault in THROTTLING:
        # Random rate-limit answers, whatever the rate, would send the adaptive limiter
        # down to a crawl (it is tested with real limits in test_integration.py).
        client["rate_limiter"] = wx.NoLimit()
    async with emulator_and_client(client=client, **settings) as (emu, client_):
        replies = [await client_.chat(ENDPOINT, [wx.user(f"question {i}")]) for i in range(12)]
        plain = await client_.chat(ENDPOINT, MESSAGES)
        streamed = [await client_.chat_stream(ENDPOINT, MESSAGES).collect() for _ in range(4)]
    assert all(reply.result for reply in replies)
    assert all(s.result == plain.result and s.usage == plain.usage for s in streamed)
    stats = emu.stats()
    assert stats["faults"][fault] >= 2
    assert set(stats["faults"]) == {fault}
    outcomes = endpoint_stats(emu)
    if fault == "slow_first_byte":
        # the slow answers still finish (or are counted as abandoned), too late
        assert outcomes["ok"] + outcomes.get("abandoned", 0) == 17 + stats["faults"][fault]
        assert stats["streams_completed"] >= 4
    else:
        assert outcomes == {"ok": 17, RETRYABLE[fault]: stats["faults"][fault]}
        assert stats["streams_completed"] == 4


async def test_internal_error_336000_is_retried_once_only() -> None:
    async with emulator_and_client(faults={"error_336000": 1.0}) as (emu, client):
        with pytest.raises(wx.ServerError) as caught:
            await client.chat(ENDPOINT, MESSAGES)
        emu.configure(faults={"error_336000": 0.0})
        reply = await client.chat(ENDPOINT, MESSAGES)
    assert caught.value.code == 336000
    assert reply.result
    assert endpoint_stats(emu) == {"error_336000": 2, "ok": 1}


async def test_retry_after_of_a_429_is_honoured() -> None:
    async with emulator_and_client(faults={"http_429": 1.0}, retry_after=1) as (emu, client):

        async def heal() -> None:
            await wait_until(lambda: emu.stats()["calls"] >= 1)
            emu.configure(faults={})

        async with anyio.create_task_group() as group:
            group.start_soon(heal)
            started = anyio.current_time()
            reply = await client.chat(ENDPOINT, MESSAGES)
            elapsed = anyio.current_time() - started
    assert reply.result
    assert elapsed >= 0.95  # FAST backoff alone waits at most 5 ms
    assert endpoint_stats(emu) == {"http_429": 1, "ok": 1}


@pytest.mark.parametrize("fault", sorted(REPORTED))
async def test_stream_fault_after_a_chunk_is_reported(fault: str) -> None:
    settings: dict[str, Any] = {"faults": {fault: 1.0}, "sentences_min": 4, "sentences_max": 4}
    async with emulator_and_client(**settings) as (emu, client):
        plain = await client.chat(ENDPOINT, MESSAGES)  # plain calls never meet stream faults
        chunks: list[wx.ChatChunk] = []
        with pytest.raises(REPORTED[fault]) as caught:
            async with client.chat_stream(ENDPOINT, MESSAGES) as stream:
                async for chunk in stream:
                    chunks.append(chunk)
        await wait_until(lambda: emu.stats()["in_flight"] == 0)
        after = await client.chat(ENDPOINT, MESSAGES)  # the client is fine afterwards
    # the fault falls after half the sentences (a malformed line follows the first one)
    assert len(chunks) == (1 if fault == "malformed_line" else 2)
    assert plain.result.startswith("".join(c.result for c in chunks))
    assert after.result == plain.result
    if isinstance(caught.value, wx.APIError):
        assert caught.value.code == 336100
    if isinstance(caught.value, wx.StreamError):
        assert not caught.value.retryable
    stats = emu.stats()
    assert stats["faults"] == {fault: 1}
    # The stream was not retried. A client that closes on the fault before the server has
    # written the rest makes the server count it abandoned instead (aiohttp often does).
    assert endpoint_stats(emu) in ({"ok": 2, fault: 1}, {"ok": 2, "abandoned": 1})
    assert stats["streams_started"] == 1 and stats["streams_completed"] == 0


async def test_stream_faults_do_not_touch_plain_calls() -> None:
    faults = {name: 0.2 for name in sorted(STREAM_FAULTS)}
    async with emulator_and_client(faults=faults) as (emu, client):
        for i in range(10):
            await client.complete(COMPLETIONS, f"{PROMPT} {i}")
    assert emu.stats()["faults"] == {}
    assert endpoint_stats(emu, f"completions/{COMPLETIONS}") == {"ok": 10}


# --- abandoned streams


@pytest.mark.parametrize("how", ["break", "cancel"])
async def test_abandoned_stream_frees_its_connection(how: str) -> None:
    """One connection, one place in flight: a leaked stream would block the next call."""
    settings: dict[str, Any] = {"tokens_per_second": 100.0, "sentences_min": 6, "sentences_max": 6}
    async with emulator_and_client(client={"max_concurrency": 1}, **settings) as (emu, client):
        seen: list[str] = []
        if how == "break":
            async with client.chat_stream(ENDPOINT, MESSAGES) as stream:
                async for chunk in stream:
                    seen.append(chunk.result)
                    break
        else:
            with anyio.move_on_after(0.25):
                async with client.chat_stream(ENDPOINT, MESSAGES) as stream:
                    async for chunk in stream:
                        seen.append(chunk.result)
        await wait_until(lambda: emu.stats()["streams_abandoned"] == 1)
        emu.configure(tokens_per_second=None)
        with anyio.fail_after(5):
            replies = [await client.chat(ENDPOINT, MESSAGES) for _ in range(3)]
            collected = await client.chat_stream(ENDPOINT, MESSAGES).collect()
    assert 1 <= len(seen) < 6
    assert all(reply.result == collected.result for reply in replies)
    assert collected.result.startswith("".join(seen))
    stats = emu.stats()
    assert stats["streams_started"] == 2
    assert stats["streams_abandoned"] == 1
    assert stats["streams_completed"] == 1
    assert stats["in_flight"] == 0
    assert endpoint_stats(emu) == {"abandoned": 1, "ok": 4}


async def test_stream_silent_before_its_first_chunk_is_retried_then_reported() -> None:
    """The read timeout is the longest silence between chunks: the first chunk is slower,
    so every attempt times out; each is retried, as nothing reached the caller."""
    policy = attrs.evolve(FAST, max_retries=2)
    settings: dict[str, Any] = {"tokens_per_second": 20.0, "sentences_min": 2}
    options = {"timeout": 0.2, "retry_policy": policy}
    async with emulator_and_client(client=options, **settings) as (emu, client):
        with pytest.raises(wx.RequestTimeoutError):
            await client.chat_stream(ENDPOINT, MESSAGES).collect()
        await wait_until(lambda: emu.stats()["in_flight"] == 0)
    stats = emu.stats()
    assert stats["streams_started"] == stats["streams_abandoned"] == 3
    assert endpoint_stats(emu) == {"abandoned": 3}


async def test_client_gone_before_a_slow_first_byte_is_not_a_completed_stream() -> None:
    settings: dict[str, Any] = {"faults": {"slow_first_byte": 1.0}, "slow_seconds": 0.3}
    client_options = {"timeout": 0.1, "max_retries": 0}
    async with emulator_and_client(client=client_options, **settings) as (emu, client):
        with pytest.raises(wx.RequestTimeoutError):
            await client.chat_stream(ENDPOINT, MESSAGES).collect()
        await anyio.sleep(0.4)
        await wait_until(lambda: emu.stats()["in_flight"] == 0)
    stats = emu.stats()
    assert stats["streams_completed"] == 0
    assert stats["streams_abandoned"] == 1
    assert stats["completion_tokens"] == 0


# --- the server's own checks


async def test_server_validation_when_the_client_checks_are_off() -> None:
    async with emulator_and_client(client={"max_input_chars": None}) as (emu, client):
        long_history = [wx.user("a" * 2000), wx.assistant("b" * 2000), wx.user("c" * 2000)]
        with pytest.raises(wx.InvalidRequestError) as total:
            await client.chat(ENDPOINT, long_history)
        with pytest.raises(wx.InvalidRequestError) as question:
            await client.chat(ENDPOINT, [wx.user("q" * 5000)])
        with pytest.raises(wx.InvalidRequestError) as streamed:
            async with client.chat_stream(ENDPOINT, long_history):
                pass
    assert total.value.code == 336007
    assert "4800" in total.value.message
    assert question.value.code == 336003
    assert question.value.message == "the max length of current question is 4800"
    assert streamed.value.code == 336007
    assert endpoint_stats(emu) == {"error_336007": 2, "error_336003": 1}  # none retried


async def test_client_checks_stop_the_same_requests_before_sending() -> None:
    async with emulator_and_client() as (emu, client):
        with pytest.raises(wx.ValidationError, match="4800"):
            await client.chat(
                ENDPOINT, [wx.user("a" * 2000), wx.assistant("b"), wx.user("c" * 2801)]
            )
    assert emu.stats()["calls"] == 0
    assert emu.stats()["token_requests"] == 0


async def test_routing_and_permission_answers() -> None:
    settings: dict[str, Any] = {
        "endpoints": {ENDPOINT, "secret"},
        "forbidden_endpoints": {"secret"},
    }
    async with emulator_and_client(**settings) as (emu, client):
        with pytest.raises(wx.InvalidRequestError) as unknown:
            await client.chat("nope", MESSAGES)
        with pytest.raises(wx.PermissionDeniedError) as forbidden:
            await client.chat("secret", MESSAGES)
        assert (await client.chat(ENDPOINT, MESSAGES)).result
    assert unknown.value.code == 336005
    assert forbidden.value.code == 6
    stats = emu.stats()["endpoints"]
    assert stats == {
        "chat/nope": {"error_336005": 1},
        "chat/secret": {"error_6": 1},
        f"chat/{ENDPOINT}": {"ok": 1},
    }


async def test_fail_prompts_errors_are_classified() -> None:
    fail = {"overloaded": 336100, "quota": 19, "auth": 13}
    async with emulator_and_client(fail_prompts=fail) as (emu, client):
        with pytest.raises(wx.ServerError):
            await client.complete(COMPLETIONS, "overloaded")
        with pytest.raises(wx.QuotaExceededError):
            await client.complete(COMPLETIONS, "quota")
        with pytest.raises(wx.AuthenticationError):
            await client.complete(COMPLETIONS, "auth")
    outcomes = endpoint_stats(emu, f"completions/{COMPLETIONS}")
    assert outcomes == {"error_336100": 1 + FAST.max_retries, "error_19": 1, "error_13": 1}
