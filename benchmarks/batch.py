"""
Batches (issue 6). Run: `python benchmarks/batch.py [--quick] [--items N] [--time-limit S]`.

(a) Throughput: 10,000 prompts through `batch_complete` at concurrency 200 against the
    emulator (another process) answering after 50 ms. The ideal is 10,000 / 200 × 50 ms =
    2.5 s; the target is elapsed ≤ 1.2 × ideal. Both backends, each with
    `max_concurrency=200` (the pool is as large as the batch is wide), the aiohttp backend
    on asyncio's own loop and on uvloop, once more with a default client (pool of 100, so
    a `BatchWidthWarning`), and bare aiohttp at concurrency 200 on both loops as the floor
    (what this client process and this emulator can do at all on this machine). Client
    and emulator share the machine's cores, and at this pace the client's CPU per item is
    what bounds the time: the notes give it. Median of 3 runs, fresh child each.
(b) Memory: 1,000,000 lazily generated prompts through `iter_batch_complete` (concurrency
    64) against an in-process mock (`httpx.MockTransport` answering a fixed completion), in
    a fresh child: peak RSS growth over the baseline after imports, target < 150 MB. It is
    bounded in time (`--time-limit`, default 600 s): if the limit is hit, the growth is the
    one over the items done, which the table says. `--items N` sets the count.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    BENCH_DIR,
    COMPLETION_ENDPOINT,
    PROMPT,
    RUNS,
    SECRET_KEY,
    EmulatorProcess,
    Table,
    fmt,
    has_module,
    maxrss_mib,
    median,
    print_json,
    ratio,
    rss_mib,
    run_child,
    snapshot_library,
)

LATENCY = 0.05
CONCURRENCY = 200
ITEMS = 10_000
MOCK_ITEMS = 1_000_000
MOCK_CONCURRENCY = 64
MOCK_TIME_LIMIT = 600.0

THROUGHPUT = {
    "ours-aiohttp": "baiduwx_async, aiohttp backend, max_concurrency=200",
    "ours-aiohttp-uvloop": "baiduwx_async, aiohttp backend, max_concurrency=200, uvloop",
    "aiohttp": "bare aiohttp, 200 workers (the floor)",
    "aiohttp-uvloop": "bare aiohttp, 200 workers, uvloop",
    "ours-aiohttp-default": "baiduwx_async, aiohttp backend, default client (pool 100)",
    "ours-httpx": "baiduwx_async, httpx backend, max_concurrency=200",
}
#: Contenders that need a module beyond the library's core.
NEEDS = {"aiohttp": "aiohttp", "uvloop": "uvloop"}

COMPLETION = json.dumps(
    {
        "id": "as-ug3sigm9dx",
        "object": "completion",
        "created": 1795312317,
        "result": "The distant mountain guides a careful engineer. The distant answer crosses "
        "a careful festival. Many reliable journeys protect curious mountains every day.",
        "is_truncated": False,
        "need_clear_history": False,
        "usage": {"prompt_tokens": 1, "completion_tokens": 22, "total_tokens": 23},
    }
).encode()
TOKEN = json.dumps(
    {
        "refresh_token": "25.x",
        "expires_in": 2592000,
        "scope": "public wise_adapt",
        "session_key": "x",
        "access_token": "24.mock-token",
        "session_secret": "x",
    }
).encode()


# ------------------------------------------------------------------- (a) throughput


async def _throughput_ours(url: str, backend: str, pool: int | None, n: int, budget: float) -> dict:
    import baiduwx_async as wx

    async with wx.AsyncClient(
        credentials=wx.OAuthCredentials(API_KEY, SECRET_KEY),
        base_url=url,
        http_backend=backend,  # type: ignore[arg-type]
        max_concurrency=pool,
    ) as client:
        await client.complete(COMPLETION_ENDPOINT, PROMPT)  # the token, one connection
        prompts = (f"{PROMPT} ({i})" for i in range(n))
        start = time.perf_counter()
        cpu_start = time.process_time()
        ok = failed = 0
        timed_out = False
        try:
            async with asyncio.timeout(budget):
                async for r in client.iter_batch_complete(
                    COMPLETION_ENDPOINT, prompts, concurrency=CONCURRENCY
                ):
                    ok += r.ok
                    failed += not r.ok
        except TimeoutError:
            timed_out = True
        return {
            "ok": ok,
            "failed": failed,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start,
            "timed_out": timed_out,
        }


async def _throughput_aiohttp(url: str, n: int, budget: float) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as s:
        async with s.post(
            f"{url}/oauth/2.0/token",
            params={
                "grant_type": "client_credentials",
                "client_id": API_KEY,
                "client_secret": SECRET_KEY,
            },
        ) as r:
            token = (await r.json())["access_token"]
        target = f"{url}/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/{COMPLETION_ENDPOINT}"
        target += f"?access_token={token}"
        jobs = iter(range(n))
        ok = failed = 0

        async def worker() -> None:
            nonlocal ok, failed
            for i in jobs:
                async with s.post(target, json={"prompt": f"{PROMPT} ({i})"}) as r:
                    data = json.loads(await r.read())
                if "error_code" in data:
                    failed += 1
                else:
                    ok += 1

        start = time.perf_counter()
        cpu_start = time.process_time()
        timed_out = False
        try:
            async with asyncio.timeout(budget):
                await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        except TimeoutError:
            timed_out = True
        return {
            "ok": ok,
            "failed": failed,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start,
            "timed_out": timed_out,
        }


def child_throughput(name: str, url: str, n: int, budget: float) -> None:
    if name.endswith("-uvloop"):
        import uvloop

        run = uvloop.run
    else:
        run = asyncio.run
    if name.startswith("aiohttp"):
        out = run(_throughput_aiohttp(url, n, budget))
    else:
        backend = "httpx" if name == "ours-httpx" else "aiohttp"
        pool = None if name.endswith("default") else CONCURRENCY
        out = run(_throughput_ours(url, backend, pool, n, budget))
    print_json(out)


def run_throughput(emu: EmulatorProcess, quick: bool, runs: int) -> tuple[Table, dict]:
    n = 2000 if quick else ITEMS
    runs = 1 if quick else runs
    budget = 30.0 if quick else 120.0
    ideal = n / CONCURRENCY * LATENCY
    names = [k for k in THROUGHPUT if all(m not in k or has_module(m) for m in NEEDS.values())]
    raw: dict[str, list[dict]] = {k: [] for k in names}
    emu.configure(latency=LATENCY, sentences_min=3, sentences_max=3)
    try:
        for r in range(runs):
            for name in names:
                print(f"  batch (a): run {r + 1}/{runs} {name}", file=sys.stderr, flush=True)
                args = [
                    str(BENCH_DIR / "batch.py"),
                    "--child",
                    name,
                    "--url",
                    emu.url,
                    "--items",
                    str(n),
                    "--budget",
                    str(budget),
                ]
                raw[name].append(run_child(args, timeout=budget + 60))
    finally:
        emu.configure(latency=0.0)
    table = Table()
    scenario = (
        f"batch (a): {n:,} prompts, {LATENCY * 1e3:.0f} ms latency, concurrency {CONCURRENCY}: "
        f"elapsed (ideal {ideal:.2f} s)"
    )
    # A run cut short by the time limit counts with the time all items would have taken
    # at its rate (flagged in the notes), so a slow contender is not flattered by the cut.
    seconds = {}
    for name in names:
        good = [x for x in raw[name] if "seconds" in x and x["ok"]]
        seconds[name] = median([x["seconds"] * n / x["ok"] for x in good])
    for name in names:
        good = [x for x in raw[name] if "seconds" in x]
        notes = [f"{median([x['ok'] / x['seconds'] for x in good]):,.0f} items/s"] if good else []
        failed = sum(x["failed"] for x in good)
        if failed:
            notes.append(f"{failed} failed")
        if any(x["timed_out"] for x in good):
            notes.append("hit the time limit: elapsed projected from its rate")
        notes.extend(sorted({x["error"] for x in raw[name] if "error" in x}))
        ratios = f"÷ideal {ratio(seconds[name], ideal)} (target ≤ 1.2×)"
        same_loop = seconds.get("aiohttp-uvloop" if name.endswith("-uvloop") else "aiohttp")
        if not name.startswith("aiohttp") and same_loop:
            ratios += f", ÷bare aiohttp {ratio(seconds[name], same_loop)}"
        cpu = [x["cpu_seconds"] / x["ok"] * 1e3 for x in good if x.get("ok")]
        if cpu:
            notes.insert(1, f"client CPU {median(cpu):.3f} ms/item")
        table.add(
            "B-a",
            scenario,
            THROUGHPUT[name],
            fmt(seconds[name]),
            "s (lower is better)",
            ratios,
            "; ".join(notes),
        )
    return table, {"seconds": seconds, "ideal": ideal, "raw": raw}


# ----------------------------------------------------------------------- (b) memory


async def _mock_batch(n: int, time_limit: float) -> dict:
    import httpx

    import baiduwx_async as wx

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/2.0/token":
            return httpx.Response(200, content=TOKEN, headers={"content-type": "application/json"})
        return httpx.Response(200, content=COMPLETION, headers={"content-type": "application/json"})

    def lazily() -> object:
        for i in range(n):
            yield f"{PROMPT} ({i})"

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with wx.AsyncClient(
        credentials=wx.OAuthCredentials(API_KEY, SECRET_KEY),
        base_url="https://wenxin.mock",
        http_client=http,
    ) as client:
        await client.complete(COMPLETION_ENDPOINT, PROMPT)  # token and pool; not in the growth
        gc.collect()
        # The row is the growth of the live RSS, sampled every 1,000 items: the high-water
        # mark may still hold the peak of the imports and could hide any growth below it.
        baseline = maxrss_mib()
        rss_base = rss_max = rss_mib()
        start = time.perf_counter()
        ok = failed = 0
        timed_out = False
        samples: list[tuple[int, float]] = []
        next_sample = 0
        try:
            async with asyncio.timeout(time_limit):
                async for r in client.iter_batch_complete(
                    COMPLETION_ENDPOINT,
                    lazily(),
                    concurrency=MOCK_CONCURRENCY,  # type: ignore[arg-type]
                ):
                    ok += r.ok
                    failed += not r.ok
                    if (ok + failed) % 1000 == 0:
                        rss_max = max(rss_max, rss_mib())
                    if ok + failed >= next_sample:
                        samples.append((ok + failed, rss_mib() - rss_base))
                        next_sample += max(1, n // 10)
        except TimeoutError:
            timed_out = True
        seconds = time.perf_counter() - start
    await http.aclose()
    return {
        "items": n,
        "done": ok + failed,
        "failed": failed,
        "seconds": seconds,
        "rate": (ok + failed) / seconds,
        "timed_out": timed_out,
        "baseline_mib": baseline,
        "growth_mib": maxrss_mib() - baseline,
        "rss_base_mib": rss_base,
        "rss_growth_mib": rss_max - rss_base,
        "samples": samples,
    }


def run_memory(quick: bool, items: int | None, time_limit: float | None) -> tuple[Table, dict]:
    n = items or (50_000 if quick else MOCK_ITEMS)
    limit = time_limit or (60.0 if quick else MOCK_TIME_LIMIT)
    print(f"  batch (b): {n:,} items, at most {limit:.0f} s", file=sys.stderr, flush=True)
    args = [
        str(BENCH_DIR / "batch.py"),
        "--child",
        "mock",
        "--items",
        str(n),
        "--budget",
        str(limit),
    ]
    out = run_child(args, timeout=limit + 120)
    table = Table()
    scenario = (
        f"batch (b): {n:,} lazily generated prompts, `iter_batch_complete`, in-process mock, "
        f"concurrency {MOCK_CONCURRENCY}: growth of the live RSS (sampled every 1,000 items)"
    )
    label = "baiduwx_async, httpx.MockTransport"
    if "error" in out:
        table.add("B-b", scenario, label, "failed", "", "", out["error"])
        return table, out
    notes = [
        f"{out['rate']:,.0f} items/s, {out['seconds']:.0f} s, "
        f"live RSS {out['rss_base_mib']:.0f} MiB at the start",
        f"high-water mark +{out['growth_mib']:.1f} MiB over {out['baseline_mib']:.0f} MiB",
    ]
    if out["timed_out"]:
        notes.append(f"time limit hit after {out['done']:,} of {n:,} items")
    if out["failed"]:
        notes.append(f"{out['failed']} failed")
    mid = [s for s in out["samples"] if s[0] >= n // 2]
    if mid:
        notes.append(f"growth at {mid[0][0]:,} items: {mid[0][1]:.1f} MiB")
    table.add(
        "B-b",
        scenario,
        label,
        fmt(out["rss_growth_mib"], 1),
        "MiB (target < 150 MB)",
        f"÷target {ratio(out['rss_growth_mib'] * 1.048576, 150)}",
        "; ".join(notes),
    )
    return table, out


def run(
    emu: EmulatorProcess,
    quick: bool = False,
    runs: int = RUNS,
    items: int | None = None,
    time_limit: float | None = None,
) -> tuple[Table, dict]:
    table, a = run_throughput(emu, quick, runs)
    table_b, b = run_memory(quick, items, time_limit)
    table.extend(table_b)
    return table, {"throughput": a, "memory": b}


def main() -> None:
    parser = argparse.ArgumentParser(description="Batch throughput and memory (issue 6).")
    parser.add_argument("--quick", action="store_true", help="small counts, one run")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--items", type=int, help=f"prompts of part (b) (default {MOCK_ITEMS:,})")
    parser.add_argument(
        "--time-limit",
        type=float,
        help=f"seconds part (b) may take (default {MOCK_TIME_LIMIT:.0f})",
    )
    parser.add_argument("--only", choices=["a", "b"], help="run one part")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=120.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "mock":
        print_json(asyncio.run(_mock_batch(args.items, args.budget)))
        return
    if args.child:
        child_throughput(args.child, args.url, args.items, args.budget)
        return
    print(f"measuring {snapshot_library()}", file=sys.stderr)
    table = Table()
    if args.only != "b":
        with EmulatorProcess() as emu:
            table.extend(run_throughput(emu, args.quick, args.runs)[0])
    if args.only != "a":
        table.extend(run_memory(args.quick, args.items, args.time_limit)[0])
    print(table.render())


if __name__ == "__main__":
    main()
