"""
The exception tree, and the one table that decides what each server error means.

```
WenxinError
├── ValidationError            (also a ValueError) bad input, nothing was sent
├── TransportError             connection failures
│   └── RequestTimeoutError    (also a TimeoutError)
├── ProtocolError              an answer that breaks the protocol (not JSON, fields missing)
│   └── StreamError            a stream that breaks the framing or ends without is_end
└── APIError                   the server said no: .code, .message, .request_id, .retryable
    ├── AuthenticationError    110, 111 (after one refresh), 13, 14, OAuth invalid_client, 401/403
    ├── PermissionDeniedError  6, 336004
    ├── RateLimitError         4, 18, 336501, 336502, HTTP 429 (retryable)
    │   └── QuotaExceededError 17, 19 (not retryable)
    ├── InvalidRequestError    3, 100, 336001-336003, 336005-336007, 336101-336105, other 4xx
    └── ServerError            1, 2, 15, 336000, 336100, 500000, HTTP 5xx
```

`ERROR_TABLE` maps every documented code to its class and retry rule; nothing else in
the package decides either. Codes not in the table raise a plain `APIError` that is
not retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

__all__ = [
    "ERROR_TABLE",
    "TOKEN_REFRESH_CODES",
    "APIError",
    "AuthenticationError",
    "ErrorRule",
    "InvalidRequestError",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTimeoutError",
    "ServerError",
    "StreamError",
    "TimeoutLimit",
    "TransportError",
    "ValidationError",
    "WenxinError",
    "api_error_from_body",
    "api_error_from_status",
    "rule_for_code",
]


class WenxinError(Exception):
    """Base class of every error this library raises."""


class ValidationError(WenxinError, ValueError):
    """Bad input, found before any byte was sent. Names the field and the rule it broke."""

    def __init__(self, field: str, rule: str, value: object = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        super().__init__(f"{field}: {rule}")


class TransportError(WenxinError):
    """The connection failed: refused, reset, or closed before a complete answer.

    `url` is where the request went (scheme, host, port and path; never the query, which
    holds the access token), `attempts` how many were made before giving up (`None` when
    the failure came mid-stream, where nothing is retried), and `hint` the setting to
    change. `str()` shows all three.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        attempts: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.url = url
        self.attempts = attempts
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        text = self.message
        if self.attempts is not None:
            text += f"; gave up after {self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.hint:
            text += f" - {self.hint}"
        return text


#: The four limits of an `httpx.Timeout`, the names `RequestTimeoutError.limit` takes.
TimeoutLimit = Literal["connect", "read", "write", "pool"]


class RequestTimeoutError(TransportError, TimeoutError):
    """No answer (or no next stream chunk) within the configured timeout.

    `limit` says which of the four limits of an `httpx.Timeout` expired (`"connect"`,
    `"read"`, `"write"` or `"pool"`: waiting for a free connection), when known, and
    `seconds` its value; change them with the client's or the call's `timeout=`.
    """

    def __init__(
        self,
        message: str,
        *,
        limit: TimeoutLimit | None = None,
        seconds: float | None = None,
        url: str | None = None,
        attempts: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, url=url, attempts=attempts, hint=hint)
        self.limit = limit
        self.seconds = seconds


class ProtocolError(WenxinError):
    """The server answered something the protocol does not allow (not JSON, fields missing)."""

    retryable = False

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        self.message = message
        self.request_id = request_id
        super().__init__(message)


class StreamError(ProtocolError):
    """A stream broke its framing: a chunk that is not JSON, a gap, or no `is_end` chunk.

    `retryable` is true when the stream broke before any chunk reached the caller.
    """

    def __init__(
        self, message: str, *, request_id: str | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.retryable = retryable


class APIError(WenxinError):
    """The server refused the call.

    `code` is the `error_code` of the body (an int, e.g. 336003), the OAuth `error` string
    (e.g. `"invalid_client"`), or `None` when only the HTTP status spoke. `request_id` is
    the id the server echoed (or the one we sent), `response_id` the body's `id`; `hint`
    says what to check, where we know. `retryable` and `retry_after` are what the retry
    loop went by (see `ERROR_TABLE`).
    """

    #: The body's `error_code` (int), the OAuth `error` (str), or None (HTTP status only).
    code: int | str | None
    #: The HTTP status of the answer, when there was one.
    status_code: int | None
    #: What to check or change, where the library knows.
    hint: str | None

    def __init__(
        self,
        message: str,
        *,
        code: int | str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        response_id: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.hint = hint
        self.code = code
        self.status_code = status_code
        self.request_id = request_id
        self.response_id = response_id
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        parts = []
        if self.code is not None:
            parts.append(f"[{self.code}]")
        elif self.status_code is not None:
            parts.append(f"[HTTP {self.status_code}]")
        parts.append(self.message)
        if self.request_id:
            parts.append(f"(request_id={self.request_id})")
        if self.hint:
            parts.append(f"- {self.hint}")
        return " ".join(parts)


class AuthenticationError(APIError):
    """The credentials were refused: a wrong key pair, a bad signature, a dead token."""


class PermissionDeniedError(APIError):
    """The credentials are valid but may not call this endpoint."""


class RateLimitError(APIError):
    """Too many requests or tokens per second/minute; retried with backoff."""


class QuotaExceededError(RateLimitError):
    """A daily or total quota is spent; waiting a few seconds will not help."""


class InvalidRequestError(APIError):
    """The server rejected the request itself (parameters, endpoint name, format)."""


class ServerError(APIError):
    """The service failed; retried with backoff."""


@attrs.frozen
class ErrorRule:
    """What one server answer means: the class to raise and how often it may be retried.

    `max_retries` of `None` means "as often as the call's retry budget allows".
    """

    error_class: type[APIError]
    retryable: bool
    max_retries: int | None = None


_AUTH = ErrorRule(AuthenticationError, retryable=False)
_PERMISSION = ErrorRule(PermissionDeniedError, retryable=False)
_RATE = ErrorRule(RateLimitError, retryable=True)
_QUOTA = ErrorRule(QuotaExceededError, retryable=False)
_INVALID = ErrorRule(InvalidRequestError, retryable=False)
_SERVER = ErrorRule(ServerError, retryable=True)

#: Codes after which the access token is refreshed once and the call replayed.
TOKEN_REFRESH_CODES = frozenset({110, 111})

ERROR_TABLE: Mapping[int | str, ErrorRule] = {
    1: _SERVER,
    2: _SERVER,
    3: _INVALID,
    4: _RATE,
    6: _PERMISSION,
    13: _AUTH,
    14: _AUTH,
    15: _SERVER,
    17: _QUOTA,
    18: _RATE,
    19: _QUOTA,
    100: _INVALID,
    110: _AUTH,
    111: _AUTH,
    336000: ErrorRule(ServerError, retryable=True, max_retries=1),
    **dict.fromkeys((336001, 336002, 336003), _INVALID),
    336004: _PERMISSION,
    **dict.fromkeys((336005, 336006, 336007), _INVALID),
    336100: _SERVER,
    **dict.fromkeys(range(336101, 336106), _INVALID),
    336501: _RATE,
    336502: _RATE,
    500000: _SERVER,
    "invalid_client": _AUTH,
}

_UNKNOWN = ErrorRule(APIError, retryable=False)


def rule_for_code(code: int | str) -> ErrorRule:
    """The rule for an `error_code` (or OAuth `error`); unknown codes are not retried."""
    rule = ERROR_TABLE.get(code)
    if rule is None and isinstance(code, str):
        # Any other OAuth `error` ("invalid_grant", ...) is a credentials problem too.
        return _AUTH
    return rule or _UNKNOWN


def rule_for_status(status_code: int) -> ErrorRule:
    """The rule for an HTTP status that came without a recognisable error body."""
    if status_code == 429:
        return _RATE
    if status_code >= 500:
        return _SERVER
    if status_code in (401, 403):
        return _AUTH
    return _INVALID


def api_error_from_body(
    body: Mapping[str, object],
    *,
    status_code: int | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError | None:
    """The error a decoded JSON body carries, or `None` when it carries none.

    Understands the v1 envelope (`error_code`, `error_msg`) and the OAuth one
    (`error`, `error_description`).
    """
    code = body.get("error_code")
    message: object
    if isinstance(code, int) and not isinstance(code, bool):
        message = body.get("error_msg", "")
    elif isinstance(body.get("error"), str):
        code = body["error"]
        message = body.get("error_description", "")
    else:
        return None
    assert isinstance(code, int | str)
    response_id = body.get("id")
    rule = rule_for_code(code)
    return rule.error_class(
        str(message) or "(no message)",
        code=code,
        status_code=status_code,
        request_id=request_id,
        response_id=response_id if isinstance(response_id, str) else None,
        retryable=rule.retryable,
        retry_after=retry_after,
    )


def api_error_from_status(
    status_code: int,
    reason: str,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """The error for an HTTP status whose body is not a recognisable error envelope."""
    rule = rule_for_status(status_code)
    return rule.error_class(
        f"HTTP {status_code} {reason}".rstrip(),
        status_code=status_code,
        request_id=request_id,
        retryable=rule.retryable,
        retry_after=retry_after,
    )
