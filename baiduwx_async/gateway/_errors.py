"""OpenAI's error shape, and what each of our exceptions becomes in it.

OpenAI's clients read `{"error": {"message", "type", "param", "code"}}` and choose their
exception class by the HTTP status alone (400 `BadRequestError`, 401 `AuthenticationError`,
404 `NotFoundError`, 429 `RateLimitError`, 5xx `InternalServerError`), so the status is what
must be right; `param` names the request field at fault, as OpenAI's own answers do.
"""

from __future__ import annotations

import json
import math
import re

from .._errors import (
    APIError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    ValidationError,
    WenxinError,
)

__all__ = ["GatewayError", "error_body", "error_for"]

#: Upstream code for "the messages are too long": OpenAI calls it `context_length_exceeded`.
_TOO_LONG = 336007
#: Upstream code for "no such endpoint": the model's route names a deployment that is not there.
_NO_ENDPOINT = 336005


class GatewayError(Exception):
    """An error answer: HTTP status and OpenAI's four fields (`headers` go out with it)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"GatewayError({self.status}, {self.message!r}, param={self.param!r})"


def invalid(param: str | None, message: str, code: str | None = None) -> GatewayError:
    """A 400 for a request field the gateway refuses or cannot map."""
    return GatewayError(400, message, param=param, code=code)


def error_body(error: GatewayError) -> bytes:
    body = {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _retry_after(exc: APIError) -> dict[str, str]:
    if exc.retry_after is None or not math.isfinite(exc.retry_after):
        return {}
    return {"retry-after": str(max(1, math.ceil(exc.retry_after)))}


_MESSAGE_INDEX = re.compile(r"^messages\[(\d+)\]")


def _upstream_text(exc: BaseException) -> str:
    # Our exceptions' own text never holds a secret (the client redacts before raising).
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:1000]


def error_for(exc: BaseException, param_for: dict[int, int] | None = None) -> GatewayError:
    """The error answer for an exception raised by the client.

    `param_for` maps the index of an upstream message to the caller's own message index, so
    that `param` names the message the caller sent (system messages are taken out upstream).
    """
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, ValidationError):
        field = exc.field
        if field.startswith("texts"):  # the client's name for an embedding's `input`
            field = "input" + field[len("texts") :]
        elif param_for:
            match = _MESSAGE_INDEX.match(field)
            if match and int(match.group(1)) in param_for:
                index = param_for[int(match.group(1))]
                field = f"messages[{index}]" + field[match.end() :]
        return GatewayError(400, f"{field}: {exc.rule}", param=field)
    if isinstance(exc, QuotaExceededError):
        return GatewayError(
            429,
            f"upstream quota exhausted: {_upstream_text(exc)}",
            type="insufficient_quota",
            code="insufficient_quota",
            headers=_retry_after(exc),
        )
    if isinstance(exc, RateLimitError):
        return GatewayError(
            429,
            f"upstream rate limit reached: {_upstream_text(exc)}",
            type="requests",
            code="rate_limit_exceeded",
            headers=_retry_after(exc),
        )
    if isinstance(exc, RequestTimeoutError):
        return GatewayError(
            504, f"upstream timed out: {_upstream_text(exc)}", type="timeout", code="timeout"
        )
    if isinstance(exc, InvalidRequestError) and exc.code == _TOO_LONG:
        return GatewayError(
            400, _upstream_text(exc), param="messages", code="context_length_exceeded"
        )
    if isinstance(exc, InvalidRequestError) and exc.code == _NO_ENDPOINT:
        return GatewayError(
            404,
            f"the model's upstream endpoint does not exist: {_upstream_text(exc)}",
            param="model",
            code="model_not_found",
        )
    if isinstance(exc, InvalidRequestError):
        return GatewayError(400, f"upstream refused the request: {_upstream_text(exc)}")
    if isinstance(exc, WenxinError):
        return GatewayError(
            502, f"upstream failure: {_upstream_text(exc)}", type="api_error", code="bad_gateway"
        )
    return GatewayError(500, "internal error in the gateway", type="api_error")
