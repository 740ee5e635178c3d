"""
What `AsyncClient.__init__` builds from its keywords, each checked first: the service
root, the rate limiter and token budget, the transport, and how requests are
authenticated (fetching an OAuth access token through the client's own sender).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Awaitable, Callable

import httpx

from ._auth import (
    TOKEN_PATH,
    AccessTokenAuth,
    BceSigningAuth,
    Credentials,
    IAMCredentials,
    OAuthCredentials,
    RequestAuth,
    StaticToken,
    credentials_from_env,
    oauth_hint,
    parse_token_response,
    token_url,
)
from ._backends import make_transport
from ._calls import is_loopback
from ._errors import AuthenticationError, ValidationError
from ._limits import AdaptiveRateLimiter, RateLimiter, TokenRateLimiter
from ._retry import RetryPolicy
from ._sender import PreparedCall, Sender
from ._token_budget import TokenEstimator, estimate_tokens
from ._tokens import AccessToken, TokenManager, TokenStore
from ._transport import HttpxTransport, Transport

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_CONNECTIONS",
    "client_auth",
    "client_base_url",
    "client_credentials",
    "client_limiter",
    "client_transport",
    "fetch_token",
]

logger = logging.getLogger("baiduwx_async")

DEFAULT_BASE_URL = "https://aip.baidubce.com"
DEFAULT_MAX_CONNECTIONS = 100


def client_credentials(credentials: Credentials | None) -> Credentials:
    """The credentials given, else the environment's."""
    if credentials is None:
        credentials = credentials_from_env()
    if not isinstance(credentials, OAuthCredentials | IAMCredentials | StaticToken):
        raise ValidationError(
            "credentials", "must be OAuthCredentials, IAMCredentials or StaticToken"
        )
    return credentials


def client_base_url(base_url: str | httpx.URL | None) -> httpx.URL:
    """The service root: `base_url`, else `QIANFAN_BASE_URL`, else Baidu's."""
    url = httpx.URL(
        str(base_url or os.environ.get("QIANFAN_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    )
    if url.scheme not in ("http", "https") or not url.host:
        raise ValidationError("base_url", "must be an absolute http(s) URL", str(base_url))
    if url.scheme == "http" and not is_loopback(url.host):
        logger.warning(
            "base_url %s is plain http: access tokens and answers cross the network "
            "unencrypted; use https",
            url,
        )
    return url


def client_limiter(
    rate_limiter: RateLimiter | None,
    qps: float | None,
    rpm: float | None,
    tpm: float | None,
    token_estimator: TokenEstimator | None,
) -> tuple[RateLimiter, TokenRateLimiter | None, TokenEstimator | None]:
    """The limiter, the token budget (when there is one) and the estimate charged to it."""
    if rate_limiter is not None and (qps is not None or rpm is not None):
        raise ValidationError("rate_limiter", "give either rate_limiter or qps/rpm, not both")
    if rate_limiter is not None and tpm is not None:
        raise ValidationError("tpm", "give it to your rate_limiter (it keeps the budget)")
    limiter = rate_limiter or AdaptiveRateLimiter(qps=qps, rpm=rpm, tpm=tpm)
    # Requests are estimated only with a token budget: nothing is added to calls without.
    budget = limiter if isinstance(limiter, TokenRateLimiter) else None
    if budget is not None and budget.tpm is not None:
        return limiter, budget, token_estimator or estimate_tokens
    if token_estimator is not None:
        raise ValidationError("token_estimator", "needs a token budget (tpm=...)")
    return limiter, budget, None


def client_transport(
    http_backend: str,
    http_client: httpx.AsyncClient | None,
    max_concurrency: int | None,
    timeout: httpx.Timeout,
    verify: ssl.SSLContext | bool,
) -> tuple[Transport, int | None]:
    """The transport, and the most requests it can have on the wire at once (None: the
    caller's own pool decides)."""
    if http_client is None:
        pool_size = max_concurrency or DEFAULT_MAX_CONNECTIONS
        return make_transport(http_backend, pool_size, timeout, verify), pool_size
    if verify is not True:
        raise ValidationError("verify", "set it on your own http_client instead")
    if http_backend != "httpx":
        raise ValidationError("http_backend", "cannot be chosen with your own http_client")
    return HttpxTransport(client=http_client), max_concurrency


def client_auth(
    credentials: Credentials,
    base_url: httpx.URL,
    fetch: Callable[[], Awaitable[AccessToken]],
    token_store: TokenStore | None,
    clock: Callable[[], float],
) -> tuple[TokenManager | None, RequestAuth]:
    """How requests are authenticated, and the access token manager for OAuth."""
    if isinstance(credentials, OAuthCredentials):
        tokens = TokenManager(
            fetch,
            key=credentials.cache_key(f"{base_url}{TOKEN_PATH}"),
            store=token_store,
            clock=clock,
        )
        return tokens, AccessTokenAuth(tokens)
    if isinstance(credentials, IAMCredentials):
        return None, BceSigningAuth(credentials, clock=clock)
    return None, AccessTokenAuth(credentials)


async def fetch_token(
    sender: Sender,
    base_url: httpx.URL,
    credentials: OAuthCredentials,
    policy: RetryPolicy,
    timeout: httpx.Timeout,
    clock: Callable[[], float],
) -> AccessToken:
    """A new OAuth access token, asked for through the client's sender (retried alike)."""
    call = PreparedCall(
        url=token_url(base_url, credentials),
        content=b"",
        headers={},
        policy=policy,
        timeout=timeout,
    )
    try:
        answer = await sender.send(call)
        return parse_token_response(answer.status_code, answer.body, now=clock())
    except AuthenticationError as exc:
        if exc.hint is None:
            exc.hint = oauth_hint(credentials)
        raise
