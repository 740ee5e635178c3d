"""
Import time of each package in a fresh interpreter (issue 8, scenario 5).
Run: `python benchmarks/imports.py [--quick]`.

Each measurement is a new `python -c` that times only the import statement
(`time.perf_counter()` around it, interpreter start-up excluded; the CPU time of the
same import is in the notes, as it suffers less from a busy machine). The targets take turns
within each round, after one discarded warm-up round (which also writes the .pyc files);
the table shows the median of 5 rounds. The dependency floor is what `baiduwx_async`
cannot avoid loading: `httpx, anyio, attrs, cattrs` together.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Table,
    fmt,
    has_module,
    median,
    ratio,
    run_child,
    snapshot_library,
)

TARGETS = {
    "baiduwx_async": ("import baiduwx_async", "baiduwx_async"),
    "dependency floor": ("import httpx, anyio, attrs, cattrs", "httpx"),
    "qianfan SDK": ("import qianfan", "qianfan"),
    "aiohttp": ("import aiohttp", "aiohttp"),
}
ROUNDS = 5

_PROBE = """
import sys, time, json
before = set(sys.modules)
t, c = time.perf_counter(), time.process_time()
{statement}
elapsed, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({{"ms": elapsed * 1e3, "cpu_ms": cpu * 1e3,
                  "modules": len(set(sys.modules) - before)}}))
"""


def measure(rounds: int) -> dict[str, dict[str, float]]:
    present = {name: stmt for name, (stmt, module) in TARGETS.items() if has_module(module)}
    times: dict[str, list[float]] = {name: [] for name in present}
    cpu: dict[str, list[float]] = {name: [] for name in present}
    modules: dict[str, int] = {}
    errors: dict[str, str] = {}
    for r in range(rounds + 1):  # round 0 is a warm-up
        for name, statement in present.items():
            out = run_child(["-c", _PROBE.format(statement=statement)], timeout=120)
            if "error" in out:
                errors[name] = out["error"]
                continue
            if r > 0:
                times[name].append(out["ms"])
                cpu[name].append(out["cpu_ms"])
            modules[name] = out["modules"]
    result = {}
    for name in TARGETS:
        if name not in present:
            continue
        result[name] = {
            "ms": median(times[name]),
            "cpu_ms": median(cpu[name]),
            "modules": modules.get(name, 0),
        }
        if name in errors:
            result[name]["error"] = errors[name]  # type: ignore[assignment]
    return result


def run(quick: bool = False) -> tuple[Table, dict]:
    rounds = 2 if quick else ROUNDS
    m = measure(rounds)
    table = Table()
    floor = m.get("dependency floor", {}).get("ms")
    floor_cpu = m.get("dependency floor", {}).get("cpu_ms")
    for name, (statement, _) in TARGETS.items():
        scenario = f"import time, fresh interpreter, median of {rounds}"
        label = f"`{statement}`"
        if name not in m:
            table.add("5", scenario, label, "not installed")
            continue
        ms = m[name]["ms"]
        ratios = "" if name == "dependency floor" else f"÷deps {ratio(ms, floor)}"
        cpu = m[name]["cpu_ms"]
        note = f"CPU {cpu:.1f} ms"
        if name != "dependency floor":
            note += f" (÷deps {ratio(cpu, floor_cpu)})"
        note += f"; {m[name]['modules']} modules loaded"
        if "error" in m[name]:
            note += f"; {m[name]['error']}"
        table.add("5", scenario, label, fmt(ms, 1), "ms (lower is better)", ratios, note)
    return table, m


def main() -> None:
    parser = argparse.ArgumentParser(description="Import time of each package.")
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 5")
    args = parser.parse_args()
    print(f"measuring {snapshot_library()}", file=sys.stderr)
    table, _ = run(quick=args.quick)
    print(table.render())


if __name__ == "__main__":
    main()
