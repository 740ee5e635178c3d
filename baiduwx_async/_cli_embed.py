"""`baiduwx embed`: a JSONL file of texts through `iter_batch_embed`, resumable after any
crash. The file handling, progress bar, summary and exit codes are `baiduwx batch`'s."""

from __future__ import annotations

import argparse
from contextlib import AsyncExitStack
from typing import Any

import baiduwx_async as wx

from ._cli_batch import (
    BatchInputs,
    ProgressBar,
    ResultFile,
    _shared_state,
    result_record,
    run_batch,
)

__all__ = ["embedding_record", "run_embed"]


def embedding_record(item_id: object, result: wx.BatchResult[Any, list[float]]) -> dict[str, Any]:
    """The output line of one text: its vector, or the error (as `baiduwx batch` writes it)."""
    if result.response is not None:
        return {"id": item_id, "ok": True, "embedding": result.response}
    return result_record(item_id, result)


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
        "texts_per_request": args.texts_per_request,
    }
    fatal: Exception | None = None
    async with AsyncExitStack() as stack:
        shared, fatal_errors = await _shared_state(args, stack)
        if "rate_limiter" in shared:
            options["qps"] = None  # the shared limiter paces this run among the others
        client = await stack.enter_async_context(
            wx.AsyncClient(
                credentials=credentials,
                max_concurrency=args.concurrency,
                http_backend=args.http_backend,
                tpm=None if "rate_limiter" in shared else args.tpm,
                **shared,
            )
        )
        async with client.iter_batch_embed(args.endpoint, inputs, **options) as results:
            async for result in results:
                item_id = inputs.pop(result.index)
                if isinstance(result.error, fatal_errors):
                    fatal = result.error
                    break
                output.write(embedding_record(item_id, result))
                bar.advance(result.ok)
    if fatal is not None:
        raise fatal


def run_embed(args: argparse.Namespace) -> int:
    args.mode = "embed"
    return run_batch(args, process=_process)
