"""An asyncio- and trio-native client for Baidu Wenxin Workshop (Qianfan) model serving.

```python
import baiduwx_async as wx

async with wx.AsyncClient(credentials=wx.OAuthCredentials("api-key", "secret-key")) as client:
    reply = await client.chat("mpt30b", [wx.user("Please introduce The Great Wall")])
    print(reply.result, reply.usage.total_tokens)
```
"""

from ._auth import (
    AccessTokenAuth,
    BceSigningAuth,
    Credentials,
    IAMCredentials,
    OAuthCredentials,
    StaticToken,
    credentials_from_env,
)
from ._batch import BatchIterator, BatchProgress, BatchResult, BatchWidthWarning
from ._client import AsyncClient
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
from ._limits import AdaptiveRateLimiter, NoLimit, RateLimiter, TokenRateLimiter
from ._models import (
    ChatChunk,
    ChatResponse,
    CompletionChunk,
    CompletionResponse,
    Message,
    RateLimitInfo,
    Usage,
    assistant,
    user,
)
from ._retry import RetryPolicy
from ._streaming import ChatStream, CompletionStream
from ._token_budget import TokenCharge, TokenEstimator, estimate_tokens
from ._tokens import (
    AccessToken,
    FileTokenStore,
    MemoryTokenStore,
    SharedTokenStore,
    TokenManager,
    TokenStore,
)
from ._version import __version__

__all__ = [
    "APIError",
    "AccessToken",
    "AccessTokenAuth",
    "AdaptiveRateLimiter",
    "AsyncClient",
    "AuthenticationError",
    "BatchIterator",
    "BatchProgress",
    "BatchResult",
    "BatchWidthWarning",
    "BceSigningAuth",
    "ChatChunk",
    "ChatResponse",
    "ChatStream",
    "CompletionChunk",
    "CompletionResponse",
    "CompletionStream",
    "Credentials",
    "FileTokenStore",
    "IAMCredentials",
    "InvalidRequestError",
    "MemoryTokenStore",
    "Message",
    "NoLimit",
    "OAuthCredentials",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "RateLimitInfo",
    "RateLimiter",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServerError",
    "SharedTokenStore",
    "StaticToken",
    "StreamError",
    "TokenCharge",
    "TokenEstimator",
    "TokenManager",
    "TokenRateLimiter",
    "TokenStore",
    "TransportError",
    "Usage",
    "ValidationError",
    "WenxinError",
    "__version__",
    "assistant",
    "credentials_from_env",
    "estimate_tokens",
    "user",
]
