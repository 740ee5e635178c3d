"""An asyncio- and trio-native client for Baidu Wenxin Workshop (Qianfan) model serving."""

from ._errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    StreamError,
    TransportError,
    ValidationError,
    WenxinError,
)
from ._version import __version__

__all__ = [
    "APIError",
    "AuthenticationError",
    "InvalidRequestError",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTimeoutError",
    "ServerError",
    "StreamError",
    "TransportError",
    "ValidationError",
    "WenxinError",
    "__version__",
]
