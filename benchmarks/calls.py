"""
Calls over a real loopback socket, the emulator in another process (issue 8, scenarios
1, 2, 3 and 7). Run: `python benchmarks/calls.py [--quick]`.

1. sequential non-stream chat calls: wall ms and client CPU ms per call
   (`time.process_time` of the client process; the server's CPU is not in it);
2. non-stream calls at concurrency 64: calls per second;
3. streams of 50 chunks at concurrency 16: chunks per second;
7. 1,000 concurrent calls on a cold client: token requests the emulator saw.

Contenders: baiduwx_async on its httpx and its aiohttp backend; bare httpx (one
AsyncClient, pool of 200, the same POST with `?access_token=` from one token fetch, JSON
body, JSON parsed); bare aiohttp (one keep-alive ClientSession: the floor); the official
`qianfan` SDK's async path (`ChatCompletion(endpoint=...).ado(...)`).

Each contender runs in a fresh child process per run (so one's imports, pools and
garbage never weigh on another), the contenders take turns within each of the 3 runs,
and the table shows medians. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    BENCH_DIR,
    CHAT_ENDPOINT,
    MESSAGES,
    RUNS,
    SECRET_KEY,
    Deadline,
    EmulatorProcess,
    Table,
    apply_qianfan_env,
    fmt,
    has_module,
    median,
    print_json,
    ratio,
    run_child,
    snapshot_library,
)

OURS_HTTPX = "ours-httpx"
OURS_AIOHTTP = "ours-aiohttp"
BARE_HTTPX = "httpx"
BARE_AIOHTTP = "aiohttp"
SDK = "qianfan"
CONTENDERS = [OURS_HTTPX, OURS_AIOHTTP, BARE_HTTPX, BARE_AIOHTTP, SDK]
LABELS = {
    OURS_HTTPX: "baiduwx_async, httpx backend",
    OURS_AIOHTTP: "baiduwx_async, aiohttp backend",
    BARE_HTTPX: "bare httpx",
    BARE_AIOHTTP: "bare aiohttp (floor)",
    SDK: "qianfan SDK (official)",
}
POOL = 200
STREAM_SENTENCES = 50


# --------------------------------------------------------------------------- child side


class Contender:
    """One client under test: `call()` makes one non-stream chat call, `stream()` reads one
    chat stream to its end and returns how many chunks it parsed."""

    call: Callable[[], Awaitable[object]]
    stream: Callable[[], Awaitable[int]]

    async def aclose(self) -> None:
        pass


async def fetch_token(url: str) -> str:
    import httpx

    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{url}/oauth/2.0/token",
            params={
                "grant_type": "client_credentials",
                "client_id": API_KEY,
                "client_secret": SECRET_KEY,
            },
        )
        return str(r.json()["access_token"])


def chat_url(url: str) -> str:
    return f"{url}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{CHAT_ENDPOINT}"


class Ours(Contender):
    def __init__(self, url: str, backend: str) -> None:
        import baiduwx_async as wx

        self.client = wx.AsyncClient(
            credentials=wx.OAuthCredentials(API_KEY, SECRET_KEY),
            base_url=url,
            http_backend=backend,  # type: ignore[arg-type]
            max_concurrency=POOL,
        )

    async def call(self) -> object:
        return await self.client.chat(CHAT_ENDPOINT, MESSAGES)

    async def stream(self) -> int:
        n = 0
        async with self.client.chat_stream(CHAT_ENDPOINT, MESSAGES) as stream:
            async for _chunk in stream:
                n += 1
        return n

    async def aclose(self) -> None:
        await self.client.aclose()


class BareHttpx(Contender):
    async def setup(self, url: str) -> BareHttpx:
        import httpx

        token = await fetch_token(url)
        self.url = f"{chat_url(url)}?access_token={token}"
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL),
            timeout=300,
        )
        self.body = {"messages": MESSAGES}
        self.stream_body = {"messages": MESSAGES, "stream": True}
        return self

    async def call(self) -> object:
        r = await self.http.post(self.url, json=self.body)
        data = r.json()
        if "error_code" in data:
            raise RuntimeError(data)
        return data

    async def stream(self) -> int:
        n = 0
        loads = json.loads
        async with self.http.stream("POST", self.url, json=self.stream_body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    loads(line[5:])
                    n += 1
        return n

    async def aclose(self) -> None:
        await self.http.aclose()


class BareAiohttp(Contender):
    async def setup(self, url: str) -> BareAiohttp:
        import aiohttp

        token = await fetch_token(url)
        self.url = f"{chat_url(url)}?access_token={token}"
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL),
            timeout=aiohttp.ClientTimeout(total=300),
        )
        self.body = {"messages": MESSAGES}
        self.stream_body = {"messages": MESSAGES, "stream": True}
        return self

    async def call(self) -> object:
        async with self.session.post(self.url, json=self.body) as r:
            data = json.loads(await r.read())
        if "error_code" in data:
            raise RuntimeError(data)
        return data

    async def stream(self) -> int:
        n = 0
        loads = json.loads
        async with self.session.post(self.url, json=self.stream_body) as r:
            async for line in r.content:
                if line.startswith(b"data:"):
                    loads(line[5:])
                    n += 1
        return n

    async def aclose(self) -> None:
        await self.session.close()


class Sdk(Contender):
    def __init__(self, url: str) -> None:
        apply_qianfan_env(url)  # before the import: the SDK reads its settings once
        import qianfan

        self.chat = qianfan.ChatCompletion(endpoint=CHAT_ENDPOINT)

    async def call(self) -> object:
        return await self.chat.ado(messages=MESSAGES)

    async def stream(self) -> int:
        n = 0
        response = await self.chat.ado(messages=MESSAGES, stream=True)
        async for _chunk in response:  # type: ignore[union-attr]
            n += 1
        return n


async def make(name: str, url: str) -> Contender:
    if name == OURS_HTTPX:
        return Ours(url, "httpx")
    if name == OURS_AIOHTTP:
        return Ours(url, "aiohttp")
    if name == BARE_HTTPX:
        return await BareHttpx().setup(url)
    if name == BARE_AIOHTTP:
        return await BareAiohttp().setup(url)
    if name == SDK:
        return Sdk(url)
    raise ValueError(name)


async def run_bounded(
    fn: Callable[[], Awaitable[Any]], total: int, concurrency: int, deadline: Deadline
) -> tuple[int, int, list[Any]]:
    """`fn()` `total` times by `concurrency` workers, stopping early when time runs out.
    Returns (done, failed, a few results)."""
    jobs = iter(range(total))
    done = failed = 0
    sample: list[Any] = []
    first_error: list[str] = []

    async def worker() -> None:
        nonlocal done, failed
        for _ in jobs:
            if deadline.expired:
                return
            try:
                result = await fn()
            except Exception as exc:
                failed += 1
                if not first_error:
                    first_error.append(repr(exc)[:200])
                continue
            done += 1
            if len(sample) < 3:
                sample.append(result)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if first_error:
        sample.append({"first_error": first_error[0]})
    return done, failed, sample


async def measure(
    fn: Callable[[], Awaitable[Any]], total: int, concurrency: int, budget: float
) -> dict[str, Any]:
    gc.collect()
    deadline = Deadline(budget)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    done, failed, sample = await run_bounded(fn, total, concurrency, deadline)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    out: dict[str, Any] = {
        "done": done,
        "failed": failed,
        "wanted": total,
        "wall": wall,
        "cpu": cpu,
        "timed_out": done + failed < total,
    }
    if sample and isinstance(sample[-1], dict) and "first_error" in sample[-1]:
        out["error"] = sample[-1]["first_error"]
    return out


async def child_calls(name: str, url: str, n_seq: int, n_conc: int, budget: float) -> dict:
    c = await make(name, url)
    try:
        await run_bounded(c.call, 50, 1, Deadline(budget))  # token, connection, caches
        await run_bounded(c.call, 128, 64, Deadline(budget))  # warm the pool
        seq = await measure(c.call, n_seq, 1, budget)
        conc = await measure(c.call, n_conc, 64, budget)
    finally:
        await c.aclose()
    return {"seq": seq, "conc": conc}


async def child_streams(name: str, url: str, n_streams: int, budget: float) -> dict:
    c = await make(name, url)
    try:
        chunks: list[int] = []

        async def one() -> int:
            n = await c.stream()
            chunks.append(n)
            return n

        await run_bounded(one, 16, 16, Deadline(budget))  # warm-up
        chunks.clear()
        out = await measure(one, n_streams, 16, budget)
        out["chunks"] = sum(chunks)
        out["chunks_per_stream"] = sorted(set(chunks))
    finally:
        await c.aclose()
    return out


async def child_cold(name: str, url: str, n: int, budget: float) -> dict:
    c = await make(name, url)
    try:
        return await measure(c.call, n, n, budget)
    finally:
        await c.aclose()


def child_main(args: argparse.Namespace) -> None:
    if args.mode == "calls":
        result = asyncio.run(
            child_calls(args.worker, args.url, args.n_seq, args.n_conc, args.budget)
        )
    elif args.mode == "streams":
        result = asyncio.run(child_streams(args.worker, args.url, args.n_streams, args.budget))
    elif args.mode == "cold":
        result = asyncio.run(child_cold(args.worker, args.url, args.n_cold, args.budget))
    else:
        raise SystemExit(f"unknown mode {args.mode}")
    print_json(result)


# -------------------------------------------------------------------------- parent side


def available(name: str) -> bool:
    if name == SDK:
        return has_module("qianfan")
    if name in (OURS_AIOHTTP, BARE_AIOHTTP):
        return has_module("aiohttp") and (name != OURS_AIOHTTP or has_module("aiohttp"))
    return True


def _child(mode: str, name: str, url: str, sizes: dict[str, int], budget: float) -> dict:
    args = [
        str(BENCH_DIR / "calls.py"),
        "--worker",
        name,
        "--mode",
        mode,
        "--url",
        url,
        "--budget",
        str(budget),
        "--n-seq",
        str(sizes["seq"]),
        "--n-conc",
        str(sizes["conc"]),
        "--n-streams",
        str(sizes["streams"]),
        "--n-cold",
        str(sizes["cold"]),
    ]
    return run_child(args, timeout=4 * budget + 60)  # type: ignore[no-any-return]


def _note(results: list[dict]) -> str:
    notes = []
    failed = sum(r.get("failed", 0) for r in results if "error" not in r or "done" in r)
    if failed:
        notes.append(f"{failed} failed calls")
    partial = [r for r in results if r.get("timed_out")]
    if partial:
        notes.append(f"{len(partial)} run(s) hit the time limit: rate over the calls done")
    errors = {r["error"] for r in results if "error" in r}
    notes.extend(sorted(errors))
    return "; ".join(notes)


def run(emu: EmulatorProcess, quick: bool = False, runs: int = RUNS) -> tuple[Table, dict]:
    """Scenarios 1, 2, 3 and 7; returns the table rows and the raw medians."""
    sizes = (
        {"seq": 100, "conc": 500, "streams": 32, "cold": 200}
        if quick
        else {"seq": 1000, "conc": 5000, "streams": 200, "cold": 1000}
    )
    budget = 20.0 if quick else 120.0
    runs = 1 if quick else runs
    names = [n for n in CONTENDERS if available(n)]
    raw: dict[str, dict[str, list[dict]]] = {
        n: {"calls": [], "streams": [], "cold": []} for n in names
    }

    emu.configure(sentences_min=3, sentences_max=3, latency=0.0)
    for r in range(runs):
        for name in names:
            print(f"  calls: run {r + 1}/{runs} {name}", file=sys.stderr, flush=True)
            raw[name]["calls"].append(_child("calls", name, emu.url, sizes, budget))

    emu.configure(sentences_min=STREAM_SENTENCES, sentences_max=STREAM_SENTENCES)
    for r in range(runs):
        for name in names:
            print(f"  streams: run {r + 1}/{runs} {name}", file=sys.stderr, flush=True)
            raw[name]["streams"].append(_child("streams", name, emu.url, sizes, budget))
    emu.configure(sentences_min=3, sentences_max=3)

    cold_names = [n for n in names if n in (OURS_HTTPX, OURS_AIOHTTP, SDK)]
    token_counts: dict[str, list[int]] = {n: [] for n in cold_names}
    for r in range(runs):
        for name in cold_names:
            print(f"  cold: run {r + 1}/{runs} {name}", file=sys.stderr, flush=True)
            emu.reset_stats()
            result = _child("cold", name, emu.url, sizes, budget)
            stats = emu.stats()
            result["token_requests"] = stats["token_requests"]
            raw[name]["cold"].append(result)
            token_counts[name].append(stats["token_requests"])

    # ---- medians
    m: dict[str, dict[str, float]] = {}
    for name in names:
        calls = [x for x in raw[name]["calls"] if "seq" in x]
        streams = [x for x in raw[name]["streams"] if "done" in x]
        m[name] = {
            "seq_wall_ms": median(
                [x["seq"]["wall"] / max(1, x["seq"]["done"]) * 1e3 for x in calls]
            ),
            "seq_cpu_ms": median([x["seq"]["cpu"] / max(1, x["seq"]["done"]) * 1e3 for x in calls]),
            "conc_rate": median([x["conc"]["done"] / x["conc"]["wall"] for x in calls]),
            "conc_cpu_ms": median(
                [x["conc"]["cpu"] / max(1, x["conc"]["done"]) * 1e3 for x in calls]
            ),
            "stream_rate": median([x["chunks"] / x["wall"] for x in streams]),
            "stream_cpu_us": median([x["cpu"] / max(1, x["chunks"]) * 1e6 for x in streams]),
        }
        # Calls that failed, and runs that gave no answer at all (counted as one each):
        # a figure measured over failures is no figure, and the targets say so.
        m[name]["failed"] = sum(x["seq"]["failed"] + x["conc"]["failed"] for x in calls) + (
            len(raw[name]["calls"]) - len(calls)
        )
        m[name]["stream_failed"] = sum(x["failed"] for x in streams) + (
            len(raw[name]["streams"]) - len(streams)
        )
        m[name]["cold_failed"] = sum(x.get("failed", 1) for x in raw[name]["cold"])
        if name in token_counts:
            m[name]["tokens"] = median(token_counts[name])
            m[name]["tokens_max"] = max(token_counts[name], default=float("nan"))

    table = Table()
    n_seq, n_conc, n_str, n_cold = sizes["seq"], sizes["conc"], sizes["streams"], sizes["cold"]
    base = {"SDK": m.get(SDK), "aiohttp": m.get(BARE_AIOHTTP), "httpx": m.get(BARE_HTTPX)}

    def ratios(name: str, key: str) -> str:
        if name not in (OURS_HTTPX, OURS_AIOHTTP):
            if name == SDK and base["aiohttp"]:
                return f"÷floor {ratio(m[name][key], base['aiohttp'][key])}"
            if name == BARE_HTTPX and base["aiohttp"]:
                return f"÷floor {ratio(m[name][key], base['aiohttp'][key])}"
            return ""
        parts = []
        for label, other in (
            ("SDK", base["SDK"]),
            ("floor", base["aiohttp"]),
            ("httpx", base["httpx"]),
        ):
            if other is not None:
                parts.append(f"÷{label} {ratio(m[name][key], other[key])}")
        return ", ".join(parts)

    lower, higher = "ms (lower is better)", "calls/s (higher is better)"
    seq, conc = f"{n_seq:,} sequential chat calls", f"{n_conc:,} chat calls at concurrency 64"
    strm = f"{n_str} streams × {STREAM_SENTENCES} chunks"
    scenarios = [
        ("1", f"{seq}: wall per call", "seq_wall_ms", lower, "calls"),
        ("1", f"{seq}: client CPU per call", "seq_cpu_ms", lower, "calls"),
        ("2", conc, "conc_rate", higher, "calls"),
        ("2", f"{conc}: client CPU per call", "conc_cpu_ms", lower, "calls"),
        (
            "3",
            f"{strm} at concurrency 16",
            "stream_rate",
            "chunks/s (higher is better)",
            "streams",
        ),
        (
            "3",
            f"{strm}: client CPU per chunk",
            "stream_cpu_us",
            "µs (lower is better)",
            "streams",
        ),
    ]
    for section, title, key, unit, kind in scenarios:
        for name in CONTENDERS:
            if name not in names:
                table.add(section, title, LABELS[name], "not installed")
                continue
            note = _note(
                raw[name][kind]
                if kind == "streams"
                else [x.get("seq", x) for x in raw[name]["calls"]]
                + [x.get("conc", x) for x in raw[name]["calls"]]
            )
            if kind == "streams":
                per = {c for x in raw[name]["streams"] for c in x.get("chunks_per_stream", [])}
                if per and per != {STREAM_SENTENCES}:
                    note = "; ".join(filter(None, [note, f"chunks per stream {sorted(per)}"]))
            table.add(
                section, title, LABELS[name], fmt(m[name][key]), unit, ratios(name, key), note
            )

    for name in (OURS_HTTPX, OURS_AIOHTTP, SDK):
        title = f"{n_cold:,} concurrent cold calls: token requests"
        if name not in names:
            table.add("7", title, LABELS[name], "not installed")
            continue
        counts = token_counts[name]
        note = _note(raw[name]["cold"])
        table.add(
            "7",
            title,
            LABELS[name],
            fmt(m[name]["tokens"], 0),
            "requests (target 1)",
            "",
            "; ".join(filter(None, [f"runs: {counts}", note])),
        )
    return table, {"medians": m, "raw": raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="small counts, one run")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    # child mode
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=120.0, help=argparse.SUPPRESS)
    parser.add_argument("--n-seq", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--n-conc", type=int, default=5000, help=argparse.SUPPRESS)
    parser.add_argument("--n-streams", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--n-cold", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        child_main(args)
        return
    print(f"measuring {snapshot_library()}", file=sys.stderr)
    with EmulatorProcess() as emu:
        table, raw = run(emu, quick=args.quick, runs=args.runs)
    print(table.render())
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
