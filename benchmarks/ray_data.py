"""
Batches on Ray Data. Run: `python benchmarks/ray_data.py [--rows N] [--latency S]` (needs
the `ray` extra).

The same completions batch, against the same emulator (another process) answering after
`--latency` seconds (default 0.05), three ways:

- `iter_batch_complete` in this process, concurrency 32: the engine-free floor;
- `ds.map_batches(CompletionMapper, concurrency=1)`, 32 requests in flight per actor:
  the same work through Ray Data on one actor, so the difference is the engine's cost
  (scheduling, serialising blocks, its own event loop thread);
- the same on 2 actors (the machine has 2 cores, and the emulator shares them).

Rows per second, median of `--runs` runs (default 3); the Ray instance is started once
(its start-up, ~5 s, is not counted) and each run makes new actors, whose start is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    COMPLETION_ENDPOINT,
    SECRET_KEY,
    EmulatorProcess,
    Table,
    machine,
    median,
)

CONCURRENCY = 32


async def in_process(url: str, rows: int) -> float:
    import baiduwx_async as wx

    prompts = (f"Introduce city number {i}" for i in range(rows))
    credentials = wx.OAuthCredentials(API_KEY, SECRET_KEY)
    async with wx.AsyncClient(
        credentials=credentials, base_url=url, max_concurrency=CONCURRENCY
    ) as client:
        await client.complete(COMPLETION_ENDPOINT, "warm up")  # the token, a connection
        started = time.perf_counter()
        done = 0
        async for result in client.iter_batch_complete(
            COMPLETION_ENDPOINT, prompts, concurrency=CONCURRENCY
        ):
            assert result.ok, result.error
            done += 1
        elapsed = time.perf_counter() - started
    assert done == rows
    return rows / elapsed


def on_ray(rows: int, actors: int) -> float:
    import ray

    from baiduwx_async.ray import CompletionMapper

    items = [{"id": i, "prompt": f"Introduce city number {i}"} for i in range(rows)]
    ds = ray.data.from_items(items, override_num_blocks=max(8, actors * 4))
    started = time.perf_counter()
    out = ds.map_batches(
        CompletionMapper,
        concurrency=actors,
        batch_size=max(CONCURRENCY, rows // (actors * 8)),
        fn_constructor_kwargs={
            "endpoint": COMPLETION_ENDPOINT,
            "max_concurrency": CONCURRENCY,
        },
    ).take_all()
    elapsed = time.perf_counter() - started
    failed = [row for row in out if row["error"] is not None]
    assert len(out) == rows and not failed, failed[:3]
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import ray

    config = {"seed": 1, "latency": args.latency, "advertised_rpm": 10**8}
    config["advertised_tpm"] = 10**9
    with EmulatorProcess(config) as emu:
        saved = dict(os.environ)
        os.environ.update(QIANFAN_AK=API_KEY, QIANFAN_SK=SECRET_KEY, QIANFAN_BASE_URL=emu.url)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        )
        logging.getLogger("ray").setLevel(logging.WARNING)
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
        os.environ.clear()
        os.environ.update(saved)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            floor = median([asyncio.run(in_process(emu.url, args.rows)) for _ in range(args.runs)])
            one = median([on_ray(args.rows, 1) for _ in range(args.runs)])
            two = median([on_ray(args.rows, 2) for _ in range(args.runs)])
        finally:
            ray.shutdown()

    ideal = CONCURRENCY / args.latency
    scenario = f"{args.rows} completions, {args.latency * 1000:.0f} ms latency"
    table = Table()
    table.add("ray", scenario, "iter_batch_complete, one process", f"{floor:.0f}", "rows/s")
    table.add(
        "ray",
        scenario,
        "Ray Data, 1 actor",
        f"{one:.0f}",
        "rows/s",
        f"{one / floor:.2f}x in-process",
        f"{CONCURRENCY} in flight per actor; ideal {ideal:.0f} rows/s",
    )
    table.add(
        "ray",
        scenario,
        "Ray Data, 2 actors",
        f"{two:.0f}",
        "rows/s",
        f"{two / floor:.2f}x in-process",
        "actors' start counted",
    )
    print(f"# Ray Data ({machine()}, median of {args.runs})\n")
    print(table.render())


if __name__ == "__main__":
    main()
