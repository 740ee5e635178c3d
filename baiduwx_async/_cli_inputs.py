"""The input of `baiduwx batch`/`embed`: INPUT.jsonl read lazily, ids checked, and the
split between runs (`--shard I/N`).

A shard is chosen by a stable hash of the id: run I takes the ids with
`crc32(json.dumps(id)) % N == I - 1`, so every line of an id (duplicates included) falls to
the same run whatever the line order, and a line without a valid id is reported by run
`(line number - 1) % N + 1` only.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["BatchInputs", "Shard", "count_lines", "count_shard_lines", "id_key", "shard_of"]

MAX_WARNINGS = 10


def id_key(value: object) -> str | None:
    """A set key for an id (a string or an integer, `"1"` and `1` being different)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return json.dumps(value)


def count_lines(path: str) -> int:
    """The non-blank lines of a file, read in binary without parsing."""
    with open(path, "rb") as file:
        return sum(1 for line in file if line.strip())


Shard = tuple[int, int]  #: (I, N): the I-th of N shards, 1-based


def shard_of(key: str, count: int) -> int:
    """The 0-based shard of an id (given as its `id_key`): stable across runs and machines."""
    return zlib.crc32(key.encode("utf-8")) % count


def count_shard_lines(path: str, shard: Shard) -> int:
    """The lines with an id that falls to `shard` (parsing each line)."""
    index, count = shard
    total = 0
    with open(path, "rb") as file:
        for line in file:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            key = id_key(record.get("id")) if isinstance(record, dict) else None
            if key is not None and shard_of(key, count) == index - 1:
                total += 1
    return total


class BatchInputs:
    """INPUT.jsonl read lazily: the items to send, skipping ids done before and duplicates.

    `ids` maps the batch index of each item handed out (and not yet claimed by `pop`) to
    its id, so it stays as small as the number of items in flight.
    """

    def __init__(
        self,
        path: str,
        mode: str,
        done: set[str],
        warn: Callable[[str], object],
        shard: Shard | None = None,
    ) -> None:
        self._path = path
        self._mode = mode
        self._done = done
        self._warn = warn
        self._shard = shard
        self._ids: dict[int, object] = {}
        self.skipped = 0
        self.duplicates = 0
        self.invalid = 0

    def pop(self, index: int) -> object:
        return self._ids.pop(index)

    def __iter__(self) -> Iterator[Any]:
        seen: set[str] = set()
        index = 0
        with open(self._path, "rb") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    self._invalid(number, "not a JSON line")
                    continue
                key = id_key(record.get("id")) if isinstance(record, dict) else None
                if key is None:
                    self._invalid(number, 'needs an "id" that is a string or an integer')
                    continue
                if self._shard is not None and shard_of(key, self._shard[1]) != self._shard[0] - 1:
                    continue  # another run's
                if key in seen:
                    self.duplicates += 1
                    if self.duplicates <= MAX_WARNINGS:
                        self._warn(f"line {number}: duplicate id {key}, only its first line runs")
                    continue
                seen.add(key)
                if key in self._done:
                    self.skipped += 1
                    continue
                self._ids[index] = record["id"]
                index += 1
                yield self._item(record)

    def _invalid(self, number: int, why: str) -> None:
        if self._shard is not None and (number - 1) % self._shard[1] != self._shard[0] - 1:
            return  # reported by the run this line number falls to
        self.invalid += 1
        if self.invalid <= MAX_WARNINGS:
            self._warn(f"line {number}: {why}; skipped")

    def _item(self, record: dict[str, Any]) -> Any:
        """What the client is given; anything malformed fails its checks, as that item's error."""
        if self._mode == "complete":
            return record.get("prompt")
        if self._mode == "embed":
            return record.get("text")
        if "messages" in record:
            return record["messages"]
        if "prompt" in record:
            return [{"role": "user", "content": record["prompt"]}]
        return []
