"""
The OpenAI-compatible gateway (`baiduwx serve`) beside the official SDK's OpenAI adapter
(`qianfan.common.cli.openai_adapter.entry`, the function behind `qianfan openai`), both in
front of the same emulator and driven by the same load generator: the `openai` package's
`AsyncOpenAI`, non-stream chat calls at concurrency 64.

Figures per run: calls/s seen by the load generator, and the gateway process's CPU per call
(utime + stime from /proc, over the measured calls only). Beside them, our client's own CPU
per call for the same chat at the same concurrency, in a process of its own: the gateway's
overhead is the difference. Every server and every load generator is its own process;
the contenders take turns within each run; the table shows medians.

    python benchmarks/gateway.py [--quick] [--runs N] [--calls N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    API_KEY,
    BENCH_DIR,
    CHAT_ENDPOINT,
    MESSAGES,
    SECRET_KEY,
    EmulatorProcess,
    Table,
    _pythonpath,
    fmt,
    machine,
    median,
    qianfan_env,
    ratio,
    run_child,
    snapshot_library,
)

CONCURRENCY = 64
WARMUP = 200
MODEL = "ernie"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """A gateway in its own process, until `stop()`."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], url: str) -> None:
        self.name = name
        self.url = url
        self.proc = subprocess.Popen(
            [sys.executable, *command],
            env={**env, "PYTHONPATH": _pythonpath()},
            # ours prints its address (then nothing); the SDK's adapter logs every request
            # to stdout, which must not fill an unread pipe
            stdout=subprocess.DEVNULL if url else subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # both log a line per request: written, then dropped
            text=True,
            cwd=str(BENCH_DIR),
        )
        if not url:  # ours prints where it listens
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                found = re.search(r"OPENAI_BASE_URL=(\S+)", line)
                if found:
                    self.url = found.group(1).removesuffix("/v1")
                    break
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/v1/models", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def our_gateway(emulator_url: str) -> Server:
    env = dict(os.environ, QIANFAN_AK=API_KEY, QIANFAN_SK=SECRET_KEY, QIANFAN_BASE_URL=emulator_url)
    env.pop("BAIDUWX_GATEWAY_API_KEYS", None)
    command = ["-m", "baiduwx_async.cli", "serve", "--port", "0"]
    command += ["--model", f"{MODEL}=chat:{CHAT_ENDPOINT}", "--max-concurrency", "200"]
    return Server("baiduwx serve", command, env, "")


def sdk_adapter(emulator_url: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env.update(qianfan_env(emulator_url))
    code = (
        "from qianfan.common.cli.openai_adapter import entry\n"
        f"entry(host='127.0.0.1', port={port}, detach=False, log_file=None, "
        f"ignore_system=False, model_mapping={{{MODEL!r}: 'ERNIE-3.5-8K'}}, api_key=None)\n"
    )
    return Server("qianfan openai adapter", ["-c", code], env, f"http://127.0.0.1:{port}")


# --- the children


def loadgen_main(url: str, calls: int, kind: str) -> None:
    """`calls` chat calls at CONCURRENCY, after a warm-up: through `AsyncOpenAI` (the
    measure), or bare aiohttp (a lighter generator, to show each server's own capacity)."""
    import asyncio

    async def run() -> dict[str, Any]:
        if kind == "openai":
            import openai

            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)

            async def call() -> None:
                reply = await client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
                assert reply.choices[0].message.content

            close: Any = client.close
        else:
            import aiohttp

            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=CONCURRENCY),
                timeout=aiohttp.ClientTimeout(total=60),
            )
            body = {"model": MODEL, "messages": MESSAGES}

            async def call() -> None:
                async with session.post(url + "/v1/chat/completions", json=body) as answer:
                    assert (await answer.json())["choices"][0]["message"]["content"]

            close = session.close

        async def burst(count: int) -> int:
            todo = iter(range(count))
            errors = 0

            async def worker() -> None:
                nonlocal errors
                for _ in todo:
                    try:
                        await call()
                    except Exception:
                        errors += 1

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            return errors

        try:
            await burst(WARMUP)
            print(json.dumps({"ready": True}), flush=True)
            sys.stdin.readline()  # the parent reads the server's CPU time, then says go
            cpu, wall = time.process_time(), time.perf_counter()
            errors = await burst(calls)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            await close()
        return {"calls": calls - errors, "errors": errors, "seconds": wall, "cpu": cpu}

    print(json.dumps(asyncio.run(run())), flush=True)


def client_main(emulator_url: str, calls: int) -> None:
    """Our client alone, the same chat at the same concurrency (aiohttp and uvloop, as the
    gateway runs them)."""
    import anyio

    import baiduwx_async as wx

    async def run() -> dict[str, Any]:
        credentials = wx.OAuthCredentials(API_KEY, SECRET_KEY)
        async with wx.AsyncClient(
            credentials=credentials,
            base_url=emulator_url,
            http_backend="aiohttp",
            max_concurrency=200,
        ) as client:

            async def burst(count: int) -> None:
                todo = iter(range(count))

                async def worker() -> None:
                    for _ in todo:
                        await client.chat(CHAT_ENDPOINT, MESSAGES)

                async with anyio.create_task_group() as group:
                    for _ in range(CONCURRENCY):
                        group.start_soon(worker)

            await burst(WARMUP)
            cpu, wall = time.process_time(), time.perf_counter()
            await burst(calls)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            return {"calls": calls, "seconds": wall, "cpu": cpu}

    print(json.dumps(anyio.run(run, backend_options={"use_uvloop": True})), flush=True)


# --- the runner


def measure(server: Server, calls: int, kind: str) -> dict[str, Any]:
    """One load run against `server`: calls/s, and the server's CPU over the measured calls."""
    loadgen = subprocess.Popen(
        [sys.executable, __file__, "--loadgen", server.url, "--kind", kind, "--calls", str(calls)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": _pythonpath()},
        cwd=str(BENCH_DIR),
    )
    assert loadgen.stdin is not None and loadgen.stdout is not None
    ready = loadgen.stdout.readline()
    if '"ready"' not in ready:
        loadgen.kill()
        return {"error": f"load generator failed: {ready[:200]!r}"}
    before = cpu_seconds(server.proc.pid)
    loadgen.stdin.write("go\n")
    loadgen.stdin.flush()
    answer = loadgen.stdout.readline()
    after = cpu_seconds(server.proc.pid)
    loadgen.wait(timeout=60)
    result: dict[str, Any] = json.loads(answer)
    calls_done = max(result["calls"], 1)
    result["rate"] = result["calls"] / result["seconds"]
    result["server_cpu_ms"] = (after - before) * 1000 / calls_done
    result["loadgen_cpu_ms"] = result["cpu"] * 1000 / calls_done
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 calls, 1 run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--loadgen", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="openai", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        return loadgen_main(args.loadgen, args.calls, args.kind)
    if args.client:
        return client_main(args.client, args.calls)
    if args.quick:
        args.runs, args.calls = 1, 500

    source = snapshot_library()
    figures: dict[str, list[dict[str, Any]]] = {
        "ours": [], "sdk": [], "ours-aiohttp": [], "sdk-aiohttp": [], "client": []
    }  # fmt: skip
    load = os.getloadavg()[0]
    started = time.monotonic()
    with EmulatorProcess() as emulator:
        for _ in range(args.runs):
            for name, start in (("ours", our_gateway), ("sdk", sdk_adapter)):
                for kind, key in (("openai", name), ("aiohttp", f"{name}-aiohttp")):
                    server = start(emulator.url)  # a fresh server for each generator
                    try:
                        figures[key].append(measure(server, args.calls, kind))
                    finally:
                        server.stop()
            figures["client"].append(
                run_child(
                    [__file__, "--client", emulator.url, "--calls", str(args.calls)], timeout=600
                )
            )
        stats = emulator.stats()

    def med(name: str, key: str) -> float:
        return median([run[key] for run in figures[name] if key in run])

    table = Table()

    def row(section: str, scenario: str, who: str, value: str, unit: str, *rest: str) -> None:
        table.add(section, scenario, who, value, unit, *rest)

    ours_name, sdk_name = "baiduwx serve", "qianfan openai adapter"
    per_sec, per_call = "calls/s (higher is better)", "ms (lower is better)"
    scenario = f"{args.calls:,} chat calls through the openai package, concurrency {CONCURRENCY}"
    ours, sdk = med("ours", "rate"), med("sdk", "rate")
    row("G", scenario, ours_name, fmt(ours), per_sec, f"÷SDK {ratio(ours, sdk)}")
    row("G", scenario, sdk_name, fmt(sdk), per_sec)
    cpu_ours, cpu_sdk = med("ours", "server_cpu_ms"), med("sdk", "server_cpu_ms")
    client_cpu = median([r["cpu"] * 1000 / r["calls"] for r in figures["client"] if "cpu" in r])
    versus = f"÷SDK {ratio(cpu_ours, cpu_sdk)}, ÷client {ratio(cpu_ours, client_cpu)}"
    cpu_scenario = "the same: gateway process CPU per call"
    row("G", cpu_scenario, ours_name, fmt(cpu_ours, 3), per_call, versus)
    row("G", cpu_scenario, sdk_name, fmt(cpu_sdk, 3), per_call)
    client_scenario = "the same chat from our client, no gateway: client CPU per call"
    row("G", client_scenario, "baiduwx_async (aiohttp)", fmt(client_cpu, 3), per_call)
    for name, label in (("ours", ours_name), ("sdk", sdk_name)):
        spent = fmt(med(name, "loadgen_cpu_ms"), 3)
        row("G", "the same: load generator (openai package) CPU per call", label, spent, "ms")
    light = "the same calls from a bare aiohttp generator (each server's own capacity)"
    ours_light, sdk_light = med("ours-aiohttp", "rate"), med("sdk-aiohttp", "rate")
    for name, label, rate, ratios in (
        ("ours-aiohttp", ours_name, ours_light, f"÷SDK {ratio(ours_light, sdk_light)}"),
        ("sdk-aiohttp", sdk_name, sdk_light, ""),
    ):
        note = f"gateway CPU per call {fmt(med(name, 'server_cpu_ms'), 3)} ms"
        row("G", light, label, fmt(rate), per_sec, ratios, note)
    met = {True: "met", False: "NOT met"}
    row("T", "target: ≥ 3× the SDK adapter's calls/s", ours_name,
        met[ours >= 3 * sdk], "", ratio(ours, sdk))  # fmt: skip
    row("T", "target: gateway CPU per call ≤ 2× the client's", ours_name,
        met[cpu_ours <= 2 * client_cpu], "", ratio(cpu_ours, client_cpu))  # fmt: skip
    errors = [run.get("error") or run.get("errors") for runs in figures.values() for run in runs]
    print(
        f"gateway benchmark: {machine()}; {source}; medians of {args.runs} run(s); load average "
        f"{load:.1f} before, {os.getloadavg()[0]:.1f} after; {time.monotonic() - started:.0f} s; "
        f"emulator saw {stats['token_requests']} token requests, "
        f"{stats['calls']} calls; errors: {[e for e in errors if e] or 'none'}\n"
    )
    print(table.render())
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
