"""The Redis token store and rate limiter (extra `redis`), against a real `redis-server`.

Unit-level tests drive the Lua scripts from several clients in this process; the process
tests run 8 workers (`baiduwx batch --redis --shard`, or a small script) against the
emulator in its own process on a loopback socket. A missing `redis-server` fails these
tests, it does not skip them: `.ci/run` installs it.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import baiduwx_async as wx
from baiduwx_async._cli_batch import BatchInputs, shard_of
from baiduwx_async._limits import SAFETY
from baiduwx_async.cli import main
from baiduwx_async.redis import (
    RedisLockTimeoutError,
    RedisRateLimiter,
    RedisTokenStore,
    RedisUnavailableError,
    _scrub,
    redact_url,
)

from .processes import read_all, refused_port
from .redis_server import EmulatorProcess, RedisServer
from .secret_guard import saw

pytestmark = pytest.mark.anyio

EMULATOR_QPS = 20
# The emulator advertises X-Ratelimit-Limit-Requests; well above 20/s it lowers no ceiling.
EMULATOR_CONFIG = {"qps": EMULATOR_QPS, "advertised_rpm": 6000, "seed": 1}
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's client runs on asyncio only


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    assert redis_server.command("FLUSHALL") == "+OK"
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of the test's own, which it may stop and start again."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emulator = EmulatorProcess(EMULATOR_CONFIG, tmp_path_factory.mktemp("emulator"))
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def emulator(emulator_process: EmulatorProcess) -> EmulatorProcess:
    emulator_process.reset()
    return emulator_process


def windows_max(times: list[float], width: float = 1.0) -> int:
    """The most starts any half-open window of `width` seconds holds."""
    times = sorted(times)
    most = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        most = max(most, i - j + 1)
    return most


async def timed_acquires(limiters: list[RedisRateLimiter], count: int, tasks: int) -> list[float]:
    """`count` acquires from `tasks` concurrent tasks over `limiters` in turn: start times."""
    starts: list[float] = []
    remaining = iter(range(count))

    async def worker(limiter: RedisRateLimiter) -> None:
        for _ in remaining:
            await limiter.acquire()
            starts.append(anyio.current_time())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for i in range(tasks):
                group.start_soon(worker, limiters[i % len(limiters)])
    return sorted(starts)


# --- the limiter's Lua scripts, several clients in one process


async def test_spacing_and_windows_across_clients(redis_url: str) -> None:
    qps = 50.0
    limiters = [RedisRateLimiter(redis_url, qps=qps, cold_start=0) for _ in range(4)]
    try:
        for limiter in limiters:  # connected (and scripts loaded) before timing
            await limiter.ping()
        starts = await timed_acquires(limiters, 101, tasks=20)
    finally:
        for limiter in limiters:
            await limiter.aclose()
    # Real time (Redis' clock): starts are booked on the schedule, and a busy machine only
    # makes some of them seen late (which can shorten the gap after one). The bounds allow
    # for that; what they check is the schedule.
    interval = 1 / (qps * SAFETY)
    gaps = sorted(b - a for a, b in itertools.pairwise(starts))
    assert gaps[len(gaps) // 2] >= 0.8 * interval
    assert 100 * interval - 0.1 <= starts[-1] - starts[0] < 100 * interval + 5
    assert windows_max(starts) <= qps + 2


async def test_rpm_is_a_rate_per_minute_with_burst_one(redis_url: str) -> None:
    async with RedisRateLimiter(redis_url, rpm=1200, cold_start=0) as limiter:
        await limiter.ping()
        starts = await timed_acquires([limiter], 6, tasks=6)
    expected = 5 * 60 / (1200 * SAFETY)
    assert expected - 0.1 <= starts[-1] - starts[0] < expected + 5  # the first seen late: -0.1


async def test_a_process_first_start_keeps_cold_start_free(redis_url: str) -> None:
    """A process's first request leaves late (a new connection, a busy CPU): the next start,
    from any process, comes `cold_start` seconds after it on top of the interval."""
    interval, cold = 1 / (20 * SAFETY), 1.0  # a long cold start: late starts stay apart
    async with (
        RedisRateLimiter(redis_url, qps=20, cold_start=cold) as a,
        RedisRateLimiter(redis_url, qps=20, cold_start=cold) as b,
    ):
        await a.ping()
        await b.ping()
        starts = []
        for limiter in (a, a, b, a, a):
            await limiter.acquire()
            starts.append(anyio.current_time())
    gaps = [y - x for x, y in itertools.pairwise(starts)]
    expected = [cold + interval, interval, cold + interval, interval]
    # A start seen late by a busy machine moves its gaps by far less than a cold start:
    # the cold start is after each process's first start, and only there.
    with_cold = [gap > cold / 2 for gap in gaps]
    assert with_cold == [True, False, True, False], (gaps, expected)
    assert starts[-1] - starts[0] >= sum(expected) - 0.1


async def test_a_cut_is_shared_and_at_most_once_a_second(redis_url: str) -> None:
    async with (
        RedisRateLimiter(redis_url, qps=20, cold_start=0) as a,
        RedisRateLimiter(redis_url, qps=20, cold_start=0) as b,
    ):
        await a.acquire()
        await a.feedback(throttled=True, ratelimit=None)
        assert (await b.state())["rate"] == 10 and a.rate == 10
        await b.feedback(throttled=True, ratelimit=None)  # the same burst: no second cut
        state = await b.state()
        assert state["rate"] == 10 and state["epoch"] == 1 and b.rate == 10
        await anyio.sleep(0.2)
        await b.feedback(throttled=False, ratelimit=None)  # +5 % of the ceiling per second
        assert 10.1 < (await a.state())["rate"] < 10.6
        await a.acquire()
        assert 10.1 < a.rate < 10.6
        await anyio.sleep(1.0)
        await a.feedback(throttled=True, ratelimit=None)  # a new second: cut again
        state = await b.state()
        assert 5 < state["rate"] < 5.3 and state["epoch"] == 2


async def test_recovery_climbs_back_to_the_ceiling_and_stops(
    redis_url: str, redis_server: RedisServer
) -> None:
    state_key = "baiduwx:limiter:default"
    async with RedisRateLimiter(redis_url, qps=20, cold_start=0) as limiter:
        await limiter.feedback(throttled=True, ratelimit=None)
        for _ in range(5):
            await anyio.sleep(0.02)
            await limiter.feedback(throttled=False, ratelimit=None)
        assert 10 < limiter.rate < 10.5  # 1 req/s more per second of successes
        redis_server.command("HSET", state_key, "last_adjust", "0")  # as if idle for long
        await limiter.feedback(throttled=False, ratelimit=None)
        assert limiter.rate == pytest.approx(12, abs=0.2)  # one success counts 2 s at most
        for _ in range(5):
            redis_server.command("HSET", state_key, "last_adjust", "0")
            await limiter.feedback(throttled=False, ratelimit=None)
        assert limiter.rate == 20 and (await limiter.state())["rate"] == 20
        await limiter.feedback(throttled=False, ratelimit=None)  # at the ceiling: no call


async def test_ratelimit_header_lowers_the_shared_ceiling_only(redis_url: str) -> None:
    async with (
        RedisRateLimiter(redis_url, qps=20, cold_start=0) as a,
        RedisRateLimiter(redis_url, qps=20, cold_start=0) as b,
    ):
        await a.feedback(throttled=False, ratelimit=wx.RateLimitInfo(limit_requests=600))
        assert (await b.state())["ceiling"] == 10
        await b.feedback(throttled=False, ratelimit=wx.RateLimitInfo(limit_requests=60000))
        assert (await b.state())["ceiling"] == 10
        starts = await timed_acquires([b], 11, tasks=11)
        assert b.ceiling == 10
    expected = 10 / (10 * SAFETY)  # ~1.05 s; at the refused 20/s it would be half that
    assert expected - 0.1 <= starts[-1] - starts[0] < expected * 1.5


async def test_waiters_queued_before_a_cut_are_respaced(redis_url: str) -> None:
    async with (
        RedisRateLimiter(redis_url, qps=20, cold_start=0) as limiter,
        RedisRateLimiter(redis_url, qps=20, cold_start=0) as other,
    ):
        await limiter.ping()
        await other.ping()
        cut_at: list[float] = []

        async def cut_soon() -> None:
            await anyio.sleep(0.1)
            before = anyio.current_time()
            await other.feedback(throttled=True, ratelimit=None)
            cut_at.append((before + anyio.current_time()) / 2)

        async with anyio.create_task_group() as group:
            group.start_soon(cut_soon)
            starts = await timed_acquires([limiter], 11, tasks=11)
    # queued at 20/s (last slot 0.51 s after the first); the slots after the cut are
    # stretched to 10/s (and the first of them kept one new interval from the last start
    # before the cut, which may add up to one old interval)
    interval = 1 / (20 * SAFETY)
    expected = cut_at[0] + (starts[0] + 10 * interval - cut_at[0]) * 2
    assert expected - 0.1 < starts[-1] < expected + interval + 1.0
    # after the cut: 10/s on average (one start woken late may come close to the next)
    late = starts[4:]
    assert (late[-1] - late[0]) / (len(late) - 1) > 1.7 * interval


async def test_a_cancelled_waiter_hands_its_slot_back(redis_url: str) -> None:
    interval = 1 / (2 * SAFETY)  # ~0.53 s: a slot apart is far more than a busy machine adds
    async with RedisRateLimiter(redis_url, qps=2, cold_start=0) as limiter:
        await limiter.acquire()
        first = anyio.current_time()
        with anyio.move_on_after(0.05):
            await limiter.acquire()  # cancelled while waiting for the second slot
        await limiter.acquire()  # gets that second slot, not a third
        waited = anyio.current_time() - first
    assert interval - 0.1 <= waited < 2 * interval - 0.15


# --- configuration and unreachable Redis at first use


async def test_unreachable_redis_at_first_use_is_a_clear_error() -> None:
    with refused_port() as port:
        await unreachable_redis_at_first_use(f"redis://:hunter2-redis-pw@127.0.0.1:{port}/0")


async def unreachable_redis_at_first_use(url: str) -> None:
    async with (
        RedisTokenStore(url, timeout=0.5) as store,
        RedisRateLimiter(url, qps=5, timeout=0.5) as limiter,
    ):
        started = time.monotonic()
        for attempt in (
            store.load("k"),
            store.ping(),
            limiter.acquire(),
            limiter.ping(),
            limiter.feedback(throttled=True, ratelimit=None),
        ):
            with pytest.raises(RedisUnavailableError) as caught:
                await attempt
            message = str(caught.value)
            assert "hunter2" not in message and "redis://:***@127.0.0.1:" in message
            assert "unavailable" in message
        with pytest.raises(RedisUnavailableError):
            async with store.fetch_lock("k"):
                pass
        assert time.monotonic() - started < 5
        assert "hunter2" not in repr(store) + repr(limiter)


def test_redact_url() -> None:
    assert redact_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("redis://pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("redis://h:1/0?password=pw&db=1") == "redis://h:1/0?password=%2A%2A%2A&db=1"
    assert redact_url("rediss://h:6380/2") == "rediss://h:6380/2"
    scrubbed = _scrub(ConnectionError("auth pw1 and pw2 refused"), "redis://u:pw1@h/0?password=pw2")
    assert isinstance(scrubbed, ConnectionError) and str(scrubbed) == "auth *** and *** refused"


def test_configuration_is_checked() -> None:
    with pytest.raises(wx.ValidationError, match="url"):
        RedisTokenStore("http://:pw@localhost:6379")
    with pytest.raises(wx.ValidationError, match="tpm"):
        RedisRateLimiter("redis://localhost", tpm=-5)
    with pytest.raises(wx.ValidationError, match="qps"):
        RedisRateLimiter("redis://localhost", qps=0)
    with pytest.raises(wx.ValidationError, match="lock_timeout"):
        RedisTokenStore("redis://localhost", lock_timeout=-1)
    assert isinstance(RedisTokenStore("redis://localhost"), wx.SharedTokenStore)
    assert isinstance(RedisRateLimiter("redis://localhost", qps=1), wx.RateLimiter)
    assert isinstance(RedisRateLimiter("redis://localhost"), wx.RateLimiter), "qps/rpm optional"
    assert isinstance(RedisRateLimiter("redis://localhost", tpm=1000), wx.TokenRateLimiter)


def test_import_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "baiduwx_async.redis")
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # type: ignore[arg-type]
    with pytest.raises(ImportError, match=r"pip install 'baiduwx_async\[redis\]'"):
        import baiduwx_async.redis  # noqa: F401


def test_trio_is_refused_clearly(redis_url: str) -> None:
    store = RedisTokenStore(redis_url)
    with pytest.raises(RuntimeError, match="asyncio only"):
        anyio.run(store.load, "k", backend="trio")


# --- the token store


async def test_token_is_stored_with_its_remaining_lifetime(
    redis_url: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with RedisTokenStore(redis_url, prefix="t:") as store:
        token = wx.AccessToken("24.value-of-a-test-token", time.time() - 50, 150)
        await store.save("hash1", token)
        assert await store.load("hash1") == token
        assert 99_000 < int(redis_server.command("PTTL", "t:token:hash1")[1:]) <= 100_000
        await store.save("hash2", wx.AccessToken("old", time.time() - 200, 100))
        assert await store.load("hash2") is None  # expired: not stored at all
        assert redis_server.command("EXISTS", "t:token:hash2") == ":0"
        redis_server.command("SET", "t:token:hash3", "{not json")
        with caplog.at_level(logging.WARNING):
            assert await store.load("hash3") is None
        assert "unreadable token" in caplog.text
        assert await store.load("missing") is None


async def test_fetch_lock_is_exclusive_and_times_out(
    redis_url: str, redis_server: RedisServer
) -> None:
    async with (
        RedisTokenStore(redis_url, lock_timeout=5) as a,
        RedisTokenStore(redis_url, lock_timeout=0.3) as b,
    ):
        async with a.fetch_lock("k"):
            assert 4000 < int(redis_server.command("PTTL", "baiduwx:lock:k")[1:]) <= 5000
            started = time.monotonic()
            with pytest.raises(RedisLockTimeoutError, match="lock_timeout"):
                async with b.fetch_lock("k"):
                    pass
            assert 1.2 < time.monotonic() - started < 2.5  # lock_timeout + 1 s
        assert redis_server.command("EXISTS", "baiduwx:lock:k") == ":0"  # released
        async with b.fetch_lock("k"):  # free again: at once
            pass


async def test_a_dead_holders_lock_expires_and_is_not_deleted_by_it(
    redis_url: str, redis_server: RedisServer
) -> None:
    redis_server.command("SET", "baiduwx:lock:k", "a-dead-process", "PX", "200")
    async with (
        RedisTokenStore(redis_url, lock_timeout=0.2) as slow,
        RedisTokenStore(redis_url, lock_timeout=5) as other,
    ):
        started = time.monotonic()
        async with other.fetch_lock("k"):
            assert 0.15 < time.monotonic() - started < 1.0  # got it when it expired
        in_other = anyio.Event()
        slow_done = anyio.Event()

        async def outlives_its_lock() -> None:
            async with slow.fetch_lock("k"):
                await anyio.sleep(0.3)  # the lock expires meanwhile; `other` takes it
                await in_other.wait()
            slow_done.set()  # its release must not delete the lock `other` holds

        async def takes_the_expired_lock() -> None:
            await anyio.sleep(0.05)
            async with other.fetch_lock("k"):
                in_other.set()
                await slow_done.wait()
                assert redis_server.command("EXISTS", "baiduwx:lock:k") == ":1"

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(outlives_its_lock)
                group.start_soon(takes_the_expired_lock)
        assert redis_server.command("EXISTS", "baiduwx:lock:k") == ":0"


async def test_eight_token_managers_make_one_fetch(redis_url: str) -> None:
    fetches = 0

    async def fetch() -> wx.AccessToken:
        nonlocal fetches
        fetches += 1
        await anyio.sleep(0.05)
        return wx.AccessToken(f"token-{fetches}", time.time(), 3600)

    stores = [RedisTokenStore(redis_url) for _ in range(8)]
    managers = [wx.TokenManager(fetch, key="cred-hash", store=s) for s in stores]
    got: list[str] = []

    async def first(manager: wx.TokenManager) -> None:
        got.append(await manager.get_token())

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for manager in managers:
                    group.start_soon(first, manager)
            assert fetches == 1 and got == ["token-1"] * 8
            async with anyio.create_task_group() as group:  # all saw token-1 rejected
                for manager in managers:
                    group.start_soon(manager.refresh_if_stale, "token-1")
            assert fetches == 2
            assert {await m.get_token() for m in managers} == {"token-2"}
    finally:
        for store in stores:
            await store.aclose()


# --- Redis going away during a run


def redis_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "baiduwx_async.redis" and r.levelno == level
    ]


async def test_limiter_falls_back_while_redis_is_away_and_comes_back(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="baiduwx_async.redis")
    async with RedisRateLimiter(own_redis.url, qps=50, retry_interval=0.3) as limiter:
        await limiter.acquire()
        own_redis.stop()
        with anyio.fail_after(5):
            starts = await timed_acquires([limiter], 11, tasks=4)
        assert limiter.using_fallback
        assert starts[-1] - starts[0] >= 10 / (50 * SAFETY) - 0.01  # still paced, in-process
        warnings = redis_records(caplog, logging.WARNING)
        assert len(warnings) == 1, warnings
        assert "unreachable" in warnings[0] and "in this process only" in warnings[0]
        own_redis.start()
        await anyio.sleep(0.35)
        await limiter.acquire()
        assert not limiter.using_fallback
        assert any("reachable again" in m for m in redis_records(caplog, logging.INFO))
        assert (await limiter.state())["next"] > 0  # the shared schedule again


async def test_a_hung_redis_costs_a_bounded_wait(own_redis: RedisServer) -> None:
    async with (
        RedisRateLimiter(own_redis.url, qps=1000, timeout=0.2, retry_interval=60) as limiter,
        RedisTokenStore(own_redis.url, timeout=0.2, retry_interval=60) as store,
    ):
        await limiter.acquire()
        await store.ping()
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            await limiter.acquire()  # one bounded try, then the in-process limiter
            assert await store.load("k") is None
            async with store.fetch_lock("k"):
                pass
            assert time.monotonic() - started < 4  # three waits of 0.2 s, not a hang
            started = time.monotonic()
            for _ in range(20):  # Redis is not tried again before retry_interval
                await limiter.acquire()
            assert time.monotonic() - started < 2  # each retry would cost 0.2 s
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)


async def test_token_store_falls_back_to_the_clients_memory(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with RedisTokenStore(own_redis.url) as store:
        token = wx.AccessToken("a-token", time.time(), 3600)
        await store.save("k", token)
        own_redis.stop()
        with anyio.fail_after(3), caplog.at_level(logging.WARNING):
            assert await store.load("k") is None
            await store.save("k", token)  # skipped
            async with store.fetch_lock("k"):  # no shared lock: this process fetches alone
                pass
        warnings = redis_records(caplog, logging.WARNING)
        assert len(warnings) == 1 and "kept in this process only" in warnings[0]
        with pytest.raises(RedisUnavailableError):
            await store.ping()  # an explicit check says so


async def test_client_keeps_working_when_redis_stops(
    own_redis: RedisServer, emulator: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="baiduwx_async.redis")
    async with (
        RedisTokenStore(own_redis.url) as store,
        RedisRateLimiter(own_redis.url, qps=20) as limiter,
        wx.AsyncClient(
            credentials=wx.OAuthCredentials("test-api-key", "test-secret-key"),
            base_url=emulator.base_url,
            token_store=store,
            rate_limiter=limiter,
        ) as client,
    ):
        results: list[wx.BatchResult[str, wx.CompletionResponse]] = []
        with anyio.fail_after(20):
            async with client.iter_batch_complete(
                "pythia12b", [f"prompt {i}" for i in range(30)], concurrency=4
            ) as batch:
                async for result in batch:
                    results.append(result)
                    if len(results) == 10:
                        own_redis.stop()
                        emulator.post("revoke")  # the next calls need a new token
    assert len(results) == 30 and all(r.ok for r in results)
    stats = emulator.stats()
    assert stats["token_requests"] == 2 and stats["outcomes"].get("error_110", 0) >= 1
    assert "error_18" not in stats["outcomes"]
    warnings = redis_records(caplog, logging.WARNING)
    assert len(warnings) == 2, warnings  # the limiter's and the store's, once each


# --- processes: the command line and a worker script


def write_input(path: Path, count: int) -> None:
    with open(path, "w") as file:
        for i in range(count):
            file.write(json.dumps({"id": i, "prompt": f"prompt number {i}"}) + "\n")


def batch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "baiduwx_async.cli", "batch", "pythia12b", *args]


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class OkCounter(threading.Thread):
    """Polls the emulator's ok count: when the first and the `total`-th call finished."""

    def __init__(self, emulator: EmulatorProcess, total: int) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        self.total = total
        self.first: float | None = None
        self.last: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.emulator.base_url, timeout=5) as http:
            while not self.stop.is_set():
                ok = http.get("/_emulator/stats").json()["outcomes"].get("ok", 0)
                now = time.monotonic()
                if ok >= 1 and self.first is None:
                    self.first = now
                if ok >= self.total:
                    self.last = now
                    return
                time.sleep(0.01)


def test_eight_processes_share_one_qps(
    redis_url: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    total, workers = 200, 8
    source = tmp_path / "in.jsonl"
    write_input(source, total)
    counter = OkCounter(emulator, total)
    counter.start()
    processes = []
    try:
        for i in range(1, workers + 1):
            command = batch_command(str(source), "-o", str(tmp_path / f"out{i}.jsonl"))
            command += ["--complete", "--redis", redis_url, "--qps", str(EMULATOR_QPS)]
            command += ["--shard", f"{i}/{workers}", "--concurrency", "4", "--no-progress"]
            processes.append(
                subprocess.Popen(
                    command,
                    env=emulator.env(),
                    cwd=REPO,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=120) for p in processes]  # ~10 s unloaded
        saw(*(text for pair in outputs for text in pair))
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
        counter.stop.set()
        counter.join(timeout=5)
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err
    ids: list[int] = []
    for i in range(1, workers + 1):
        records = read_output(tmp_path / f"out{i}.jsonl")
        assert all(r["ok"] for r in records)
        assert all(shard_of(json.dumps(r["id"]), workers) == i - 1 for r in records)
        ids += [r["id"] for r in records]
    assert sorted(ids) == list(range(total))  # every item once: no overlap, no gap
    stats = emulator.stats()
    # Eight processes on a busy machine can bunch a few requests on their way to the
    # server (the shared schedule itself keeps under the limit: test_spacing_and_windows
    # above); a throttled request is retried, and stays the exception.
    assert stats["outcomes"].get("error_18", 0) <= total // 10, stats["outcomes"]
    assert stats["outcomes"]["ok"] == total
    assert stats["token_requests"] == 1  # 8 cold processes, one token
    assert counter.first is not None and counter.last is not None
    rate = (total - 1) / (counter.last - counter.first)
    print(f"8 processes, shared qps={EMULATOR_QPS}: {rate:.2f} calls/s")
    # one shared limit, not eight: never faster than it (a busy machine may be slower)
    assert EMULATOR_QPS / 3 < rate <= EMULATOR_QPS * 1.1, f"{rate:.2f} calls/s"


WORKER = textwrap.dedent(
    """
    import json, sys
    import anyio
    import baiduwx_async as wx
    from baiduwx_async.redis import RedisTokenStore

    async def main(url: str) -> None:
        async with RedisTokenStore(url) as store, wx.AsyncClient(token_store=store) as client:
            await store.ping()
            print("ready", flush=True)
            while (await anyio.to_thread.run_sync(sys.stdin.readline)).strip():
                try:
                    await client.complete("pythia12b", "hello")
                    print(json.dumps({"ok": True}), flush=True)
                except Exception as exc:
                    print(json.dumps({"ok": False, "error": type(exc).__name__}), flush=True)

    anyio.run(main, sys.argv[1])
    """
)


def test_eight_cold_processes_fetch_one_token_and_refresh_once(
    redis_url: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), redis_url],
            env=emulator.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]

    def round_of_calls() -> list[dict[str, Any]]:
        for p in processes:  # all at once: every process asks for the token together
            assert p.stdin is not None
            p.stdin.write("call\n")
            p.stdin.flush()
        answers = []
        for p in processes:
            assert p.stdout is not None
            answers.append(json.loads(p.stdout.readline()))
        return answers

    timer = threading.Timer(40, lambda: [p.kill() for p in processes])
    timer.start()
    try:
        for p in processes:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        assert round_of_calls() == [{"ok": True}] * 8
        stats = emulator.stats()
        assert stats["token_requests"] == 1 and stats["outcomes"] == {"ok": 8}

        emulator.post("revoke")
        emulator.post("reset_limits")
        assert round_of_calls() == [{"ok": True}] * 8
        stats = emulator.stats()
        assert stats["outcomes"] == {"ok": 16, "error_110": 8}  # each process saw 110 once
        assert stats["token_requests"] == 2  # and one refresh served them all
    finally:
        timer.cancel()
        for p in processes:
            if p.stdin is not None:
                p.stdin.close()
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            saw(read_all(p.stdout), read_all(p.stderr))


def test_redis_stopped_in_the_middle_of_a_cli_run(
    own_redis: RedisServer, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    total = 40
    source = tmp_path / "in.jsonl"
    write_input(source, total)
    outputs = [tmp_path / "out1.jsonl", tmp_path / "out2.jsonl"]
    processes = [
        subprocess.Popen(
            [
                *batch_command(str(source), "-o", str(out), "--complete", "--no-progress"),
                *["--redis", own_redis.url, "--qps", "10", "--shard", f"{i}/2"],
            ],
            env=emulator.env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, out in enumerate(outputs, 1)
    ]
    try:
        deadline = time.monotonic() + 20
        while sum(len(read_output(o)) for o in outputs if o.exists()) < 8:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.02)
        own_redis.stop()
        emulator.post("revoke")  # new tokens are needed while Redis is away
        results = [p.communicate(timeout=30) for p in processes]  # no hang
        saw(*(text for pair in results for text in pair))
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(processes, results, strict=True):
        assert p.returncode == 0, err
        assert "warning: Redis at redis://127.0.0.1:" in err and "unreachable" in err
    records = [r for o in outputs for r in read_output(o)]
    assert sorted(r["id"] for r in records) == list(range(total))  # nothing lost
    assert all(r["ok"] for r in records)
    # each worker falls back to 10/s of its own: 20/s together, still under the limit
    assert "error_18" not in emulator.stats()["outcomes"]


def test_cli_with_unreachable_redis_stops_before_any_item(
    emulator: EmulatorProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, 5)
    with refused_port() as port:
        url = f"redis://:hunter2-redis-pw@127.0.0.1:{port}/0"
        code = main(
            [
                *["batch", "pythia12b", str(source), "-o", str(out), "--complete"],
                *["--redis", url, "--qps", "5", "--no-progress"],
            ]
        )
    err = capsys.readouterr().err
    assert code == 1
    assert "error: Redis at redis://:***@127.0.0.1:" in err and "unavailable" in err
    assert "hunter2" not in err
    assert read_output(out) == []
    assert emulator.stats()["calls"] == 0


def test_shard_option_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.jsonl"
    write_input(source, 1)
    for bad in ("0/4", "5/4", "2", "a/b", "1/0"):
        args = ["batch", "m", str(source), "-o", str(tmp_path / "o.jsonl"), "--shard", bad]
        assert main(args) == 2, bad
        assert "--shard" in capsys.readouterr().err


def test_shards_split_the_input_without_overlap(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": i, "prompt": f"p{i}"}) for i in range(50)]
    lines += [json.dumps({"id": 7, "prompt": "again"}), "not json", json.dumps({"x": 1})]
    source.write_text("\n".join(lines) + "\n")
    seen: list[object] = []
    invalid = duplicates = 0
    for i in range(1, 5):
        inputs = BatchInputs(str(source), "complete", set(), lambda _: None, (i, 4))
        items = list(inputs)
        seen += [inputs.pop(index) for index in range(len(items))]
        invalid += inputs.invalid
        duplicates += inputs.duplicates
    assert sorted(seen) == list(range(50))  # type: ignore[type-var]
    assert invalid == 2 and duplicates == 1  # each reported by one shard only
