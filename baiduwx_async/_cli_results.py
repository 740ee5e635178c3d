"""OUTPUT.jsonl of `baiduwx batch`/`embed`: the only state of a run, and how it resumes.

Each result is appended as one whole line with a single `write` (no user-space buffer) and
fsync'd every 100 lines or second, so a killed run leaves whole lines, at worst followed by
one torn line after a power loss. On start the ids already in the output are skipped, and a
final line that is not complete JSON is cut off. An exclusive lock on the output keeps two
runs from writing the same file at once.

`--retry-failed` also sends again the ids whose last line failed, appending the new
outcome: an id may then have several lines, and the last one is its result (readers take
the last line of each id).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import baiduwx_async as wx

from ._cli_common import CommandError, redact
from ._cli_inputs import id_key

__all__ = ["ResultFile", "result_record"]

FSYNC_EVERY_LINES = 100
FSYNC_EVERY_SECONDS = 1.0


class ResultFile:
    """OUTPUT.jsonl: locked, recovered after a crash, then appended to one line at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(self._fd, path)
        except BaseException:
            os.close(self._fd)
            raise
        self._unsynced = 0
        self._synced_at = time.monotonic()
        #: Ids whose last line failed, as `recover` found them.
        self.failed_before = 0

    def recover(self, *, retry_failed: bool = False) -> tuple[set[str], int]:
        """The ids already done, and how many lines could not be read. With
        `retry_failed`, an id whose last line failed is not done: it goes again.

        A final line that is not complete JSON (a write torn by a crash) is cut off; the file
        is left ending with a newline, ready for appending.
        """
        outcomes: dict[str, bool] = {}  # id -> whether its last line succeeded
        unreadable = 0
        offset = 0
        last: tuple[int, bytes, bool] | None = None  # start, line, readable
        with open(self.path, "rb") as file:
            for line in file:
                key, ok = _record_outcome(line)
                readable = key is not None
                if key is not None:
                    outcomes[key] = ok
                elif line.strip():
                    unreadable += 1
                last = (offset, line, readable)
                offset += len(line)
        if last is not None:
            start, line, readable = last
            if not readable and line.strip():
                os.ftruncate(self._fd, start)  # the torn last line
                unreadable -= 1
            elif not line.endswith(b"\n"):
                os.write(self._fd, b"\n")
            os.fsync(self._fd)
        done = {key for key, ok in outcomes.items() if ok or not retry_failed}
        self.failed_before = sum(not ok for ok in outcomes.values())
        return done, unreadable

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one whole line."""
        data = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        while data:  # one write() for a regular file; the loop only guards a short write
            data = data[os.write(self._fd, data) :]
        self._unsynced += 1
        now = time.monotonic()
        if self._unsynced >= FSYNC_EVERY_LINES or now - self._synced_at >= FSYNC_EVERY_SECONDS:
            self.sync()

    def sync(self) -> None:
        if self._unsynced:
            os.fsync(self._fd)
            self._unsynced = 0
        self._synced_at = time.monotonic()

    def close(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self._fd)


def _lock(fd: int, path: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CommandError(f"{path} is being written by another baiduwx batch") from None


def _record_outcome(line: bytes) -> tuple[str | None, bool]:
    """The id of a result line (`None` if unreadable) and whether it succeeded."""
    try:
        record = json.loads(line)
    except ValueError:
        return None, False
    if not isinstance(record, dict):
        return None, False
    return id_key(record.get("id")), record.get("ok") is True


def result_record(item_id: object, result: wx.BatchResult[Any, Any]) -> dict[str, Any]:
    """The output line of one result: never a secret (our errors hold none, and the text of
    any other exception is redacted)."""
    response = result.response
    if response is not None:
        usage = response.usage
        return {
            "id": item_id,
            "ok": True,
            "result": response.result,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
            "request_id": response.request_id,
        }
    exc = result.error
    error: dict[str, Any] = {"type": type(exc).__name__, "code": None}
    if isinstance(exc, wx.APIError):
        error["code"] = exc.code
        error["message"] = exc.message
        if exc.request_id:
            error["request_id"] = exc.request_id
    else:
        error["message"] = redact(str(exc)) or type(exc).__name__
    return {"id": item_id, "ok": False, "error": error}
