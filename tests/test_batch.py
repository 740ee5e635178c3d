"""Batches: order, laziness, bounded concurrency, isolation of failures, cancellation."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async.emulator import Emulator, EmulatorConfig

from .support import (
    COMPLETIONS_URL,
    FAST_RETRIES,
    TOKEN,
    FakeClock,
    completion_body,
    error_body,
    make_client,
)

pytestmark = pytest.mark.anyio

EMULATOR_URL = "http://emulator.localhost"


@asynccontextmanager
async def emulator_client(emulator: Emulator, **kwargs: Any) -> AsyncIterator[wx.AsyncClient]:
    """A client talking to `emulator` in-process (no socket), under asyncio or trio; it
    and its httpx client are closed at the end."""
    kwargs.setdefault("retry_policy", FAST_RETRIES)
    transport = httpx.ASGITransport(app=emulator.app)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        wx.AsyncClient(
            credentials=wx.OAuthCredentials(*next(iter(emulator.config.credentials.items()))),
            base_url=EMULATOR_URL,
            http_client=http,
            **kwargs,
        ) as client,
    ):
        yield client


async def test_results_in_input_order_with_bounded_concurrency() -> None:
    emulator = Emulator(EmulatorConfig(latency=0.002, seed=1))
    prompts = [f"prompt number {i}" for i in range(2000)]
    async with emulator_client(emulator) as client:
        results = await client.batch_complete("pythia12b", prompts, concurrency=16)
        single = await client.complete("pythia12b", prompts[1234])
    stats = emulator.stats()
    assert [r.index for r in results] == list(range(2000))
    assert [r.input for r in results] == prompts
    assert all(r.ok and r.attempts == 1 for r in results)
    assert results[1234].response is not None
    assert results[1234].response.result == single.result, "each answer belongs to its prompt"
    assert stats["max_in_flight"] <= 16
    assert stats["max_in_flight"] >= 8, "the batch really ran concurrently"
    assert stats["calls"] == 2001
    assert stats["token_requests"] == 1


async def test_chat_batch_and_as_completed_iteration() -> None:
    emulator = Emulator(EmulatorConfig(seed=2))
    conversations = [[wx.user(f"question {i}")] for i in range(50)]
    seen: list[int] = []
    async with emulator_client(emulator) as client:
        async for result in client.iter_batch_chat("mpt30b", conversations, concurrency=8):
            assert result.ok and isinstance(result.response, wx.ChatResponse)
            seen.append(result.index)
    assert sorted(seen) == list(range(50))


async def test_one_failing_item_leaves_the_rest_intact() -> None:
    emulator = Emulator(EmulatorConfig(fail_prompts={"poison": 336003}))
    prompts = ["a", "b", "poison", "c", "d"]
    async with emulator_client(emulator) as client:
        results = await client.batch_complete("pythia12b", prompts, concurrency=2)
    assert [r.ok for r in results] == [True, True, False, True, True]
    error = results[2].error
    assert isinstance(error, wx.InvalidRequestError) and error.code == 336003
    assert results[2].response is None and results[2].attempts == 1


async def test_injected_faults_every_item_still_succeeds() -> None:
    # Rate-limit answers are left out: the adaptive limiter rightly slows down after them,
    # which test_adaptive_limiter_converges_on_the_service_limit covers.
    faults = {
        "http_500": 0.03,
        "http_503": 0.02,
        "error_2": 0.02,
        "error_336100": 0.02,
        "drop": 0.01,
    }
    emulator = Emulator(EmulatorConfig(seed=7, faults=faults, retry_after=0))
    async with emulator_client(emulator, max_retries=6) as client:
        results = await client.batch_complete(
            "pythia12b", [f"p{i}" for i in range(400)], concurrency=16
        )
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert sum(emulator.stats()["faults"].values()) > 15, "faults were injected"
    assert sum(r.attempts for r in results) > 400, "and retried"


async def test_inputs_are_read_lazily() -> None:
    pulled = 0

    def prompts() -> Iterator[str]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield f"p{i}"

    emulator = Emulator(EmulatorConfig(latency=0.001))
    async with emulator_client(emulator) as client:
        async with client.iter_batch_complete("pythia12b", prompts(), concurrency=4) as results:
            got = 0
            async for _ in results:
                got += 1
                if got == 20:
                    break
    assert pulled <= 20 + 4 + 4, "no more inputs read than were in flight or buffered"


async def test_async_iterable_inputs_and_progress() -> None:
    async def prompts() -> AsyncIterator[str]:
        for i in range(30):
            await anyio.lowlevel.checkpoint()
            yield f"p{i}"

    progress: list[wx.BatchProgress] = []
    emulator = Emulator(EmulatorConfig())
    async with emulator_client(emulator) as client:
        results = await client.batch_complete(
            "pythia12b", prompts(), concurrency=5, on_progress=progress.append
        )
    assert len(results) == 30
    assert [p.done for p in progress] == list(range(1, 31))
    assert progress[-1].failed == 0 and progress[-1].total is None


async def test_progress_knows_the_total_of_a_list(router: respx.MockRouter) -> None:
    router.post(COMPLETIONS_URL).mock(
        side_effect=[
            httpx.Response(200, json=error_body(336003)),
            *[httpx.Response(200, json=completion_body())] * 3,
        ]
    )
    progress: list[wx.BatchProgress] = []
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        await client.batch_complete(
            "pythia12b", ["a", "b", "c", "d"], concurrency=1, on_progress=progress.append
        )
    assert progress[-1].total == 4 and progress[-1].done == 4 and progress[-1].failed == 1
    assert progress[-1].eta == 0


async def test_cancelling_the_batch_cancels_everything_it_started() -> None:
    emulator = Emulator(EmulatorConfig(latency=10))  # nothing ever finishes by itself
    async with emulator_client(emulator) as client:
        with anyio.move_on_after(0.3) as scope:
            await client.batch_complete("pythia12b", [f"p{i}" for i in range(100)], concurrency=8)
        assert scope.cancelled_caught
        await anyio.sleep(0.05)
        assert emulator.stats()["in_flight"] == 0, "no request left running"


async def test_leaving_an_iteration_early_stops_the_work() -> None:
    emulator = Emulator(EmulatorConfig(latency=0.05))
    async with emulator_client(emulator) as client:
        async with client.iter_batch_complete(
            "pythia12b", [f"p{i}" for i in range(200)], concurrency=8
        ) as results:
            async for _ in results:
                break
        await anyio.sleep(0.05)
        stats = emulator.stats()
    assert stats["in_flight"] == 0
    assert stats["calls"] < 40


async def test_bad_parameters_are_rejected_before_anything_is_sent(
    router: respx.MockRouter,
) -> None:
    route = router.route()
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ValidationError, match="temperature"):
            await client.batch_complete("pythia12b", ["a"], temperature=9)
        with pytest.raises(TypeError, match=r"tempreature.*temperature"):
            await client.batch_chat("mpt30b", [[wx.user("a")]], tempreature=0.5)
        with pytest.raises(wx.ValidationError, match="concurrency"):
            await client.batch_complete("pythia12b", ["a"], concurrency=0)
        with pytest.raises(wx.ValidationError, match="endpoint"):
            client.iter_batch_chat("a/b", [])
    assert route.call_count == 0


async def test_per_item_validation_failures_are_results(router: respx.MockRouter) -> None:
    route = router.post(COMPLETIONS_URL).mock(
        return_value=httpx.Response(200, json=completion_body())
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        results = await client.batch_complete("pythia12b", ["fine", "", "also fine"])
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, wx.ValidationError) and results[1].attempts == 0
    assert route.call_count == 2


async def test_batch_qps_paces_the_items() -> None:
    emulator = Emulator(EmulatorConfig())
    async with emulator_client(emulator) as client:
        started = anyio.current_time()
        await client.batch_complete(
            "pythia12b", [f"p{i}" for i in range(11)], concurrency=8, qps=20
        )
        elapsed = anyio.current_time() - started
    assert elapsed >= 0.45, "11 starts at 20/s take at least half a second"


async def test_adaptive_limiter_converges_on_the_service_limit() -> None:
    emulator = Emulator(EmulatorConfig(qps=20))
    async with emulator_client(emulator, max_retries=8) as client:
        results = await client.batch_complete(
            "pythia12b", [f"p{i}" for i in range(60)], concurrency=16
        )
    assert all(r.ok for r in results)
    outcomes = emulator.stats()["outcomes"]
    throttled = outcomes.get("error_18", 0)
    assert throttled > 0, "the client had to find the limit"
    assert throttled < 60, "and then mostly kept under it"


async def test_client_qps_at_the_service_limit_is_never_throttled() -> None:
    # The advertised X-Ratelimit-Limit-Requests (per minute) matches the QPS limit, or the
    # client would rightly keep under the lower default of 300 per minute.
    # One fake clock for both sides: the client's spacing is what the server's window
    # judges, with nothing a busy machine could add in between.
    clock = FakeClock()
    emulator = Emulator(EmulatorConfig(qps=20, advertised_rpm=1200), clock=clock)
    limiter = wx.AdaptiveRateLimiter(qps=20, clock=clock, sleep=clock.sleep)
    async with emulator_client(emulator, rate_limiter=limiter) as client:
        results = await client.batch_complete(
            "pythia12b", [f"p{i}" for i in range(50)], concurrency=16
        )
    assert all(r.ok for r in results)
    assert emulator.stats()["outcomes"].get("error_18", 0) == 0
    assert clock.now - 1_700_000_000.0 >= 49 / 20, "and the client did not go faster"


async def test_a_batch_wider_than_the_client_warns_where_it_is_called() -> None:
    own_pool = wx.AsyncClient(credentials=wx.StaticToken(TOKEN), base_url="http://127.0.0.1:9")
    assert own_pool.in_flight_capacity == 100  # no max_concurrency: its pool's size
    with pytest.warns(wx.BatchWidthWarning, match="only 100 run at a time") as caught:
        own_pool.iter_batch_chat("mpt30b", [], concurrency=101)
    assert caught[0].filename == __file__
    await own_pool.aclose()
    emulator = Emulator(EmulatorConfig())
    async with emulator_client(emulator, max_concurrency=8) as narrow:
        with pytest.warns(wx.BatchWidthWarning, match="max_concurrency=9") as caught:
            results = await narrow.batch_complete("pythia12b", ["a", "b"], concurrency=9)
        assert caught[0].filename == __file__
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            await narrow.batch_complete("pythia12b", ["a", "b"], concurrency=8)
    async with emulator_client(emulator) as unknown:  # the caller's http_client, no cap
        assert unknown.in_flight_capacity is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            await unknown.batch_complete("pythia12b", ["a"], concurrency=500)
    assert all(r.ok for r in results)
