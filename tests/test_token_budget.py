"""The tokens-per-minute budget in one process: estimates, the sliding window and its pace,
settlement of answers, streams and failures, the service's headers and 336502 answers.

Against the emulator the minute is shrunk: the emulator's clock runs `SCALE` times faster
than real time, and the client's token window lasts 60/`SCALE` real seconds, so one real
second holds a whole budget minute of both."""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async._params import NO_EXTRAS
from baiduwx_async._token_budget import DEFAULT_ANSWER_ROOM, TokenWindow
from baiduwx_async.emulator import Emulator, EmulatorConfig

from .support import (
    COMPLETIONS_URL,
    TOKEN_URL,
    completion_body,
    error_body,
    make_client,
    token_body,
)

pytestmark = pytest.mark.anyio

EMULATOR_URL = "http://emulator.localhost"
SCALE = 60.0  # emulator seconds per real second
WORDS = [
    "quiet",
    "river",
    "city",
    "garden",
    "library",
    "engineer",
    "teacher",
    "machine",
    "bridge",
    "market",
]


def scaled_emulator(scale: float = SCALE, **config: Any) -> Emulator:
    start = time.time()
    return Emulator(
        EmulatorConfig(seed=7, **config),
        clock=lambda: start + (time.time() - start) * scale,
    )


def budget_client(
    emulator: Emulator, tpm: int | None, scale: float = SCALE, **kwargs: Any
) -> wx.AsyncClient:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app))
    limiter: wx.RateLimiter = wx.AdaptiveRateLimiter(tpm=tpm, token_window=60.0 / scale)
    return wx.AsyncClient(
        credentials=wx.OAuthCredentials("test-api-key", "test-secret-key"),
        base_url=EMULATOR_URL,
        http_client=http,
        rate_limiter=limiter,
        retry_policy=wx.RetryPolicy(max_retries=2, initial_backoff=0.001, max_backoff=0.002),
        **kwargs,
    )


def mixed_prompts(count: int, seed: int = 3) -> list[str]:
    """Prompts of 20 to 600 words: the emulator counts one token per word."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(20, 600))) for _ in range(count)]


def budget(client: wx.AsyncClient) -> TokenWindow:
    limiter = client._sender.limiter
    assert isinstance(limiter, wx.AdaptiveRateLimiter) and limiter.tokens is not None
    return limiter.tokens


# --- the estimate


def test_default_estimate_counts_characters_and_the_answers_room() -> None:
    assert wx.estimate_tokens({"prompt": "a" * 30}) == 10 + DEFAULT_ANSWER_ROOM
    assert wx.estimate_tokens({"prompt": "a" * 31, "max_output_tokens": 50}) == 11 + 50
    # one token per ideograph, the rest by 3 characters
    chat = {"messages": [{"role": "user", "content": "你好世界abc"}], "max_output_tokens": 9}
    assert wx.estimate_tokens(chat) == 4 + 1 + 9
    chat["system"] = "你" * 5
    assert wx.estimate_tokens(chat) == 5 + 4 + 1 + 9
    assert wx.estimate_tokens({"input": ["abcdef", "你好"]}) == 2 + 2, "no answer room"


def test_default_estimate_is_not_below_the_emulators_count() -> None:
    from baiduwx_async.emulator._text import count_tokens

    for prompt in mixed_prompts(50):
        assert wx.estimate_tokens({"prompt": prompt, "max_output_tokens": 1}) > count_tokens(prompt)


@pytest.mark.parametrize("bad", [0, -1, float("inf"), True, "100"])
def test_tpm_must_be_a_positive_number(bad: object) -> None:
    with pytest.raises(wx.ValidationError, match="tpm"):
        wx.AdaptiveRateLimiter(tpm=bad)  # type: ignore[arg-type]


def test_token_estimator_needs_a_budget_and_tpm_goes_to_your_limiter() -> None:
    with pytest.raises(wx.ValidationError, match="token_estimator"):
        make_client(token_estimator=lambda body: 1)
    with pytest.raises(wx.ValidationError, match="tpm"):
        make_client(tpm=1000, rate_limiter=wx.NoLimit())


# --- the window, paced


async def test_sliding_window_refills_as_bookings_leave_it() -> None:
    window = TokenWindow(1000, window=0.5)
    charge = await window.take(600)
    window.settle(charge, 600)
    start = anyio.current_time()
    await window.take(600)  # 600 + 600 > 980: waits for the first to leave the window
    waited = anyio.current_time() - start
    assert 0.45 <= waited < 1.0
    assert window.booked() == 600


async def test_a_steady_stream_of_requests_runs_at_the_budgets_pace() -> None:
    window = TokenWindow(6000, window=1.0)  # 98 tokens per 1/60 s
    start = anyio.current_time()
    times = []
    for _ in range(40):
        charge = await window.take(100)
        times.append(anyio.current_time() - start)
        window.settle(charge, 100)
    # 40 x 100 tokens at 5880 per second: about 0.67 s, spread out, not 980 at once
    assert times[9] > 0.1, "no burst of the whole budget at the start"
    assert 0.55 < times[-1] < 1.2


async def test_a_give_back_wakes_the_first_waiter_at_once() -> None:
    window = TokenWindow(1000, window=10.0)
    charge = await window.take(900)
    woke = anyio.Event()

    async def waiter() -> None:
        await window.take(500)
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.05)
        assert not woke.is_set()
        window.settle(charge, 100)  # 800 given back
        with anyio.fail_after(1.0):
            await woke.wait()


async def test_waiters_are_served_in_order_and_a_cancelled_one_leaves_the_queue() -> None:
    window = TokenWindow(1000, window=0.3)
    await window.take(900)
    order: list[str] = []

    async def take(name: str, tokens: int) -> None:
        await window.take(tokens)
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "big", 900)
        await anyio.sleep(0.01)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await take("cancelled", 10)
        tg.start_soon(take, "small", 10)
    assert order == ["big", "small"], "a small request does not overtake a big one"


# --- against the emulator


async def run_batch(
    emulator: Emulator, tpm: int | None, prompts: list[str], scale: float = SCALE
) -> tuple[list[float], list[int]]:
    """The batch; per answer, the real time it finished (from the start) and its tokens."""
    finished: list[tuple[float, int]] = []
    async with budget_client(emulator, tpm, scale) as client:
        start = anyio.current_time()
        async with client.iter_batch_complete("pythia12b", prompts, concurrency=16) as results:
            async for result in results:
                if result.response is not None:
                    finished.append(
                        (anyio.current_time() - start, result.response.usage.total_tokens)
                    )
    return [t for t, _ in finished], [n for _, n in finished]


async def test_batch_under_the_emulators_tpm_meets_no_336502_and_uses_the_budget() -> None:
    # A budget minute lasts two real seconds here, not one: about 40 requests a second,
    # so a machine loaded by other tests still keeps pace and only the budget sets it.
    # The budget stays large beside one request's estimate (about 1,600 tokens), since
    # admission keeps room for the next estimate and a small budget could never fill.
    scale = SCALE / 2
    tpm = 30_000
    per_second = tpm * scale / 60
    emulator = scaled_emulator(scale, tpm=tpm)
    prompts = mixed_prompts(260)  # about 6 real seconds of budget
    times, tokens = await run_batch(emulator, tpm, prompts, scale)
    stats = emulator.stats()
    assert stats["outcomes"].get("error_336502", 0) == 0
    assert len(times) == len(prompts)
    # the steady part: after the first half second, before the last
    steady = [(t, n) for t, n in zip(times, tokens, strict=True) if 0.5 <= t <= times[-1] - 0.5]
    span = steady[-1][0] - steady[0][0]
    used = sum(n for _, n in steady[1:])
    assert used / span >= 0.9 * per_second, f"{used / span:.0f} tokens per second of {per_second}"


async def test_without_tpm_the_same_batch_meets_336502() -> None:
    emulator = scaled_emulator(tpm=30_000)
    await run_batch(emulator, None, mixed_prompts(260))
    assert emulator.stats()["outcomes"].get("error_336502", 0) > 0


async def test_a_request_larger_than_the_budget_is_refused_before_sending() -> None:
    emulator = scaled_emulator(tpm=2000)
    async with budget_client(emulator, 2000) as client:
        with pytest.raises(wx.ValidationError, match="prompt: the request is estimated"):
            await client.complete("pythia12b", "word " * 600)  # 1000 + 1024 > 2000
        with pytest.raises(wx.ValidationError, match="messages"):
            client.chat_stream("mpt30b", [wx.user("你" * 1000)])  # 1000 + 1024 > 2000
        custom = wx.AsyncClient(
            credentials=wx.OAuthCredentials("k", "s"),
            base_url=EMULATOR_URL,
            tpm=2000,
            token_estimator=lambda body: 5000,
        )
        with pytest.raises(wx.ValidationError, match="5000 tokens"):
            await custom.complete("pythia12b", "hi")
        await custom.aclose()
    stats = emulator.stats()
    assert stats["calls"] == 0 and stats["token_requests"] == 0, "nothing was sent"


async def test_an_answer_settles_its_charge_by_its_usage() -> None:
    emulator = scaled_emulator()
    async with budget_client(emulator, 1_000_000) as client:
        answer = await client.complete("pythia12b", "one two three")
        assert budget(client).booked() == answer.usage.total_tokens
        assert budget(client).used == answer.usage.total_tokens


async def test_max_output_tokens_is_the_answers_room_and_embeddings_are_charged() -> None:
    emulator = scaled_emulator()
    seen: list[int] = []

    def estimator(body: Any) -> int:
        seen.append(wx.estimate_tokens(body))
        return seen[-1]

    async with budget_client(emulator, 1_000_000, token_estimator=estimator) as client:
        chat = await client.chat("ernie-4.0-8k", [wx.user("abcdef")], max_output_tokens=10)
        assert seen[-1] == 2 + 10, "the answer's room is max_output_tokens"
        vectors = await client.embed("embedding-v1", ["abcdef", "你好"])
        assert seen[-1] == 2 + 2, "embeddings: the texts, no answer room"
        used = chat.usage.total_tokens + vectors.usage.total_tokens
        assert budget(client).used == used == budget(client).booked()


async def test_a_failed_request_is_settled_at_zero() -> None:
    emulator = scaled_emulator(fail_prompts={"refused": 336003})
    async with budget_client(emulator, 1_000_000) as client:
        with pytest.raises(wx.APIError):
            await client.complete("pythia12b", "refused")
        assert budget(client).booked() == 0


async def test_streams_are_settled_at_their_end_and_when_closed_early() -> None:
    emulator = scaled_emulator(sentences_min=4, sentences_max=4)
    async with budget_client(emulator, 1_000_000) as client:
        window = budget(client)
        async with client.complete_stream("pythia12b", "one two three") as stream:
            async for chunk in stream:
                if chunk.sentence_id == 0:
                    assert window.booked() > 1000, "charged ahead with the answer's room"
        assert stream.usage is not None
        assert window.booked() == stream.usage.total_tokens

        before = window.booked()
        async with client.complete_stream("pythia12b", "four five six") as stream:
            async for _ in stream:
                break  # closed early: settled at the last usage it carried
        assert stream.usage is not None and not stream.finished
        assert window.booked() - before == stream.usage.total_tokens


async def test_a_stream_that_fails_before_its_first_chunk_is_settled_at_zero() -> None:
    emulator = scaled_emulator(fail_prompts={"refused": 336003})
    async with budget_client(emulator, 1_000_000) as client:
        with pytest.raises(wx.APIError):
            async with client.complete_stream("pythia12b", "refused") as stream:
                async for _ in stream:
                    pass
        assert budget(client).booked() == 0


async def test_a_stream_broken_midway_is_settled_at_the_usage_it_carried() -> None:
    emulator = scaled_emulator(sentences_min=4, sentences_max=4, faults={"midstream_error": 1.0})
    async with budget_client(emulator, 1_000_000) as client:
        with pytest.raises(wx.APIError):
            async with client.complete_stream("pythia12b", "one two") as stream:
                async for _ in stream:
                    pass
        assert stream.usage is not None
        assert budget(client).booked() == stream.usage.total_tokens


async def test_a_stream_ending_without_usage_keeps_its_estimate(
    router: respx.MockRouter,
) -> None:
    """No usage on any chunk: the service's count is unknown, so the charge stays at the
    estimate (as for an answer without usage), never at zero."""
    router.post(TOKEN_URL).respond(json=token_body())
    lines = [
        {"id": "as-1", "object": "completion", "created": 1, "sentence_id": 0,
         "is_end": False, "result": "Hel"},
        {"id": "as-1", "object": "completion", "created": 1, "sentence_id": 1,
         "is_end": True, "result": "lo"},
    ]  # fmt: skip
    body = "".join(f"data: {json.dumps(line)}\n\n" for line in lines)
    router.post(COMPLETIONS_URL).respond(
        headers={"Content-Type": "text/event-stream"}, content=body.encode()
    )
    limiter = wx.AdaptiveRateLimiter(tpm=100_000)
    async with make_client(rate_limiter=limiter) as client:
        async with client.complete_stream("pythia12b", "hi") as stream:
            text = "".join([chunk.result async for chunk in stream])
        assert text == "Hello" and stream.finished and stream.usage is None
        assert limiter.tokens is not None
        assert limiter.tokens.booked() == DEFAULT_ANSWER_ROOM + 1  # "hi": 1 token, + the room


# --- the service's word


def ratelimited(limit_tokens: int) -> httpx.Response:
    return httpx.Response(
        200, json=completion_body(), headers={"X-Ratelimit-Limit-Tokens": str(limit_tokens)}
    )


async def test_the_tokens_header_lowers_the_budget_never_raises_it(
    router: respx.MockRouter,
) -> None:
    router.post(TOKEN_URL).respond(json=token_body())
    route = router.post(COMPLETIONS_URL)
    limiter = wx.AdaptiveRateLimiter(tpm=50_000)
    async with make_client(rate_limiter=limiter) as client:
        route.return_value = ratelimited(90_000)
        await client.complete("pythia12b", "hi")
        assert limiter.tokens is not None and limiter.tokens.limit == 50_000
        route.return_value = ratelimited(20_000)
        await client.complete("pythia12b", "hi")
        assert limiter.tokens.limit == 20_000
        route.return_value = ratelimited(40_000)
        await client.complete("pythia12b", "hi")
        assert limiter.tokens.limit == 20_000


async def test_a_336502_answer_halves_the_token_budget_then_it_recovers(
    router: respx.MockRouter,
) -> None:
    router.post(TOKEN_URL).respond(json=token_body())
    answers = itertools.chain(
        [httpx.Response(200, json=error_body(336502))],
        itertools.repeat(httpx.Response(200, json=completion_body())),
    )
    router.post(COMPLETIONS_URL).mock(side_effect=lambda request: next(answers))
    limiter = wx.AdaptiveRateLimiter(tpm=100_000)
    async with make_client(rate_limiter=limiter) as client:
        await client.complete("pythia12b", "hi")  # retried after the 336502
        # halved, then up by 5 % per second since (the retry waited for the request rate cut)
        assert limiter.tokens is not None
        after_cut = limiter.tokens.budget
        assert 50_000 <= after_cut < 70_000
        await anyio.sleep(0.2)
        await client.complete("pythia12b", "hi")
        assert after_cut < limiter.tokens.budget < 100_000


async def test_without_tpm_calls_carry_no_estimate() -> None:
    emulator = scaled_emulator()
    async with budget_client(emulator, None) as client:
        assert client._estimate is None and client._sender.budget is None
        call = client._template("completions", "pythia12b", NO_EXTRAS).call(
            {"prompt": "x"}, NO_EXTRAS
        )
        assert call.tokens is None
        await client.complete("pythia12b", "hello")


# --- progress


async def test_batch_progress_counts_tokens_per_minute() -> None:
    emulator = scaled_emulator()
    seen: list[wx.BatchProgress] = []
    async with budget_client(emulator, None) as client:
        results = await client.batch_complete(
            "pythia12b", mixed_prompts(20), concurrency=4, on_progress=seen.append
        )
    used = sum(r.response.usage.total_tokens for r in results if r.response is not None)
    last = seen[-1]
    assert last.tokens == used > 0
    assert last.tokens_per_minute == pytest.approx(used * 60 / last.elapsed)


def test_cli_batch_with_tpm_shows_tokens_per_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from baiduwx_async.cli import main

    from .test_cli import emulator_thread, read_jsonl, write_inputs

    with emulator_thread(tpm=100_000) as running:
        monkeypatch.setenv("QIANFAN_AK", "test-api-key")
        monkeypatch.setenv("QIANFAN_SK", "test-secret-key")
        monkeypatch.setenv("QIANFAN_BASE_URL", running.base_url)
        source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        records: list[dict[str, Any]] = [{"id": i, "prompt": f"short {i}"} for i in range(3)]
        records.append({"id": "huge", "prompt": "你" * 4500})  # 4500 + 1024 > 5000
        write_inputs(source, records)
        command = ["batch", "pythia12b", str(source), "-o", str(output), "--complete"]
        code = main([*command, "--tpm", "5000"])
        assert code == 1
        by_id = {line["id"]: line for line in read_jsonl(output)}
        assert by_id["huge"]["error"]["type"] == "ValidationError"
        assert "tokens per minute" in by_id["huge"]["error"]["message"]
        assert all(by_id[i]["ok"] for i in range(3))
        assert running.calls("completions/pythia12b") == 3, "the huge one was never sent"
        summary = capsys.readouterr().err
        assert "tokens: " in summary and "/min)" in summary


def test_cli_embed_with_tpm_refuses_a_text_larger_than_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from baiduwx_async.cli import main

    from .test_cli import emulator_thread, read_jsonl, write_inputs

    with emulator_thread() as running:
        monkeypatch.setenv("QIANFAN_AK", "test-api-key")
        monkeypatch.setenv("QIANFAN_SK", "test-secret-key")
        monkeypatch.setenv("QIANFAN_BASE_URL", running.base_url)
        source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        records: list[dict[str, Any]] = [{"id": i, "text": f"t{i}"} for i in range(3)]
        records.append({"id": "long", "text": "你" * 310})  # 310 tokens > 300
        write_inputs(source, records)
        command = ["embed", "embedding-v1", str(source), "-o", str(output)]
        code = main([*command, "--texts-per-request", "1", "--tpm", "300"])
        assert code == 1
        by_id = {line["id"]: line for line in read_jsonl(output)}
        assert by_id["long"]["error"]["type"] == "ValidationError"
        assert all(by_id[i]["ok"] for i in range(3))
        assert running.calls("embeddings/embedding-v1") == 3, "the long one was never sent"
        assert "tokens/min" not in capsys.readouterr().err
