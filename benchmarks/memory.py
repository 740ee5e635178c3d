"""
Peak memory of a 20,000-item batch at concurrency 64, zero emulator latency (issue 8,
scenario 6). Run: `python benchmarks/memory.py [--quick]`.

Every contender runs in a fresh child process: it imports what it needs, builds the
20,000 prompts, reads its RSS high-water mark (`resource.getrusage(...).ru_maxrss`: the
baseline after imports), runs the batch against the emulator (another process), and
reports how far the high-water mark grew. Contenders:

- baiduwx_async `batch_complete` (every result kept, in input order: like for like with
  the SDK, which also returns the whole list);
- baiduwx_async `iter_batch_complete` (results consumed as they finish and dropped);
- the official SDK's `Completion(endpoint=...).abatch_do(prompts, worker_num=64)`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

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
    apply_qianfan_env,
    fmt,
    has_module,
    maxrss_mib,
    median,
    print_json,
    ratio,
    run_child,
    snapshot_library,
)

CONCURRENCY = 64
CONTENDERS = {
    "ours-list-httpx": "baiduwx_async `batch_complete`, httpx backend",
    "ours-list-aiohttp": "baiduwx_async `batch_complete`, aiohttp backend",
    "ours-iter-aiohttp": "baiduwx_async `iter_batch_complete`, aiohttp backend",
    "qianfan": "qianfan SDK `Completion.abatch_do(worker_num=64)`",
}


def prompts(n: int) -> list[str]:
    return [f"{PROMPT} ({i})" for i in range(n)]


async def _ours(kind: str, backend: str, url: str, items: list[str], budget: float) -> dict:
    import baiduwx_async as wx

    ok = failed = 0
    async with wx.AsyncClient(
        credentials=wx.OAuthCredentials(API_KEY, SECRET_KEY),
        base_url=url,
        http_backend=backend,  # type: ignore[arg-type]
    ) as client:
        with _deadline(budget) as timed_out:
            if kind == "list":
                results = await client.batch_complete(
                    COMPLETION_ENDPOINT, items, concurrency=CONCURRENCY
                )
                ok = sum(r.ok for r in results)
                failed = len(results) - ok
            else:
                async for r in client.iter_batch_complete(
                    COMPLETION_ENDPOINT, items, concurrency=CONCURRENCY
                ):
                    ok += r.ok
                    failed += not r.ok
    return {"ok": ok, "failed": failed, "timed_out": bool(timed_out)}


async def _sdk(url: str, items: list[str], budget: float) -> dict:
    import qianfan

    completion = qianfan.Completion(endpoint=COMPLETION_ENDPOINT)
    try:
        results = await asyncio.wait_for(
            completion.abatch_do(items, worker_num=CONCURRENCY), timeout=budget
        )
    except TimeoutError:
        return {"ok": 0, "failed": 0, "timed_out": True}
    failed = sum(isinstance(r, Exception) for r in results)
    return {"ok": len(results) - failed, "failed": failed, "timed_out": False}


class _deadline:
    """Cancel the enclosed awaits after `seconds` (asyncio), and remember that it did."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.hit: list[bool] = []

    def __enter__(self) -> list[bool]:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def fire() -> None:
            self.hit.append(True)
            task.cancel()

        self._handle = loop.call_later(self.seconds, fire)
        return self.hit

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._handle.cancel()
        if exc_type is asyncio.CancelledError and self.hit:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return True
        return False


def child(name: str, url: str, n: int, budget: float) -> None:
    if name == "qianfan":
        apply_qianfan_env(url)
        import qianfan  # noqa: F401
    else:
        import httpx  # noqa: F401

        import baiduwx_async  # noqa: F401

        if name.endswith("aiohttp"):
            import aiohttp  # noqa: F401
    items = prompts(n)
    gc.collect()
    baseline = maxrss_mib()
    start = time.perf_counter()
    if name == "qianfan":
        out = asyncio.run(_sdk(url, items, budget))
    else:
        _, kind, backend = name.split("-")
        out = asyncio.run(_ours(kind, backend, url, items, budget))
    out["seconds"] = time.perf_counter() - start
    out["baseline_mib"] = baseline
    out["peak_mib"] = maxrss_mib()
    out["growth_mib"] = out["peak_mib"] - baseline
    print_json(out)


def run(emu: EmulatorProcess, quick: bool = False, runs: int = RUNS) -> tuple[Table, dict]:
    n = 2000 if quick else 20_000
    runs = 1 if quick else runs
    budget = 30.0 if quick else 240.0
    emu.configure(latency=0.0, sentences_min=3, sentences_max=3)
    names = [c for c in CONTENDERS if c != "qianfan" or has_module("qianfan")]
    raw: dict[str, list[dict]] = {c: [] for c in names}
    for r in range(runs):
        for name in names:
            print(f"  memory: run {r + 1}/{runs} {name}", file=sys.stderr, flush=True)
            args = [
                str(BENCH_DIR / "memory.py"),
                "--child",
                name,
                "--url",
                emu.url,
                "--items",
                str(n),
                "--budget",
                str(budget),
            ]
            raw[name].append(run_child(args, timeout=budget + 120))
    # Only runs where every item succeeded in time count: failing fast costs no memory.
    clean = {
        name: [x for x in raw[name] if "growth_mib" in x and not x["failed"] and not x["timed_out"]]
        for name in names
    }
    growth = {name: median([x["growth_mib"] for x in clean[name]]) for name in names}
    table = Table()
    scenario = f"{n:,}-item batch at concurrency {CONCURRENCY}: peak RSS growth over baseline"
    sdk = growth.get("qianfan")
    for name, label in CONTENDERS.items():
        if name not in names:
            table.add("6", scenario, label, "not installed")
            continue
        good = [x for x in raw[name] if "growth_mib" in x]
        notes = []
        if good:
            notes.append(
                f"baseline {median([x['baseline_mib'] for x in good]):.0f} MiB, "
                f"{median([n / x['seconds'] for x in good if x['seconds'] > 0]):,.0f} items/s"
            )
        failed = sum(x.get("failed", 0) for x in good)
        if failed:
            notes.append(f"{failed} failed items")
        if len(clean[name]) < len(raw[name]):
            notes.append(f"median of the {len(clean[name])} clean run(s) of {len(raw[name])}")
        if any(x.get("timed_out") for x in good):
            notes.append("hit the time limit")
        notes.extend(sorted({x["error"] for x in raw[name] if "error" in x}))
        ratios = f"÷SDK {ratio(growth[name], sdk)}" if name != "qianfan" and sdk else ""
        table.add(
            "6",
            scenario,
            label,
            fmt(growth[name], 1),
            "MiB (lower is better)",
            ratios,
            "; ".join(notes),
        )
    return table, {"growth": growth, "raw": raw}


def main() -> None:
    parser = argparse.ArgumentParser(description="Peak memory of a 20,000-item batch.")
    parser.add_argument("--quick", action="store_true", help="2,000 items, one run")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, default=20_000, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=240.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.items, args.budget)
        return
    print(f"measuring {snapshot_library()}", file=sys.stderr)
    with EmulatorProcess() as emu:
        table, _ = run(emu, quick=args.quick, runs=args.runs)
    print(table.render())


if __name__ == "__main__":
    main()
