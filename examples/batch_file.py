"""Answers for every prompt of a JSONL file, with progress, resumable after a crash.

    python examples/batch_file.py prompts.jsonl answers.jsonl

Each input line is `{"id": ..., "prompt": "..."}`; each output line is
`{"id": ..., "result": "..."}` or `{"id": ..., "error": "..."}`. Run it again after an
interruption and it skips the ids already answered. (`baiduwx batch` does the same with
more options.)
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
from _connect import open_client

import baiduwx_async as wx


def answered(output: Path) -> set[object]:
    done: set[object] = set()
    if output.exists():
        for line in output.read_text(encoding="utf-8").splitlines():
            # a line torn by a crash is not an answer: its item is simply asked again
            with contextlib.suppress(ValueError, KeyError):
                done.add(json.loads(line)["id"])
    return done


def pending(source: Path, done: set[object]) -> Iterator[tuple[object, str]]:
    with source.open(encoding="utf-8") as lines:  # read lazily, one line at a time
        for line in lines:
            if line.strip():
                item = json.loads(line)
                if item["id"] not in done:
                    yield item["id"], item["prompt"]


def show(progress: wx.BatchProgress) -> None:
    print(f"\r{progress.done} done, {progress.failed} failed, {progress.rate:.0f}/s", end="")


async def main(source: Path, output: Path) -> None:
    done = answered(output)
    items = list(pending(source, done))
    async with (
        open_client() as client,
        client.iter_batch_complete(
            "pythia12b", [prompt for _, prompt in items], concurrency=16, on_progress=show
        ) as results,
    ):
        with output.open("a", encoding="utf-8") as out:
            async for r in results:
                item_id = items[r.index][0]
                record = (
                    {"id": item_id, "result": r.response.result}
                    if r.response is not None
                    else {"id": item_id, "error": str(r.error)}
                )
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()  # each finished answer is on disk before the next one
    print(f"\n{len(items)} answered, {len(done)} already there")


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), Path(sys.argv[2]))
