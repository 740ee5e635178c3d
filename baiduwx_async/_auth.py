"""
Credentials, and the `httpx.Auth` objects that put them on each request.

Three kinds of credentials (docs/protocol.md §2):

- `OAuthCredentials(api_key, secret_key)`: exchanged for an access token that goes in
  the `access_token` query parameter; refreshed by a `TokenManager`.
- `IAMCredentials(access_key, secret_key)`: every request is signed (bce-auth-v1).
- `StaticToken(token)`: an access token obtained elsewhere, used as is.

None of them ever shows a secret in its `repr`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, MutableMapping
from typing import Protocol

import attrs
import httpx

from . import _signing
from ._errors import (
    APIError,
    AuthenticationError,
    ProtocolError,
    ValidationError,
    api_error_from_body,
    api_error_from_status,
)
from ._protocol import loads_or_none
from ._tokens import AccessToken, TokenManager

__all__ = [
    "AccessTokenAuth",
    "BceSigningAuth",
    "Credentials",
    "IAMCredentials",
    "OAuthCredentials",
    "RequestAuth",
    "StaticToken",
    "credentials_from_env",
    "oauth_hint",
    "parse_token_response",
    "token_url",
]

TOKEN_PATH = "/oauth/2.0/token"


def _non_blank(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(attribute.name, "must be a non-blank string")


def _fit_for_a_header(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    # The access key is sent in the Authorization header, where HTTP allows no control
    # character; caught here it names the field, where the transport could only refuse.
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ValidationError(attribute.name, "must be printable ASCII without spaces")


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@attrs.frozen(repr=False)
class OAuthCredentials:
    """An application's API Key and Secret Key, exchanged for access tokens."""

    api_key: str = attrs.field(validator=_non_blank)
    secret_key: str = attrs.field(validator=_non_blank)

    def cache_key(self, token_url: str) -> str:
        """Names this pair's token in a store without revealing either key."""
        return _fingerprint(token_url, self.api_key, self.secret_key)

    def __repr__(self) -> str:
        return "OAuthCredentials(api_key='***', secret_key='***')"


def _positive_seconds(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(attribute.name, "must be a positive number of seconds", value)


@attrs.frozen(repr=False)
class IAMCredentials:
    """An IAM Access Key and Secret Key; every request is signed with bce-auth-v1.

    `expiration` is how many seconds a signature stays valid (300, as the official SDK).
    """

    access_key: str = attrs.field(validator=[_non_blank, _fit_for_a_header])
    secret_key: str = attrs.field(validator=_non_blank)
    expiration: int = attrs.field(default=300, validator=_positive_seconds)

    def __repr__(self) -> str:
        return (
            f"IAMCredentials(access_key={self.access_key!r}, secret_key='***', "
            f"expiration={self.expiration})"
        )


@attrs.frozen(repr=False)
class StaticToken:
    """An access token obtained elsewhere; it cannot be refreshed when it expires."""

    token: str = attrs.field(validator=_non_blank)

    def __repr__(self) -> str:
        return "StaticToken(token='***')"


Credentials = OAuthCredentials | IAMCredentials | StaticToken
"""What `AsyncClient(credentials=...)` takes; `credentials_from_env()` returns one."""


def credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials from the environment, first match wins.

    1. `QIANFAN_AK` + `QIANFAN_SK` -> `OAuthCredentials` (the official SDK's order too);
    2. `QIANFAN_ACCESS_KEY` + `QIANFAN_SECRET_KEY` -> `IAMCredentials`;
    3. `QIANFAN_ACCESS_TOKEN` -> `StaticToken`.
    """
    env = os.environ if environ is None else environ
    pairs: list[tuple[str, str, Callable[[str, str], Credentials]]] = [
        ("QIANFAN_AK", "QIANFAN_SK", OAuthCredentials),
        ("QIANFAN_ACCESS_KEY", "QIANFAN_SECRET_KEY", IAMCredentials),
    ]
    for first, second, make in pairs:
        if env.get(first) and env.get(second):
            return make(env[first], env[second])
    if env.get("QIANFAN_ACCESS_TOKEN"):
        return StaticToken(env["QIANFAN_ACCESS_TOKEN"])
    for first, second, _ in pairs:
        if env.get(first) or env.get(second):
            missing = second if env.get(first) else first
            raise AuthenticationError(f"{first} and {second} go together: {missing} is not set")
    raise AuthenticationError(
        "no credentials: pass credentials= or set QIANFAN_AK and QIANFAN_SK "
        "(or QIANFAN_ACCESS_KEY and QIANFAN_SECRET_KEY, or QIANFAN_ACCESS_TOKEN)"
    )


def oauth_hint(credentials: OAuthCredentials, environ: Mapping[str, str] | None = None) -> str:
    """What to check when the token endpoint refuses an API Key / Secret Key pair: where
    the pair came from (by name: never the values) and the usual mistakes."""
    env = os.environ if environ is None else environ
    from_env = (env.get("QIANFAN_AK"), env.get("QIANFAN_SK")) == (
        credentials.api_key,
        credentials.secret_key,
    )
    source = (
        "the environment variables QIANFAN_AK and QIANFAN_SK"
        if from_env
        else "credentials=OAuthCredentials(...)"
    )
    return (
        f"the API Key / Secret Key pair from {source} was refused: check that both belong "
        "to the same application in the Qianfan console and were copied whole; an IAM "
        "Access Key pair goes in IAMCredentials (or QIANFAN_ACCESS_KEY and "
        "QIANFAN_SECRET_KEY) instead"
    )


# --- the OAuth token call (sans-I/O: the client sends what this builds)


def token_url(base_url: httpx.URL, credentials: OAuthCredentials) -> httpx.URL:
    """Where to POST to exchange an API Key and Secret Key for an access token (no body)."""
    params = {
        "grant_type": "client_credentials",
        "client_id": credentials.api_key,
        "client_secret": credentials.secret_key,
    }
    return httpx.URL(f"{base_url}{TOKEN_PATH}", params=params)


def parse_token_response(
    status_code: int, body: bytes, *, now: float, request_id: str | None = None
) -> AccessToken:
    """An `AccessToken`, or the error the token endpoint answered (docs/protocol.md §2a)."""
    data = loads_or_none(body)
    if isinstance(data, dict):
        error = api_error_from_body(data, status_code=status_code, request_id=request_id)
        if error is not None:
            raise error
    if status_code != 200:
        raise api_error_from_status(status_code, "from the token endpoint", request_id=request_id)
    token = data.get("access_token") if isinstance(data, dict) else None
    expires_in = data.get("expires_in") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise ProtocolError("token endpoint answered without an access_token")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
        raise ProtocolError("token endpoint answered without a positive expires_in")
    return AccessToken(token, now, float(expires_in))


# --- putting credentials on a request


class RequestAuth(Protocol):
    """What the client needs of an auth: stamp a request, and recover from a dead token."""

    async def url_for(self, url: httpx.URL) -> tuple[httpx.URL, str | None]:
        """The URL to send to (with the access token, if that is how we authenticate)."""
        ...

    def authorize(
        self, method: str, url: httpx.URL, headers: Mapping[str, str]
    ) -> Mapping[str, str]:
        """The headers to send to that URL: `headers` as they are, or a signed copy."""
        ...

    async def recover(self, error: APIError, token: str | None) -> bool:
        """After a 110/111 answer: True if a new token is ready and the call may be replayed."""
        ...

    def hint(self) -> str:
        """What to check when the service refuses these credentials."""
        ...


class AccessTokenAuth(httpx.Auth):
    """Adds `access_token=<token>` to each request's query."""

    def __init__(self, source: TokenManager | StaticToken) -> None:
        self._source = source
        # URL with the token added, per URL object and token: parsing a URL costs more
        # than the rest of building a request, and the client reuses one URL per route.
        self._stamped: dict[int, tuple[httpx.URL, str, httpx.URL]] = {}

    async def url_for(self, url: httpx.URL) -> tuple[httpx.URL, str]:
        if isinstance(self._source, StaticToken):
            token = self._source.token
        else:
            token = await self._source.get_token()
        cached = self._stamped.get(id(url))
        if cached is not None and cached[0] is url and cached[1] == token:
            return cached[2], token
        if len(self._stamped) >= 256:
            self._stamped.clear()
        stamped = url.copy_merge_params({"access_token": token})
        # the entry holds `url` itself, so its id cannot be reused while it is cached
        self._stamped[id(url)] = (url, token, stamped)
        return stamped, token

    def authorize(
        self, method: str, url: httpx.URL, headers: Mapping[str, str]
    ) -> Mapping[str, str]:
        return headers  # the token travels in the URL

    async def recover(self, error: APIError, token: str | None) -> bool:
        if isinstance(self._source, StaticToken) or token is None:
            return False
        await self._source.refresh_if_stale(token)
        return True

    def hint(self) -> str:
        if isinstance(self._source, StaticToken):
            return "the static access token was refused; it may have expired or been revoked"
        return "check the API Key / Secret Key pair of the application"

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.url, _ = await self.url_for(request.url)
        yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("AccessTokenAuth works with httpx.AsyncClient only")
        yield request  # pragma: no cover

    def __repr__(self) -> str:
        return f"AccessTokenAuth({self._source!r})"


#: Headers the client signs besides every `x-bce-*` one (docs/protocol.md §2b, project choice).
SIGNED_HEADERS = ("content-type", "host", "x-bce-date")


class BceSigningAuth(httpx.Auth):
    """Signs each request afresh with bce-auth-v1, so no retry sends a stale signature."""

    def __init__(
        self, credentials: IAMCredentials, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._credentials = credentials
        self._clock = clock

    async def url_for(self, url: httpx.URL) -> tuple[httpx.URL, None]:
        return url, None

    def authorize(
        self, method: str, url: httpx.URL, headers: Mapping[str, str]
    ) -> Mapping[str, str]:
        # Host is signed, so it is set here as httpx would set it, for every transport.
        signed = {name.lower(): value for name, value in headers.items()}
        signed.setdefault("host", url.netloc.decode("ascii"))
        self._stamp(method, url, signed)
        return signed

    def sign(self, request: httpx.Request) -> None:
        """Set `x-bce-date` and `Authorization` on `request` for the current time."""
        self._stamp(request.method, request.url, request.headers)

    def _stamp(self, method: str, url: httpx.URL, headers: MutableMapping[str, str]) -> None:
        """Add `x-bce-date` and `authorization` to `headers` (whose names are lower case)."""
        now = self._clock()
        headers["x-bce-date"] = _signing.format_timestamp(now)
        names = set(SIGNED_HEADERS)
        names.update(name for name in headers if name.startswith("x-bce-"))
        names.discard("x-bce-request-id")
        headers["authorization"] = _signing.sign(
            access_key=self._credentials.access_key,
            secret_key=self._credentials.secret_key,
            method=method,
            path=url.path,
            query=url.params.multi_items(),
            headers=headers.items(),
            timestamp=now,
            expiration=self._credentials.expiration,
            headers_to_sign=names,
        )

    async def recover(self, error: APIError, token: str | None) -> bool:
        return False

    def hint(self) -> str:
        return (
            "check the IAM Access Key / Secret Key pair, and this machine's clock: "
            f"a signature is valid for {self._credentials.expiration} s from its x-bce-date"
        )

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        self.sign(request)
        yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        self.sign(request)
        yield request

    def __repr__(self) -> str:
        return f"BceSigningAuth({self._credentials!r})"
