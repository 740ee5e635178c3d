"""
What OpenTelemetry costs the client (issue 16): client CPU per chat call with telemetry
off, with the OpenTelemetry API installed and no SDK (every span a no-op), with the trace
SDK (a `BatchSpanProcessor` exporting to nowhere), and with the trace and metric SDKs (plus a
periodic metric reader exporting to nowhere). Run:
`python benchmarks/telemetry.py [--quick] [--runs N] [--modes api,traces,sdk]`.

The emulator runs in another process. Each mode runs in a fresh child process per run; in
it a `telemetry=False` client and a `telemetry=True` client (and, with an SDK, the first
client wrapped in one bare span per call: the SDK's own floor) take turns in slices of
calls, so a slow spell of this shared machine weighs on all alike. CPU is the main thread's
`time.thread_time`; what other threads spend (the SDK's export threads) is charged to the
telemetry client (shared with the bare span when there is one). The table shows medians
over the runs. Calls go over the aiohttp backend, one at a time and 64 at once.
Targets: no SDK <= 1.03x off, SDK <= 1.25x off.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    CHAT_ENDPOINT,
    MESSAGES,
    SECRET_KEY,
    EmulatorProcess,
    Table,
    fmt,
    median,
    print_json,
    run_child,
    snapshot_library,
)

KINDS = {
    "sequential": "sequential chat calls: client CPU per call",
    "concurrent": "chat calls at concurrency 64: client CPU per call",
}
MODES = {
    "api": "API installed, no SDK",
    "traces": "trace SDK, batch span processor exporting nowhere",
    "sdk": "trace + metric SDK, exporting nowhere",
}
TARGETS = {"api": 1.03, "traces": 1.25, "sdk": 1.25}
CONCURRENCY = 64


# --------------------------------------------------------------------------- child side


def install_sdk(with_metrics: bool) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class NowhereMetrics(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **_: Any) -> Any:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
            pass

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Nowhere()))
    trace.set_tracer_provider(provider)
    if with_metrics:
        reader = PeriodicExportingMetricReader(NowhereMetrics(), export_interval_millis=5_000)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


async def child(mode: str, url: str, sequential: int, concurrent: int) -> dict[str, Any]:
    if mode != "api":
        install_sdk(with_metrics=mode == "sdk")
    from opentelemetry import trace

    import baiduwx_async as wx

    def client(telemetry: bool) -> wx.AsyncClient:
        return wx.AsyncClient(
            credentials=wx.OAuthCredentials(API_KEY, SECRET_KEY),
            base_url=url,
            http_backend="aiohttp",
            max_concurrency=200,
            telemetry=telemetry,
        )

    tracer = trace.get_tracer("benchmark")
    name = f"chat {CHAT_ENDPOINT}"
    async with client(False) as off, client(True) as on:
        assert off._telemetry is None and on._telemetry is not None

        async def bare_span() -> object:
            with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT):
                return await off.chat(CHAT_ENDPOINT, MESSAGES)

        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "off": lambda: off.chat(CHAT_ENDPOINT, MESSAGES),
            "on": lambda: on.chat(CHAT_ENDPOINT, MESSAGES),
        }
        if mode != "api":
            calls["bare"] = bare_span
        for _ in range(200):  # warm: token, connections, caches
            for call in calls.values():
                await call()

        async def one_by_one(call: Callable[[], Awaitable[object]], n: int) -> None:
            for _ in range(n):
                await call()

        async def at_once(call: Callable[[], Awaitable[object]], n: int) -> None:
            left = n

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await call()

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

        found: dict[str, Any] = {}
        names = list(calls)
        for kind, run, total, size in (
            ("sequential", one_by_one, sequential, 50),
            ("concurrent", at_once, concurrent, 640),
        ):
            cpu = dict.fromkeys(names, 0.0)
            slices = max(1, total // size)
            gc.collect()
            process0, thread0 = time.process_time(), time.thread_time()
            for i in range(slices):
                for contender in names[i % len(names) :] + names[: i % len(names)]:
                    t0 = time.thread_time()
                    await run(calls[contender], size)
                    cpu[contender] += time.thread_time() - t0
            others = (time.process_time() - process0) - (time.thread_time() - thread0)
            for contender in ("on", "bare") if "bare" in cpu else ("on",):
                cpu[contender] += others / (2 if "bare" in cpu else 1)
            found[kind] = {c: cpu[c] / (slices * size) * 1e3 for c in names}
    found["sdk"] = any(m.startswith("opentelemetry.sdk") for m in sys.modules)
    return found


# --------------------------------------------------------------------------- parent side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="small counts, 1 run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sequential", type=int, default=3000)
    parser.add_argument("--concurrent", type=int, default=5120)
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}"
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.sequential, args.concurrent = 1, 300, 640
    if args.child:
        mode, url = args.child
        print_json(asyncio.run(child(mode, url, args.sequential, args.concurrent)))
        return

    print(f"measuring {snapshot_library()}", file=sys.stderr)
    ratios: dict[tuple[str, str, str], list[float]] = {}
    cpu: dict[tuple[str, str, str], list[float]] = {}
    modes = [m for m in args.modes.split(",") if m]
    if not modes or not set(modes) <= set(MODES):
        parser.error(f"--modes takes some of {', '.join(MODES)}")
    with EmulatorProcess() as emu:
        for run in range(args.runs):
            for mode in modes[run % len(modes) :] + modes[: run % len(modes)]:
                found = run_child(
                    [
                        __file__,
                        "--child",
                        mode,
                        emu.url,
                        "--sequential",
                        str(args.sequential),
                        "--concurrent",
                        str(args.concurrent),
                    ],
                    timeout=1200,
                )
                if "error" in found:
                    raise SystemExit(f"{mode}: {found['error']}")
                assert found["sdk"] == (mode != "api")
                for kind in KINDS:
                    figures = found[kind]
                    for contender, value in figures.items():
                        cpu.setdefault((mode, kind, contender), []).append(value)
                        ratios.setdefault((mode, kind, contender), []).append(
                            value / figures["off"]
                        )
                print(f"run {run + 1} {mode}: {found}", file=sys.stderr)

    table = Table()
    verdicts = []
    for kind, scenario in KINDS.items():
        off = [v for (_, k, c), values in cpu.items() if k == kind and c == "off" for v in values]
        table.add("T16", scenario, "telemetry=False", fmt(median(off), 3), "ms")
        for mode in modes:
            label, on = MODES[mode], ratios[mode, kind, "on"]
            ok = median(on) <= TARGETS[mode]
            verdicts.append(ok)
            note = f"target <= {TARGETS[mode]:.2f}x: {'met' if ok else 'NOT met'}"
            if (mode, kind, "bare") in ratios:
                note += f"; one bare SDK span per call: {median(ratios[mode, kind, 'bare']):.3f}x"
            table.add(
                "T16",
                scenario,
                label,
                fmt(median(cpu[mode, kind, "on"]), 3),
                "ms",
                f"÷off {median(on):.3f}× (median of {len(on)} runs)",
                note,
            )
    print(table.render())
    print(
        f"\n{args.runs} run(s) per mode; each {args.sequential} sequential and "
        f"{args.concurrent} concurrent calls per contender per run"
    )
    if not all(verdicts):
        sys.exit(1)


if __name__ == "__main__":
    main()
