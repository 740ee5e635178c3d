"""
Every benchmark of issues 6 and 8 in one run, printed as ONE markdown table.
Run: `python benchmarks/run_all.py [--quick] [--json results.json]`.

One emulator (`python -m baiduwx_async.emulator`, a separate process on a free loopback
port, high advertised limits) serves every scenario that needs a server; the clients run
in fresh child processes per contender and run. The last rows of the table check the
targets of issue 8 (and 6) against the medians measured above them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import batch
import calls
import imports
import memory
from _common import (
    RUNS,
    EmulatorProcess,
    Table,
    fmt,
    machine,
    ratio,
    snapshot_library,
)

# ------------------------------------------------------------- scenario 4: stream parsing


def parsing(quick: bool) -> tuple[Table, dict]:
    """Scenario 4 with `benchmarks/streaming.py`'s parsers and body (CPU per chunk, no I/O)."""
    import streaming

    import baiduwx_async._sse  # noqa: F401 - from the snapshot, before streaming.py adds the tree

    chunks = 2_000 if quick else 20_000
    streaming.CHUNKS = chunks  # `measure` checks every parser found this many
    streaming.RUNS = 1 if quick else 5
    body, per_event = streaming.build_body(chunks)
    workloads = {
        "4 KiB pieces": streaming.split_fixed(body, 4096),
        "1 chunk per piece": per_event,
    }
    parsers = {
        "floor (split + json.loads)": streaming.parse_floor,
        "baiduwx_async SSEDecoder": streaming.parse_ours,
        "baiduwx_async chat_stream (end to end)": streaming.parse_client,
    }
    httpx_sse = streaming.make_httpx_sse()
    if httpx_sse is not None:
        parsers["httpx-sse"] = httpx_sse
    table = Table()
    raw: dict[str, dict[str, float]] = {}
    for workload, pieces in workloads.items():
        results = streaming.measure(parsers, pieces)
        raw[workload] = results
        floor = results["floor (split + json.loads)"]
        scenario = (
            f"stream parsing, {chunks:,}-chunk body from memory, {workload}: CPU per chunk "
            f"(median of {streaming.RUNS})"
        )
        for name, per_chunk in results.items():
            ratios = "" if name.startswith("floor") else f"÷floor {ratio(per_chunk, floor)}"
            table.add("4", scenario, name, fmt(per_chunk * 1e6), "µs (lower is better)", ratios)
        table.add(
            "4",
            scenario,
            "qianfan SDK",
            "n/a",
            "",
            "",
            "no stand-alone parser (it parses inside its aiohttp iterator): see row 3",
        )
    return table, raw


# ------------------------------------------------------------------------------ targets


def targets(m: dict[str, Any]) -> Table:
    c = m["calls"]["medians"]
    t = Table()

    def check(
        goal: str, who: str, value: float | None, ok: bool | None, detail: str, failed: int = 0
    ) -> None:
        verdict = "–" if ok is None else ("**holds**" if ok else "**misses**")
        if failed:
            verdict, detail = "invalid", f"{detail}; {failed} failed call(s) in the runs"
        t.add("T", goal, who, fmt(value) if value is not None else "–", "", verdict, detail)

    def failed(*names: str, key: str = "failed") -> int:
        return int(sum(c.get(n, {}).get(key, 0) for n in names))

    def get(name: str, key: str) -> float | None:
        v = c.get(name, {}).get(key)
        return None if v is None or v != v else v

    sdk_rate, floor_rate = get("qianfan", "conc_rate"), get("aiohttp", "conc_rate")
    ours_rate = get("ours-aiohttp", "conc_rate")
    if ours_rate and sdk_rate:
        x = ours_rate / sdk_rate
        check(
            "c=64 calls/s ≥ 2.5× SDK",
            "aiohttp backend",
            x,
            x >= 2.5,
            f"{x:.2f}× the SDK",
            failed("ours-aiohttp", "qianfan"),
        )
    if ours_rate and floor_rate:
        x = ours_rate / floor_rate
        check(
            "c=64 calls/s ≥ 0.5× bare aiohttp",
            "aiohttp backend",
            x,
            x >= 0.5,
            f"{x:.2f}×",
            failed("ours-aiohttp", "aiohttp"),
        )
    sdk_cpu = get("qianfan", "seq_cpu_ms")
    for name, who in (("ours-aiohttp", "aiohttp backend"), ("ours-httpx", "httpx backend")):
        v = get(name, "seq_cpu_ms")
        if v and sdk_cpu:
            x = v / sdk_cpu
            check(
                "sequential client CPU/call ≤ 0.5× SDK",
                who,
                x,
                x <= 0.5,
                f"{x:.2f}× the SDK",
                failed(name, "qianfan"),
            )
    ours_cpu, bare_cpu = get("ours-httpx", "seq_cpu_ms"), get("httpx", "seq_cpu_ms")
    if ours_cpu and bare_cpu:
        x = ours_cpu / bare_cpu
        check(
            "CPU/call ≤ 1.15× bare httpx",
            "httpx backend",
            x,
            x <= 1.15,
            f"{x:.2f}× (sequential)",
            failed("ours-httpx", "httpx"),
        )
    ours_hx, bare_hx = get("ours-httpx", "conc_rate"), get("httpx", "conc_rate")
    if ours_hx and bare_hx:
        x = ours_hx / bare_hx
        check(
            "c=64 calls/s ≥ bare httpx",
            "httpx backend",
            x,
            x >= 1.0,
            f"{x:.2f}×",
            failed("ours-httpx", "httpx"),
        )
    for workload, results in m["parsing"].items():
        floor = results["floor (split + json.loads)"]
        x = results["baiduwx_async SSEDecoder"] / floor
        check("stream parsing ≤ 1.5× floor", f"SSEDecoder, {workload}", x, x <= 1.5, f"{x:.2f}×")
    imp = m["imports"]
    if "baiduwx_async" in imp and "dependency floor" in imp:
        x = imp["baiduwx_async"]["ms"] / imp["dependency floor"]["ms"]
        xc = imp["baiduwx_async"]["cpu_ms"] / imp["dependency floor"]["cpu_ms"]
        check(
            "import time ≤ 1.15× dependencies",
            "import baiduwx_async",
            x,
            x <= 1.15,
            f"{x:.2f}× wall ({xc:.2f}× CPU)",
        )
    growth = m["memory"]["growth"]
    if growth.get("qianfan"):
        for name, label in memory.CONTENDERS.items():
            if name == "qianfan" or name not in growth:
                continue
            x = growth[name] / growth["qianfan"]
            who = label.replace("baiduwx_async ", "")
            check("batch peak memory ≤ ½ SDK", who, x, x <= 0.5, f"{x:.2f}× the SDK")
    for name, who in (("ours-httpx", "httpx backend"), ("ours-aiohttp", "aiohttp backend")):
        runs = [r.get("token_requests") for r in m["calls"]["raw"].get(name, {}).get("cold", [])]
        if runs:
            ok = all(n == 1 for n in runs)
            check(
                "cold burst: exactly 1 token request",
                who,
                max(runs),
                ok,
                f"every run: {runs}",
                failed(name, key="cold_failed"),
            )
    a = m["batch"]["throughput"]
    for name in ("ours-httpx", "ours-aiohttp", "ours-aiohttp-uvloop"):
        s = a["seconds"].get(name)
        if s:
            x = s / a["ideal"]
            floor = a["seconds"].get("aiohttp-uvloop" if "uvloop" in name else "aiohttp")
            extra = f"; bare aiohttp itself {floor / a['ideal']:.2f}×" if floor else ""
            check(
                "issue 6: batch ≤ 1.2× ideal",
                name.replace("ours-", "").replace("-uvloop", " on uvloop") + " backend",
                x,
                x <= 1.2,
                f"{x:.2f}× of {a['ideal']:.2f} s{extra}",
            )
    b = m["batch"]["memory"]
    if "rss_growth_mib" in b:
        mb = b["rss_growth_mib"] * 1.048576  # the live RSS: the high-water mark cannot move
        done = f" over {b['done']:,} items" + (" (time limit)" if b["timed_out"] else "")
        check(
            "issue 6: lazy batch growth < 150 MB",
            "iter_batch_complete",
            mb,
            mb < 150,
            f"{mb:.1f} MB{done}",
        )
    return t


# --------------------------------------------------------------------------------- main

ORDER = ["1", "2", "3", "4", "5", "6", "7", "B-a", "B-b", "T"]


def main() -> None:
    parser = argparse.ArgumentParser(description="All benchmarks, one table.")
    parser.add_argument("--quick", action="store_true", help="smoke mode: small counts, 1 run")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--items", type=int, help="prompts of batch (b) (default 1,000,000)")
    parser.add_argument("--time-limit", type=float, help="seconds batch (b) may take (600)")
    parser.add_argument("--json", type=Path, help="write the raw results here too")
    args = parser.parse_args()

    started = time.monotonic()
    load_before = os.getloadavg()
    code = snapshot_library()
    m: dict[str, Any] = {}
    table = Table()

    def step(name: str) -> None:
        elapsed = time.monotonic() - started
        print(f"[{elapsed:6.0f} s] {name}", file=sys.stderr, flush=True)

    with EmulatorProcess() as emu:
        step(f"emulator at {emu.url} (pid {emu.pid})")
        step("scenarios 1, 2, 3, 7: calls")
        t, m["calls"] = calls.run(emu, quick=args.quick, runs=args.runs)
        table.extend(t)
        step("scenario 6: batch memory")
        t, m["memory"] = memory.run(emu, quick=args.quick, runs=args.runs)
        table.extend(t)
        step("batch (a): throughput at 50 ms latency")
        t, a = batch.run_throughput(emu, args.quick, args.runs)
        table.extend(t)
    step("scenario 4: stream parsing")
    t, m["parsing"] = parsing(args.quick)
    table.extend(t)
    step("scenario 5: import time")
    t, m["imports"] = imports.run(quick=args.quick)
    table.extend(t)
    step("batch (b): lazy batch memory")
    t, b = batch.run_memory(args.quick, args.items, args.time_limit)
    table.extend(t)
    m["batch"] = {"throughput": a, "memory": b}
    table.extend(targets(m))
    step("done")

    table.rows.sort(key=lambda row: ORDER.index(row[0]) if row[0] in ORDER else len(ORDER))
    mode = "quick smoke run (small counts, 1 run)" if args.quick else f"medians of {args.runs} runs"
    load = f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    print(
        f"baiduwx_async benchmarks: {machine()}; {code}; {mode}; {load}; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    print()
    print(table.render())
    if args.json:
        args.json.write_text(json.dumps(m, indent=1, default=str))


if __name__ == "__main__":
    main()
