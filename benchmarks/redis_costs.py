"""
What sharing through Redis costs per call (issue 10): the Redis rate limiter and token
store against their in-process counterparts, against a real `redis-server` on loopback.
Run: `python benchmarks/redis_costs.py [--quick] [--redis URL]`.

Without `--redis` the script starts its own `redis-server` (no persistence) on a free
port and stops it at the end. Every figure is the median over rounds of (elapsed / calls)
for calls made one after another in one asyncio task, except the "16 tasks" rows (wall
time per call with 16 tasks calling at once, over one connection pool). The limiter runs
at qps=1e6, so `acquire` never waits: one round trip to Redis (EVALSHA of one script).

The token budget (issue 18) rows charge 100 tokens and settle them at 50, at tpm=1e12 (no
wait): `acquire_tokens` + `settle` is two round trips through Redis (the booking and the
settlement scripts) when the limiter has no qps/rpm, three with qps (the start slot too).
"Without qps" is the request limiter that only shares the slow-down after rate-limit
answers: its starts are reported every 0.1 s, not one round trip each.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anyio
from _common import Table, fmt, machine, median, ratio

import baiduwx_async as wx
from baiduwx_async.redis import RedisRateLimiter, RedisTokenStore

SECTION = "redis"


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    path = shutil.which("redis-server")
    if path is None:
        sys.exit(
            "redis-server is not installed (.ci/run installs it: apt-get install redis-server)"
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            sys.exit("redis-server did not start")
        time.sleep(0.02)
    return process, f"redis://127.0.0.1:{port}/0"


async def per_call_us(call: Callable[[], Awaitable[object]], calls: int, rounds: int) -> float:
    """Median over rounds of the µs per call, calls made one after another."""
    for _ in range(min(calls, 200)):  # warm-up: connections, scripts loaded
        await call()
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        results.append((time.perf_counter() - started) / calls * 1e6)
    return median(results)


async def concurrent_us(
    call: Callable[[], Awaitable[object]], calls: int, rounds: int, tasks: int = 16
) -> float:
    """Median over rounds of the wall µs per call with `tasks` tasks calling at once."""
    per_task = max(1, calls // tasks)

    async def worker() -> None:
        for _ in range(per_task):
            await call()

    results = []
    for _ in range(rounds + 1):
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(tasks):
                group.start_soon(worker)
        results.append((time.perf_counter() - started) / (per_task * tasks) * 1e6)
    return median(results[1:])  # the first round opened the pool's connections


async def measure(url: str, calls: int, rounds: int) -> Table:
    table = Table()
    token = wx.AccessToken("a-benchmark-token", time.time(), 3600)
    success = {"throttled": False, "ratelimit": None}

    async with (
        RedisRateLimiter(url, qps=1e6, prefix="bench:", cold_start=0) as shared,
        RedisTokenStore(url, prefix="bench:") as store,
    ):
        local = wx.AdaptiveRateLimiter(qps=1e6)
        memory = wx.MemoryTokenStore()
        await store.save("key", token)
        await memory.save("key", token)
        client = store._backend.client()

        ping = await per_call_us(client.ping, calls, rounds)
        table.add(SECTION, "round trip (PING)", "redis-py asyncio", fmt(ping, 1), "µs/call")

        rows: list[tuple[str, Callable[[], Awaitable[object]], Callable[[], Awaitable[object]]]]
        tokens_only = RedisRateLimiter(url, tpm=1e12, prefix="bench:", name="t", cold_start=0)
        tokens_qps = RedisRateLimiter(
            url, qps=1e6, tpm=1e12, prefix="bench:", name="tq", cold_start=0
        )
        open_limiter = RedisRateLimiter(url, prefix="bench:", name="open", cold_start=0)
        local_tokens = wx.AdaptiveRateLimiter(tpm=1e12)
        local_tokens_qps = wx.AdaptiveRateLimiter(qps=1e6, tpm=1e12)
        local_open = wx.AdaptiveRateLimiter()

        def charge(limiter: wx.TokenRateLimiter) -> Callable[[], Awaitable[object]]:
            async def once() -> None:
                await limiter.settle(await limiter.acquire_tokens(100), 50)

            return once

        rows = [
            ("limiter.acquire (no wait)", shared.acquire, local.acquire),
            ("limiter.acquire without qps", open_limiter.acquire, local_open.acquire),
            (
                "tokens: acquire_tokens + settle",
                charge(tokens_only),
                charge(local_tokens),
            ),
            (
                "tokens and qps: acquire_tokens + settle",
                charge(tokens_qps),
                charge(local_tokens_qps),
            ),
            (
                "limiter.feedback (success)",
                lambda: shared.feedback(**success),  # type: ignore[arg-type]
                lambda: local.feedback(**success),  # type: ignore[arg-type]
            ),
            ("store.load (hit)", lambda: store.load("key"), lambda: memory.load("key")),
        ]
        for scenario, redis_call, local_call in rows:
            remote = await per_call_us(redis_call, calls, rounds)
            here = await per_call_us(local_call, calls * 10, rounds)
            table.add(SECTION, scenario, "Redis", fmt(remote, 1), "µs/call", ratio(remote, here))
            table.add(SECTION, scenario, "in-process", fmt(here, 2), "µs/call")

        async def lock_once() -> None:
            async with store.fetch_lock("key"):
                pass

        lock = await per_call_us(lock_once, calls, rounds)
        table.add(
            SECTION,
            "store.fetch_lock (uncontended)",
            "Redis",
            fmt(lock, 1),
            "µs/call",
            notes="SET NX PX + compare-and-delete script; taken once per token fetch",
        )
        burst = await concurrent_us(shared.acquire, calls, rounds)
        table.add(
            SECTION,
            "limiter.acquire, 16 tasks at once",
            "Redis",
            fmt(burst, 1),
            "µs/call (wall)",
            ratio(burst, ping),
            "ratio: against one PING round trip",
        )
        load_burst = await concurrent_us(lambda: store.load("key"), calls, rounds)
        table.add(SECTION, "store.load, 16 tasks at once", "Redis", fmt(load_burst, 1),
                  "µs/call (wall)", ratio(load_burst, ping))  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    parser.add_argument("--redis", metavar="URL", help="use this Redis instead of starting one")
    args = parser.parse_args()
    calls, rounds = (300, 3) if args.quick else (2000, 7)
    process = None
    url = args.redis
    if url is None:
        process, url = start_redis()
    try:
        table = anyio.run(measure, url, calls, rounds)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
    print(f"# Redis costs per call ({machine()}; {calls} calls x {rounds} rounds, medians)\n")
    print(table.render())
    print("\nratios: Redis against in-process, unless noted")


if __name__ == "__main__":
    main()
