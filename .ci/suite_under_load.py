"""Run the whole test suite several times in a row with CPU-bound processes beside it:
the check that no test depends on having the machine to itself.

    .venv/bin/python .ci/suite_under_load.py [--runs 5] [--hogs 2] [-- PYTEST ARGS]

Each hog is a Python process spinning on one core; all of them are killed when the runs
end or this script is stopped (Ctrl-C or SIGTERM), and each ends by itself when this script
is gone or after --hog-limit seconds, whatever happens. Stops at the first
failing run and exits with its code; prints the time of every run and the load average.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

HOG = """
import os, time
parent, end = os.getppid(), time.monotonic() + {limit}
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that `finally` kills the hogs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=positive, default=5)
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("--hog-limit", type=float, default=4 * 3600.0)
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    hogs = [
        subprocess.Popen([sys.executable, "-c", HOG.format(limit=args.hog_limit)])
        for _ in range(args.hogs)
    ]
    durations: list[float] = []
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            code = subprocess.call([sys.executable, "-m", "pytest", "-q", *args.pytest_args])
            durations.append(time.monotonic() - started)
            load = os.getloadavg()[0]
            print(
                f"run {run}/{args.runs}: exit {code} in {durations[-1] / 60:.1f} min "
                f"(load average {load:.1f}, {args.hogs} hogs)",
                flush=True,
            )
            if code != 0:
                return code
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(
        f"{args.runs} runs passed in a row; slowest {max(durations) / 60:.1f} min, "
        f"fastest {min(durations) / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
