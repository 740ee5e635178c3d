"""
How long to wait before the next attempt, and whether there is one.

Which failures are retryable is the error table's decision (`_errors.ERROR_TABLE`,
carried on each error as `.retryable`); this module only counts and waits:
exponential backoff with full jitter, capped, and never shorter than the server's
`Retry-After`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import attrs

from ._errors import APIError, ValidationError, rule_for_code
from ._protocol import parse_retry_after  # re-exported: the header is read there

__all__ = ["AttemptCount", "RetryPolicy", "count_attempts", "note_attempt", "parse_retry_after"]


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValidationError(attribute.name, "must be a number >= 0", value)


@attrs.frozen
class RetryPolicy:
    """Retry budget and backoff.

    The n-th retry (n from 0) waits a uniformly random time in
    `[0, min(max_backoff, initial_backoff * 2**n)]` ("full jitter", so many clients that
    failed together do not return together), or the server's `Retry-After` if that is
    longer, but never more than `max_wait`.
    """

    max_retries: int = attrs.field(default=3, validator=_non_negative)
    initial_backoff: float = attrs.field(default=0.5, validator=_non_negative)
    max_backoff: float = attrs.field(default=8.0, validator=_non_negative)
    max_wait: float = attrs.field(default=60.0, validator=_non_negative)
    random: Callable[[], float] = attrs.field(default=random.random, eq=False, repr=False)

    def allows(self, error: BaseException, retries_done: int) -> bool:
        """Whether a call that failed with `error` after `retries_done` retries goes again."""
        if not getattr(error, "retryable", False):
            return False
        budget = self.max_retries
        if isinstance(error, APIError) and error.code is not None:
            limit = rule_for_code(error.code).max_retries
            if limit is not None:
                budget = min(budget, limit)
        return retries_done < budget

    def wait(self, retries_done: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number `retries_done` (counted from 0)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0**retries_done)
        delay = self.random() * ceiling
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_wait)


@attrs.define
class AttemptCount:
    count: int = 0


# Not event-loop state: a context variable, so each batch item (its own task) counts its own.
_attempts: ContextVar[AttemptCount | None] = ContextVar("baiduwx_async_attempts", default=None)


@contextmanager
def count_attempts() -> Iterator[AttemptCount]:
    """Count the HTTP attempts the calls made inside this block send."""
    counter = AttemptCount()
    token = _attempts.set(counter)
    try:
        yield counter
    finally:
        _attempts.reset(token)


def note_attempt() -> None:
    counter = _attempts.get()
    if counter is not None:
        counter.count += 1
