"""
Client CPU per sequential `chat` call, this working tree against another git revision, on
both backends: the A/B check that a change left the plain call's cost alone. Run:
`python benchmarks/call_cpu_ab.py [--base main] [--rounds 5] [--calls 1000]`.

Both libraries are driven by `calls.py`'s own child (the same contender code), in fresh
processes that alternate A, B, A, B, ... against one emulator process, so a busy machine
weighs on both alike; the table shows the medians of the rounds and B / A.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, ROOT, EmulatorProcess, fmt, median, run_child, snapshot_library

BACKENDS = ("ours-httpx", "ours-aiohttp")


def export(ref: str) -> Path:
    """`baiduwx_async/` as it is at `ref`, in a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="bench-base-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "baiduwx_async"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def cpu_per_call(root: Path, backend: str, url: str, calls: int) -> float | None:
    env = dict(os.environ, BENCH_LIB_ROOT=str(root))
    args = [str(BENCH_DIR / "calls.py"), "--worker", backend, "--mode", "calls", "--url", url]
    args += ["--n-seq", str(calls), "--n-conc", "64", "--budget", "120"]
    result = run_child(args, timeout=300, env=env)
    seq = result.get("seq") if isinstance(result, dict) else None
    if not seq or seq.get("failed") or not seq.get("done"):
        print(f"  {backend} at {root}: {result}", file=sys.stderr)
        return None
    return 1000 * float(seq["cpu"]) / int(seq["done"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--base", default="main", help="the git revision to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    head = snapshot_library()
    trees = {"A": export(args.base), "B": Path(os.environ["BENCH_LIB_ROOT"])}
    print(f"A = {args.base}; B = the working tree ({head})", file=sys.stderr)
    figures: dict[tuple[str, str], list[float]] = {}
    with EmulatorProcess() as emu:
        for round_ in range(args.rounds):
            for backend in BACKENDS:
                for side, root in trees.items():
                    value = cpu_per_call(root, backend, emu.url, args.calls)
                    if value is not None:
                        figures.setdefault((backend, side), []).append(value)
            print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr)
    print("| backend | A: ms CPU per call | B: ms CPU per call | B / A | rounds |")
    print("|---|---:|---:|---:|---|")
    for backend in BACKENDS:
        a, b = (
            median(figures.get((backend, "A"), [])),
            median(figures.get((backend, "B"), []), strict=False),
        )
        rounds = " ".join(
            f"{x:.3f}/{y:.3f}"
            for x, y in zip(
                figures.get((backend, "A"), []), figures.get((backend, "B"), []), strict=False
            )
        )
        print(f"| {backend} | {fmt(a, 3)} | {fmt(b, 3)} | {b / a:.3f} | {rounds} |")


if __name__ == "__main__":
    main()
