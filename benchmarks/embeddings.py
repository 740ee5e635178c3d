"""
Embeddings over a real loopback socket, the emulator in another process. Run:
`python benchmarks/embeddings.py [--texts 100000] [--million 1000000] [--quick]`.

1. `--texts` texts (distinct, ~40 characters) to `embedding-v1` (384 dimensions), 16 to a
   request, at most `--concurrency` requests in flight, by:
   - baiduwx_async `embed()` (one call: one `EmbeddingResponse`) on each backend;
   - baiduwx_async `batch_embed()` (one `BatchResult` per text) on each backend;
   - the official SDK's async batch path, `qianfan.Embedding(endpoint=...).abatch_do(
     [16 texts, 16 texts, ...], worker_num=concurrency)`.
   Texts per second (wall), client CPU seconds, and the client's peak memory over its
   baseline (RSS high-water mark after the run minus RSS before it, with the input list
   already built): the vectors themselves take ~12 KiB each as Python floats, for everyone.
2. `--million` lazily generated texts through `iter_batch_embed()` (aiohttp backend),
   results dropped as they come: RSS sampled along the way stays flat.

Each measure runs in a fresh child process; the emulator's own CPU is not in the figures,
but on a small machine it shares the cores with the client, so rates are bounded by it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    BENCH_DIR,
    SECRET_KEY,
    EmulatorProcess,
    Table,
    apply_qianfan_env,
    fmt,
    has_module,
    machine,
    maxrss_mib,
    median,
    print_json,
    ratio,
    rss_mib,
    run_child,
    snapshot_library,
)

ENDPOINT = "embedding-v1"
PER_REQUEST = 16
WORKERS = {
    "embed-aiohttp": "baiduwx_async embed(), aiohttp",
    "embed-httpx": "baiduwx_async embed(), httpx",
    "batch-aiohttp": "baiduwx_async batch_embed(), aiohttp",
    "batch-httpx": "baiduwx_async batch_embed(), httpx",
    "qianfan": "qianfan SDK Embedding.abatch_do",
}


def text(i: int) -> str:
    return f"text {i}: the Great Wall of China, seen from afar"


# --------------------------------------------------------------------------- child side


def client(url: str, backend: str, concurrency: int) -> Any:
    import baiduwx_async as wx

    return wx.AsyncClient(
        credentials=wx.OAuthCredentials(API_KEY, SECRET_KEY),
        base_url=url,
        http_backend=backend,
        max_concurrency=concurrency,
    )


class Timer:
    """Wall and CPU time from `start()`, taken once the client is warm."""

    def start(self) -> None:
        gc.collect()
        self.rss = rss_mib()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, done: int, dimension: int) -> dict[str, Any]:
        return {
            "done": done,
            "dimension": dimension,
            "wall": time.perf_counter() - self.wall,
            "cpu": time.process_time() - self.cpu,
            "peak_mib": maxrss_mib() - self.rss,
        }


async def run_ours(url: str, worker: str, texts: list[str], concurrency: int) -> dict[str, Any]:
    kind, backend = worker.split("-")
    timer = Timer()
    async with client(url, backend, concurrency) as wx_client:
        await wx_client.embed(ENDPOINT, texts[: PER_REQUEST * concurrency])  # token, pool
        timer.start()
        if kind == "embed":
            reply = await wx_client.embed(ENDPOINT, texts)
            return timer.stop(len(reply.data), len(reply.data[-1].embedding))
        results = await wx_client.batch_embed(ENDPOINT, texts, concurrency=concurrency)
        good = [r.response for r in results if r.response is not None]
        return timer.stop(len(good), len(good[-1]))


async def run_sdk(url: str, texts: list[str], concurrency: int) -> dict[str, Any]:
    apply_qianfan_env(url)  # before the import: the SDK reads its settings once
    import qianfan

    embedder = qianfan.Embedding(endpoint=ENDPOINT)
    warm = [texts[i : i + PER_REQUEST] for i in range(0, PER_REQUEST * concurrency, PER_REQUEST)]
    await embedder.abatch_do(warm, worker_num=concurrency)  # token, imports, caches
    timer = Timer()
    timer.start()
    groups = [texts[i : i + PER_REQUEST] for i in range(0, len(texts), PER_REQUEST)]
    replies = await embedder.abatch_do(groups, worker_num=concurrency)
    vectors = [item["embedding"] for reply in replies for item in reply.body["data"]]
    return timer.stop(len(vectors), len(vectors[-1]))


def child_batch(worker: str, url: str, n: int, concurrency: int) -> dict[str, Any]:
    texts = [text(i) for i in range(n)]
    if worker == "qianfan":
        return asyncio.run(run_sdk(url, texts, concurrency))
    return asyncio.run(run_ours(url, worker, texts, concurrency))


def child_million(url: str, n: int, concurrency: int) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        samples: list[float] = []
        done = failed = 0
        every = max(1, n // 20)

        def texts() -> Any:
            return (text(i) for i in range(n))

        async with (
            client(url, "aiohttp", concurrency) as wx_client,
            wx_client.iter_batch_embed(ENDPOINT, texts(), concurrency=concurrency) as results,
        ):
            async for result in results:
                done += 1
                failed += not result.ok
                if done % every == 0:
                    samples.append(rss_mib())
        return {"done": done, "failed": failed, "rss_mib": samples}

    wall0 = time.perf_counter()
    result = asyncio.run(run())
    result["wall"] = time.perf_counter() - wall0
    return result


# -------------------------------------------------------------------------- parent side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--million", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10,000 and 50,000 texts")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.texts, args.million = 10_000, 50_000
    if args.worker == "million":
        print_json(child_million(args.url, args.million, args.concurrency))
        return
    if args.worker:
        print_json(child_batch(args.worker, args.url, args.texts, args.concurrency))
        return

    print(f"measuring {snapshot_library()} on {machine()}", file=sys.stderr)
    names = [w for w in WORKERS if w != "qianfan" or has_module("qianfan")]
    names = [w for w in names if "aiohttp" not in w or has_module("aiohttp")]
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    common = ["--texts", str(args.texts), "--concurrency", str(args.concurrency)]
    with EmulatorProcess() as emu:
        for run in range(args.runs):
            for name in names:
                child = [str(BENCH_DIR / "embeddings.py"), "--worker", name, "--url", emu.url]
                result = run_child([*child, *common], timeout=3600)
                print(f"run {run + 1} {name}: {json.dumps(result)}", file=sys.stderr)
                raw[name].append(result)
        million: dict[str, Any] = {}
        if args.million:
            child = [str(BENCH_DIR / "embeddings.py"), "--worker", "million", "--url", emu.url]
            child += ["--million", str(args.million), "--concurrency", str(args.concurrency)]
            million = run_child(child, timeout=7200)
            print(f"million: {json.dumps(million)}", file=sys.stderr)

    def med(name: str, key: str) -> float:
        values = [r[key] for r in raw.get(name, []) if key in r]
        return median(values)

    def rate(name: str) -> float:
        good = [r["done"] / r["wall"] for r in raw.get(name, []) if r.get("wall")]
        return median(good)

    table = Table()
    sdk_rate, sdk_peak = rate("qianfan"), med("qianfan", "peak_mib")
    for name in names:
        failures = [r["error"] for r in raw[name] if "error" in r]
        done = [r.get("done") for r in raw[name]]
        note = f"texts done: {done}" + (f"; {failures[0]}" if failures else "")
        table.add("1", f"{args.texts:,} texts", WORKERS[name], fmt(rate(name)), "texts/s",
                  f"{ratio(rate(name), sdk_rate)} the SDK", note)  # fmt: skip
        table.add("1", f"{args.texts:,} texts", WORKERS[name], fmt(med(name, "cpu")),
                  "client CPU s")  # fmt: skip
        table.add("1", f"{args.texts:,} texts", WORKERS[name], fmt(med(name, "peak_mib")),
                  "MiB peak over baseline",
                  f"{ratio(med(name, 'peak_mib'), sdk_peak)} the SDK")  # fmt: skip
    if million:
        samples = million.get("rss_mib", [])
        flat = f"{min(samples):.1f}-{max(samples):.1f} MiB" if samples else "–"
        table.add("2", f"{args.million:,} lazily generated texts", "iter_batch_embed(), aiohttp",
                  flat, "RSS over the run (20 samples)",
                  notes=f"{million.get('done')} done, {million.get('failed')} failed, "
                  f"{million.get('wall', 0):.0f} s; {million.get('error', '')}")  # fmt: skip
    print(table.render())
    if args.json:
        args.json.write_text(json.dumps({"raw": raw, "million": million}, indent=1))


if __name__ == "__main__":
    main()
