"""
The sans-I/O core of a model call: routes, request ids, redaction, and the reading
of an answer into a result or the error it carries (docs/protocol.md §1, §6, §8).

Nothing here awaits; `_client` sends what this builds and hands back what it got.
"""

from __future__ import annotations

import email.utils
import functools
import json
import random
import re
from collections.abc import Callable, Mapping
from typing import Literal

from ._errors import (
    APIError,
    ProtocolError,
    WenxinError,
    api_error_from_body,
    api_error_from_status,
)
from ._version import __version__

__all__ = [
    "MODEL_PREFIX",
    "Kind",
    "error_in_answer",
    "excerpt",
    "model_path",
    "new_request_id",
    "parse_retry_after",
    "redact",
]

Kind = Literal["chat", "completions", "embeddings"]

MODEL_PREFIX = "/rpc/2.0/ai_custom/v1/wenxinworkshop/"
REQUEST_ID_HEADER = "Request_id"
RESPONSE_ID_HEADER = "x-baidu-request-id"
_REQUEST_ID_PREFIX = f"baiduwx_async-{__version__}-"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from `now` that a `Retry-After` header asks for (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def model_path(kind: Kind, endpoint: str) -> str:
    """The route of a deployment; `endpoint` was checked by `_models.check_endpoint`."""
    return f"{MODEL_PREFIX}{kind}/{endpoint}"


def new_request_id() -> str:
    """`baiduwx_async-<version>-<16 alphanumerics>`, as the official SDK shapes its own."""
    # A correlation id, not a secret: the fast PRNG, no system call per request.
    return f"{_REQUEST_ID_PREFIX}{random.getrandbits(64):016x}"


_SECRET_PARAMS = re.compile(r"((?:access_token|client_secret|client_id)=)[^&\s\"'#]+")


def redact(text: object) -> str:
    """`text` with every access token, API key and secret key in a query replaced by ***."""
    return _SECRET_PARAMS.sub(r"\1***", str(text))


def excerpt(body: bytes | str, limit: int = 200) -> str:
    """A short, redacted, printable piece of a body for an error message."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if len(text) > limit:
        text = text[:limit] + "…"
    return redact(text).encode("unicode_escape", "backslashreplace").decode("ascii")


#: Answers from this size on are decoded with orjson when it is installed. Below it, the
#: saving is a few microseconds a call; above it (embeddings), most of the call's CPU.
LARGE_ANSWER_BYTES = 16 * 1024


@functools.cache
def _fast_loads() -> Callable[[bytes], object] | None:
    try:
        from ._fast_json import loads
    except ImportError:
        return None
    return loads


def loads_or_none(text: bytes | str) -> object:
    """Decoded JSON, or `None` for anything that is not JSON we can hold: invalid text,
    invalid UTF-8, or nesting deep enough to exhaust the parser's recursion."""
    if not text:
        return None
    if len(text) >= LARGE_ANSWER_BYTES and isinstance(text, bytes):
        fast = _fast_loads()
        if fast is not None:
            try:
                return fast(text)
            except ValueError:
                pass  # json decides: it reads some of what orjson refuses, and refuses the rest
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def error_in_answer(
    status_code: int,
    reason: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    request_id: str | None,
    now: float,
    expect_json: bool = True,
) -> tuple[WenxinError | None, object]:
    """Read a whole answer: `(error, decoded JSON)`; `error` is `None` for a good answer.

    The order is docs/protocol.md §6's: an `error_code` body decides whatever the status, then
    an OAuth `error`, then the status (429 and 5xx retryable, 401/403 authentication,
    other 4xx invalid). A 200 that is not JSON is a `ProtocolError`; so is any answer
    when `expect_json` is false (a stream request answered with JSON but no error).
    """
    retry_after = parse_retry_after(headers.get("retry-after"), now)
    data = loads_or_none(body)
    if isinstance(data, dict):
        api_error = api_error_from_body(
            data, status_code=status_code, request_id=request_id, retry_after=retry_after
        )
        if api_error is not None:
            return api_error, data
    if status_code != 200:
        error: APIError = api_error_from_status(
            status_code, reason, request_id=request_id, retry_after=retry_after
        )
        return error, data
    if data is None:
        return ProtocolError(f"answer is not JSON: {excerpt(body)!r}", request_id=request_id), None
    if not expect_json:
        return ProtocolError(
            f"stream request answered with JSON but no error_code: {excerpt(body)!r}",
            request_id=request_id,
        ), data
    return None, data
