"""`baiduwx embed`: a JSONL file of texts through `iter_batch_embed`, resumable after any
crash. The file handling, progress bar, summary and exit codes are `baiduwx batch`'s."""

from __future__ import annotations

import argparse
from typing import Any

import baiduwx_async as wx

from ._cli_batch import run_batch, run_items
from ._cli_inputs import BatchInputs
from ._cli_progress import ProgressBar
from ._cli_results import ResultFile, result_record

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

    def start(client: wx.AsyncClient, options: dict[str, Any]) -> wx.EmbedBatchIterator:
        return client.iter_batch_embed(args.endpoint, inputs, **options)

    await run_items(args, credentials, inputs, output, bar, options, start, embedding_record)


def run_embed(args: argparse.Namespace) -> int:
    args.mode = "embed"
    return run_batch(args, process=_process)
