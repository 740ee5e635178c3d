"""`baiduwx batch`: a JSONL file of prompts through one client, resumable after any crash.

The output file is the only state. Each result is appended as one whole line with a single
`write` (no user-space buffer) and fsync'd every 100 lines or second, so a killed run leaves
whole lines, at worst followed by one torn line after a power loss. On start the ids already
in the output are skipped, and a final line that is not complete JSON is cut off. An
exclusive lock on the output keeps two runs from writing the same file at once.

`--retry-failed` also sends again the ids whose last line failed, appending the new
outcome: an id may then have several lines, and the last one is its result (readers take
the last line of each id).

Many runs, on one machine or many, can share one quota and one access token through Redis
(`--redis URL`: `--qps` then applies to all of them together) and split one input between
them (`--shard I/N`, each run writing its own output). A shard is chosen by a stable hash of
the id: run I takes the ids with `crc32(json.dumps(id)) % N == I - 1`, so every line of an
id (duplicates included) falls to the same run whatever the line order, and a line without
a valid id is reported by run `(line number - 1) % N + 1` only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

import baiduwx_async as wx

from .cli import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    generation_params,
    has_module,
    redact,
)

__all__ = ["BatchInputs", "ProgressBar", "ResultFile", "result_record", "run_batch"]

FSYNC_EVERY_LINES = 100
FSYNC_EVERY_SECONDS = 1.0
MAX_WARNINGS = 10

#: Failures that would fail every remaining item too: the batch stops, nothing is written
#: for the item, and the next run retries it.
FATAL_ERRORS = (wx.AuthenticationError, wx.PermissionDeniedError, wx.QuotaExceededError)


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


class ProgressBar:
    """A live bar on stderr: done of total, failed, items/s, tokens/min (when the items
    carry their usage), elapsed and ETA."""

    def __init__(
        self,
        total: int | None,
        console: Console,
        *,
        enabled: bool,
        description: str = "batch",
        show_tokens: bool = True,
    ) -> None:
        self.show_tokens = show_tokens
        self.done = 0
        self.failed = 0
        self.tokens = 0
        self._started = time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]:.1f} items/s"),
            *([TextColumn("{task.fields[tpm]:,.0f} tokens/min")] if show_tokens else []),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._task = self._progress.add_task(description, total=total, failed=0, rate=0.0, tpm=0.0)

    @property
    def console(self) -> Console:
        return self._progress.console

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def tokens_per_minute(self) -> float:
        elapsed = self.elapsed
        return self.tokens * 60.0 / elapsed if elapsed > 0 else 0.0

    def advance(self, ok: bool, tokens: int = 0) -> None:
        self.done += 1
        self.failed += not ok
        self.tokens += tokens
        self._progress.update(
            self._task,
            completed=self.done,
            failed=self.failed,
            rate=self.rate,
            tpm=self.tokens_per_minute,
        )

    def __enter__(self) -> ProgressBar:
        self._started = time.monotonic()
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()


async def _process(
    args: argparse.Namespace,
    credentials: wx.Credentials,
    inputs: BatchInputs,
    output: ResultFile,
    bar: ProgressBar,
) -> None:
    params = generation_params(args)
    options: dict[str, Any] = {"concurrency": args.concurrency, "qps": args.qps, **params}
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
                tpm=None if "rate_limiter" in shared else getattr(args, "tpm", None),
                **shared,
            )
        )
        batch: wx.BatchIterator[Any, Any]
        if args.mode == "complete":
            batch = client.iter_batch_complete(args.endpoint, inputs, **options)
        else:
            batch = client.iter_batch_chat(args.endpoint, inputs, **options)
        async with batch as results:
            async for result in results:
                item_id = inputs.pop(result.index)
                if isinstance(result.error, fatal_errors):
                    fatal = result.error
                    break
                output.write(result_record(item_id, result))
                usage = getattr(result.response, "usage", None)
                bar.advance(result.ok, getattr(usage, "total_tokens", 0) or 0)
    if fatal is not None:
        raise fatal


async def _shared_state(
    args: argparse.Namespace, stack: AsyncExitStack
) -> tuple[dict[str, Any], tuple[type[Exception], ...]]:
    """With `--redis`: the client's shared token store and rate limiter (`--qps`, `--tpm`), both
    checked to answer before the first item (an unreachable Redis stops the run here), and
    the errors that stop the batch."""
    if not args.redis:
        return {}, FATAL_ERRORS
    try:
        from .redis import RedisLockTimeoutError, RedisRateLimiter, RedisTokenStore
    except ImportError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    store = await stack.enter_async_context(RedisTokenStore(args.redis))
    await store.ping()
    shared: dict[str, Any] = {"token_store": store}
    # Without --qps the processes still share the adaptive slow-down after rate-limit
    # answers; with --tpm they share one token budget too.
    limiter = RedisRateLimiter(args.redis, qps=args.qps, tpm=getattr(args, "tpm", None))
    await stack.enter_async_context(limiter)
    await limiter.ping()
    shared["rate_limiter"] = limiter
    # a token fetch lock held elsewhere for lock_timeout would hold up every item alike
    return shared, (*FATAL_ERRORS, RedisLockTimeoutError)


class _LogToConsole(logging.Handler):
    """The Redis module's records (an outage and its end) as lines on the console."""

    def __init__(self, warn: Callable[[str], object], note: Callable[[str], object]) -> None:
        super().__init__(logging.INFO)
        self._warn = warn
        self._note = note

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = redact(record.getMessage())
        except Exception:  # a record that cannot be formatted is not worth failing for
            return
        if record.levelno >= logging.WARNING:
            self._warn(message)
        else:
            self._note(message)


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
    handler = _LogToConsole(warn, note)
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
