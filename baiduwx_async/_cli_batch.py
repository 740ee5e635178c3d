"""`baiduwx batch`: a JSONL file of prompts through one client, resumable after any crash.

The output file is the only state (`_cli_results`); the input is read lazily and may be
split between runs (`--shard I/N`, `_cli_inputs`). Many runs, on one machine or many, can
share one quota and one access token through Redis (`--redis URL`, `_cli_shared`).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import anyio
from rich.console import Console

import baiduwx_async as wx

from ._cli_common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    generation_params,
    has_module,
)
from ._cli_inputs import BatchInputs, Shard, count_lines, count_shard_lines
from ._cli_progress import ProgressBar
from ._cli_results import ResultFile, result_record
from ._cli_shared import LogToConsole, shared_state

__all__ = ["run_batch", "run_items"]


#: What a run iterates: one of the client's `iter_batch_*`, used as `async with ... as results`.
Results = AbstractAsyncContextManager[AsyncIterator[wx.BatchResult[Any, Any]]]


async def run_items(
    args: argparse.Namespace,
    credentials: wx.Credentials,
    inputs: BatchInputs,
    output: ResultFile,
    bar: ProgressBar,
    options: dict[str, Any],
    start: Callable[[wx.AsyncClient, dict[str, Any]], Results],
    record: Callable[[object, wx.BatchResult[Any, Any]], dict[str, Any]],
) -> None:
    """Every input through `start(client, options)` (one of the client's `iter_batch_*`),
    each result written as `record(id, result)` the moment it finishes. The client shares
    the token and the limits through Redis when asked; a fatal error (bad credentials, an
    unreachable Redis) stops the run after what finished is written."""
    fatal: Exception | None = None
    async with AsyncExitStack() as stack:
        shared, fatal_errors = await shared_state(args, stack)
        if "rate_limiter" in shared:
            options["qps"] = None  # the shared limiter paces this run among the others
        client = await stack.enter_async_context(
            wx.AsyncClient(
                credentials=credentials,
                max_concurrency=args.concurrency,
                http_backend=args.http_backend,
                tpm=None if "rate_limiter" in shared else getattr(args, "tpm", None),
                **shared,
            )
        )
        async with start(client, options) as results:
            async for result in results:
                item_id = inputs.pop(result.index)
                if isinstance(result.error, fatal_errors):
                    fatal = result.error
                    break
                output.write(record(item_id, result))
                usage = getattr(result.response, "usage", None)
                bar.advance(result.ok, getattr(usage, "total_tokens", 0) or 0)
    if fatal is not None:
        raise fatal


async def _process(
    args: argparse.Namespace,
    credentials: wx.Credentials,
    inputs: BatchInputs,
    output: ResultFile,
    bar: ProgressBar,
) -> None:
    options: dict[str, Any] = {
        "concurrency": args.concurrency,
        "qps": args.qps,
        **generation_params(args),
    }

    def start(client: wx.AsyncClient, options: dict[str, Any]) -> wx.BatchIterator[Any, Any]:
        if args.mode == "complete":
            return client.iter_batch_complete(args.endpoint, inputs, **options)
        return client.iter_batch_chat(args.endpoint, inputs, **options)

    await run_items(args, credentials, inputs, output, bar, options, start, result_record)


Process = Callable[
    [argparse.Namespace, wx.Credentials, BatchInputs, ResultFile, ProgressBar], Awaitable[None]
]


def run_batch(args: argparse.Namespace, process: Process = _process) -> int:
    credentials = wx.credentials_from_env()
    if not os.path.isfile(args.input):
        raise CommandError(f"{args.input}: no such file", EXIT_USAGE)
    console = Console(stderr=True)

    def warn(message: str) -> None:
        console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

    def note(message: str) -> None:
        console.print(message, markup=False, highlight=False, soft_wrap=True)

    shard: Shard | None = getattr(args, "shard", None)
    redis_logger = logging.getLogger("baiduwx_async.redis")
    handler = LogToConsole(warn, note)
    saved_level = redis_logger.level
    if getattr(args, "redis", None):
        redis_logger.addHandler(handler)
        redis_logger.setLevel(logging.INFO)
    output = ResultFile(args.output)
    interrupted = False
    try:
        retry_failed = bool(getattr(args, "retry_failed", False))
        done, unreadable = output.recover(retry_failed=retry_failed)
        if unreadable:
            warn(f"{args.output}: {unreadable} unreadable line(s) ignored")
        if retry_failed and output.failed_before:
            note(f"retrying {output.failed_before} failed id(s)")
        lines = count_lines(args.input) if shard is None else count_shard_lines(args.input, shard)
        total = max(0, lines - len(done))
        inputs = BatchInputs(args.input, args.mode, done, warn, shard)
        enabled = console.is_terminal and not args.no_progress
        # an embedding batch's results are vectors, one per text: their usage is not at hand
        show_tokens = args.mode != "embed"
        bar = ProgressBar(
            total, console, enabled=enabled, description=args.mode, show_tokens=show_tokens
        )
        stopped_early = True  # by an error before any result: the error line says it all
        try:
            with bar:
                anyio.run(
                    process,
                    args,
                    credentials,
                    inputs,
                    output,
                    bar,
                    backend_options={"use_uvloop": has_module("uvloop")},
                )
            stopped_early = False
        except KeyboardInterrupt:
            interrupted, stopped_early = True, False
            raise
        finally:
            if bar.done or not stopped_early:
                _summary(console, bar, inputs, interrupted)
    finally:
        output.close()
        redis_logger.removeHandler(handler)
        redis_logger.setLevel(saved_level)
    return EXIT_FAILURE if bar.failed or inputs.invalid else EXIT_OK


def _summary(console: Console, bar: ProgressBar, inputs: BatchInputs, interrupted: bool) -> None:
    parts = [
        f"done: {bar.done} ({bar.done - bar.failed} ok, {bar.failed} failed)",
        f"skipped: {inputs.skipped}",
    ]
    if inputs.duplicates:
        parts.append(f"duplicate ids: {inputs.duplicates}")
    if inputs.invalid:
        parts.append(f"invalid lines: {inputs.invalid}")
    parts += [f"elapsed: {bar.elapsed:.2f} s", f"rate: {bar.rate:.1f} items/s"]
    if bar.show_tokens:
        parts.append(f"tokens: {bar.tokens} ({bar.tokens_per_minute:,.0f}/min)")
    prefix = "batch interrupted - " if interrupted else "batch - "
    console.print(prefix + ", ".join(parts), markup=False, highlight=False, soft_wrap=True)
