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
from ._batch import (
    BatchFailure,
    BatchIterator,
    BatchProgress,
    BatchResult,
    BatchSuccess,
    BatchWidthWarning,
)
from ._batch_embed import EmbedBatchIterator
from ._client import AsyncClient
from ._embeddings import Embedding, EmbeddingResponse
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
    TimeoutLimit,
    TransportError,
    ValidationError,
    WenxinError,
)
from ._limits import AdaptiveRateLimiter, NoLimit, RateLimiter, TokenRateLimiter
from ._messages import (
    AssistantMessageParam,
    Function,
    FunctionCall,
    FunctionCallParam,
    FunctionMessageParam,
    FunctionParam,
    MessageLike,
    MessageParam,
    UserMessageParam,
    function_result,
)
from ._models import (
    ChatChunk,
    ChatResponse,
    CompletionChunk,
    CompletionResponse,
    Message,
    RateLimitInfo,
    SearchInfo,
    SearchResult,
    Usage,
    assistant,
    user,
)
from ._params import ChatOptions, CompletionOptions, EmbedOptions, ToolChoice
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
    "AssistantMessageParam",
    "AsyncClient",
    "AuthenticationError",
    "BatchFailure",
    "BatchIterator",
    "BatchProgress",
    "BatchResult",
    "BatchSuccess",
    "BatchWidthWarning",
    "BceSigningAuth",
    "ChatChunk",
    "ChatOptions",
    "ChatResponse",
    "ChatStream",
    "CompletionChunk",
    "CompletionOptions",
    "CompletionResponse",
    "CompletionStream",
    "Credentials",
    "EmbedBatchIterator",
    "EmbedOptions",
    "Embedding",
    "EmbeddingResponse",
    "FileTokenStore",
    "Function",
    "FunctionCall",
    "FunctionCallParam",
    "FunctionMessageParam",
    "FunctionParam",
    "IAMCredentials",
    "InvalidRequestError",
    "MemoryTokenStore",
    "Message",
    "MessageLike",
    "MessageParam",
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
    "SearchInfo",
    "SearchResult",
    "ServerError",
    "SharedTokenStore",
    "StaticToken",
    "StreamError",
    "TimeoutLimit",
    "TokenCharge",
    "TokenEstimator",
    "TokenManager",
    "TokenRateLimiter",
    "TokenStore",
    "ToolChoice",
    "TransportError",
    "Usage",
    "UserMessageParam",
    "ValidationError",
    "WenxinError",
    "__version__",
    "assistant",
    "credentials_from_env",
    "estimate_tokens",
    "function_result",
    "user",
]


def _public_home() -> None:
    """Give the public classes this package as their module, so that reprs, tracebacks and
    `help()` show `baiduwx_async.ChatChunk`, where users import it from. TypedDicts and
    Protocols keep theirs (type checkers read their annotations there); attrs classes
    resolve their annotations first, while their own module still names them."""
    import attrs

    for name in __all__:
        value = globals()[name]
        if not isinstance(value, type) or not value.__module__.startswith(f"{__name__}._"):
            continue
        if hasattr(value, "__required_keys__") or getattr(value, "_is_protocol", False):
            continue
        if attrs.has(value):
            attrs.resolve_types(value)
        value.__module__ = __name__


_public_home()
