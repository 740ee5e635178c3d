"""
The options of a call, checked: `extra_body`, `extra_headers`, `extra_query` (merged into
what is sent), and the call's own `timeout`, `max_retries` and `request_id`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import httpx

from ._errors import ValidationError

__all__ = [
    "DEFAULT_TIMEOUT",
    "NO_EXTRAS",
    "Extras",
    "QueryValue",
    "as_timeout",
    "check_json",
    "refuse_batch_request_id",
]

QueryValue = str | int | float

#: Generation is slow: a long answer may take minutes before its first byte (the
#: official SDK allows 300 s). Connecting should not.
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)


def as_timeout(value: object, field: str = "timeout") -> httpx.Timeout:
    """A client's or a call's `timeout=`: an `httpx.Timeout` as given, or seconds for the
    whole wait (connecting capped at 10 s)."""
    if isinstance(value, httpx.Timeout):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValidationError(field, "must be a positive number of seconds or httpx.Timeout", value)
    return httpx.Timeout(float(value), connect=min(float(value), DEFAULT_TIMEOUT.connect or 10.0))


def check_json(field: str, value: object) -> None:
    """`ValidationError` naming `field` unless `value` is JSON (no NaN or infinity)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(field, f"must be JSON-serialisable ({exc})") from None


def _check_extra_body(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError("extra_body", "must be a mapping of field names to JSON values")
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValidationError("extra_body", "keys must be strings", key)
        if key == "stream":
            raise ValidationError(
                "extra_body['stream']",
                "is decided by the method: use chat_stream()/complete_stream() to stream",
            )
        check_json(f"extra_body[{key!r}]", item)
    return dict(value)


#: A header name: an RFC 9110 token.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: What a header value may not hold: anything but printable ASCII, space and tab.
_NOT_IN_HEADER_VALUE = re.compile(r"[^\t\x20-\x7e]")
_NOT_IN_REQUEST_ID = re.compile(r"[^\x20-\x7e]")


def _check_extra_headers(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError("extra_headers", "must be a mapping of strings to strings")
    for key, item in value.items():
        if not isinstance(key, str) or not _HEADER_NAME.fullmatch(key):
            raise ValidationError(
                "extra_headers",
                "names must be header names (letters, digits and !#$%&'*+-.^_`|~)",
                key,
            )
        # The value is never quoted back: a header may carry a secret.
        if not isinstance(item, str) or _NOT_IN_HEADER_VALUE.search(item):
            raise ValidationError(
                f"extra_headers[{key!r}]",
                "must be a string of printable ASCII (no line breaks or control characters)",
            )
    return dict(value)


def _check_extra_query(value: object) -> dict[str, QueryValue] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError("extra_query", "must be a mapping of strings to strings or numbers")
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ValidationError("extra_query", "names must be non-empty strings", key)
        if key == "access_token":
            raise ValidationError(
                "extra_query['access_token']", "is set by the client from its credentials"
            )
        if (
            isinstance(item, bool)
            or not isinstance(item, str | int | float)
            or (isinstance(item, float) and not math.isfinite(item))
        ):
            raise ValidationError(f"extra_query[{key!r}]", "must be a string or a finite number")
    return dict(value)


class Extras:
    """The options of one call, checked: what is merged into its body, headers and query,
    and its own timeout, retries and request id."""

    __slots__ = ("body", "headers", "max_retries", "query", "request_id", "timeout")

    def __init__(
        self,
        *,
        extra_body: object = None,
        extra_headers: object = None,
        extra_query: object = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.body = _check_extra_body(extra_body)
        self.headers = _check_extra_headers(extra_headers)
        self.query = _check_extra_query(extra_query)
        self.timeout = None if timeout is None else as_timeout(timeout)
        if max_retries is not None and (
            isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
        ):
            raise ValidationError("max_retries", "must be a non-negative integer", max_retries)
        self.max_retries = max_retries
        if request_id is not None and (
            not isinstance(request_id, str) or _NOT_IN_REQUEST_ID.search(request_id)
        ):
            raise ValidationError("request_id", "must be a string of printable ASCII", request_id)
        self.request_id = request_id


NO_EXTRAS = Extras()


def refuse_batch_request_id(params: Mapping[str, Any]) -> None:
    """A batch sends many requests, and one id on all of them would make them one."""
    if params.get("request_id") is not None:
        raise ValidationError(
            "request_id",
            "is one request's id, and a batch sends many: leave it out (each request gets "
            "its own, in BatchResult.response.request_id)",
        )
