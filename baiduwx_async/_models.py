"""
The data of a call, and the checks of its inputs. This module gathers the parts (and
holds the small checks they share with the client):

- `_messages`: messages, function definitions and calls, the conversation rules;
- `_params`: generation parameters, the ERNIE chat fields and every call's options;
- `_responses`: answers and chunks, and the converter that decodes them.

Embeddings have their own module, `_embeddings`.

Every documented constraint of a request is checked before anything is sent; a broken
one raises `ValidationError` naming the field and the rule.
"""

from __future__ import annotations

import re

from ._errors import ValidationError
from ._messages import (
    DEFAULT_MAX_INPUT_CHARS,
    Function,
    FunctionCall,
    Message,
    MessageLike,
    MessageParam,
    assistant,
    check_messages,
    function_result,
    user,
)
from ._params import ChatParams, CompletionParams
from ._responses import (
    ChatChunk,
    ChatResponse,
    CompletionChunk,
    CompletionResponse,
    RateLimitInfo,
    SearchInfo,
    SearchResult,
    Usage,
    converter,
    decode,
)

__all__ = [
    "DEFAULT_MAX_INPUT_CHARS",
    "ChatChunk",
    "ChatParams",
    "ChatResponse",
    "CompletionChunk",
    "CompletionParams",
    "CompletionResponse",
    "Function",
    "FunctionCall",
    "Message",
    "MessageLike",
    "MessageParam",
    "RateLimitInfo",
    "SearchInfo",
    "SearchResult",
    "Usage",
    "assistant",
    "check_endpoint",
    "check_messages",
    "check_positive_int",
    "check_prompt",
    "converter",
    "decode",
    "function_result",
    "user",
]


def check_prompt(prompt: object) -> str:
    """A completion prompt is a non-blank string."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError("prompt", "must be a non-blank string")
    return prompt


_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.~-]*")


def check_endpoint(endpoint: object) -> str:
    """An endpoint is a deployment's API name: one URL path segment, never `..` or a slash."""
    if not isinstance(endpoint, str) or not _ENDPOINT_NAME.fullmatch(endpoint):
        raise ValidationError(
            "endpoint",
            "must be one path segment of letters, digits, '_', '-', '.', '~' "
            "(no '/', not empty, not starting with '.')",
            endpoint,
        )
    return endpoint


def check_positive_int(value: object, field: str) -> int:
    """A count or a size: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field, "must be a positive integer", value)
    return value
