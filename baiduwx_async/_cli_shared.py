"""What the runs of `baiduwx batch`, `embed` and `serve` share through Redis (`--redis URL`):
one access token, one quota (`--qps`, `--tpm`, and `serve`'s `--rpm`, then applying to all
the runs together), and the slow-down after rate-limit answers; and the errors that stop a
batch."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import baiduwx_async as wx

from ._cli_common import EXIT_USAGE, CommandError, redact

__all__ = ["FATAL_ERRORS", "LogToConsole", "shared_state"]

#: Failures that would fail every remaining item too: the batch stops, nothing is written
#: for the item, and the next run retries it.
FATAL_ERRORS = (wx.AuthenticationError, wx.PermissionDeniedError, wx.QuotaExceededError)


async def shared_state(
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
    # answers; with --tpm they share one token budget too (`baiduwx serve` has --rpm as well).
    limiter = RedisRateLimiter(
        args.redis,
        qps=args.qps,
        rpm=getattr(args, "rpm", None),
        tpm=getattr(args, "tpm", None),
    )
    await stack.enter_async_context(limiter)
    await limiter.ping()
    shared["rate_limiter"] = limiter
    # a token fetch lock held elsewhere for lock_timeout would hold up every item alike
    return shared, (*FATAL_ERRORS, RedisLockTimeoutError)


class LogToConsole(logging.Handler):
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
