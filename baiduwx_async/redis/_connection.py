"""What the token store and the limiter share: one bounded redis-py client per event loop,
the outage bookkeeping behind the fallback, the errors, and URL redaction."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import anyio.lowlevel
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .._errors import ValidationError, WenxinError
from .._limits import _check_limit

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_RETRY_INTERVAL",
    "DEFAULT_TIMEOUT",
    "RedisLockTimeoutError",
    "RedisUnavailableError",
    "logger",
    "redact_url",
]

logger = logging.getLogger("baiduwx_async.redis")

T = TypeVar("T")

DEFAULT_PREFIX = "baiduwx:"
DEFAULT_TIMEOUT = 1.0  #: seconds: socket connect and read timeout of every Redis call
DEFAULT_RETRY_INTERVAL = 5.0  #: seconds between attempts to reach Redis again after a failure

_PASSWORD_QUERY = frozenset({"password", "pass", "pwd"})
_SCHEMES = frozenset({"redis", "rediss", "unix"})


def _split_userinfo(userinfo: str) -> tuple[str, str]:
    """(user, password) of a URL's user info; redis-py reads a lone name as the password."""
    user, colon, password = userinfo.partition(":")
    return (user, password) if colon else ("", userinfo)


def redact_url(url: str) -> str:
    """`url` with the password of its user info (and of a `password=` query) masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable Redis URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{_split_userinfo(userinfo)[0]}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _PASSWORD_QUERY else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _passwords(url: str) -> list[str]:
    """The secrets a Redis URL may hold: the user info's password (or a lone user name,
    which redis-py takes for one) and a `password=` query value."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return []
    found = [v for k, v in query if k.lower() in _PASSWORD_QUERY]
    if "@" in parts.netloc:
        found.append(_split_userinfo(parts.netloc.rsplit("@", 1)[0])[1])
    return [p for p in found if p]


def _scrub(exc: BaseException, url: str) -> BaseException:
    """`exc`, or a plain copy of it without the URL's passwords should its text hold one."""
    text = str(exc)
    secrets_in = [p for p in _passwords(url) if p in text]
    if not secrets_in:
        return exc
    for secret in secrets_in:
        text = text.replace(secret, "***")
    return type(exc)(text) if _rebuildable(exc) else Exception(text)


def _rebuildable(exc: BaseException) -> bool:
    try:
        type(exc)("")
    except Exception:
        return False
    return True


class RedisUnavailableError(WenxinError):
    """Redis could not be reached (or refused us) the first time this object needed it."""

    retryable = False

    def __init__(self, url: str, cause: BaseException | None = None, *, what: str = "") -> None:
        self.url = url  # already redacted
        detail = "" if cause is None else f": {type(cause).__name__}: {cause}"
        purpose = f" for the {what}" if what else ""
        super().__init__(f"Redis at {url} is unavailable{purpose}{detail}")


class RedisLockTimeoutError(WenxinError, TimeoutError):
    """The token fetch lock stayed taken longer than `lock_timeout`."""

    retryable = False


def _require_asyncio() -> None:
    if not anyio.get_cancelled_exc_class().__module__.startswith("asyncio"):
        raise RuntimeError(
            "baiduwx_async.redis runs on asyncio only (redis-py's client has no trio support)"
        )


class _Down(Exception):
    """Redis failed during a run (it worked before): the caller takes its fallback."""


class _LoopClient:
    __slots__ = ("client", "scripts")

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.scripts: dict[str, Any] = {}


class _Backend:
    """One redis-py client per event loop, every call bounded, and the outage bookkeeping.

    First use: a failure raises `RedisUnavailableError`. Later: a failure raises `_Down`
    (the owner falls back), logs one warning per outage, and further calls skip Redis
    (raising `_Down` at once) until `retry_interval` has passed; then one call tries again.
    """

    def __init__(
        self, url: str, *, timeout: float, retry_interval: float, what: str, fallback: str
    ) -> None:
        if not isinstance(url, str) or url.partition("://")[0] not in _SCHEMES:
            raise ValidationError("url", "must be a redis://, rediss:// or unix:// URL")
        _check_limit("timeout", timeout)
        _check_limit("retry_interval", retry_interval)
        self.url = url
        self.redacted = redact_url(url)
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.what = what
        self.fallback = fallback
        self.connected = False  # reached at least once
        self.down = False  # in an outage (after having been reached)
        self._retry_at = -math.inf
        # Connections belong to the event loop that opened them: one client per loop.
        self._per_loop: anyio.lowlevel.RunVar[_LoopClient | None] = anyio.lowlevel.RunVar(
            f"baiduwx_async.redis-{id(self):x}"
        )

    def _loop_client(self) -> _LoopClient:
        _require_asyncio()
        found = self._per_loop.get(None)
        if found is None:
            client = aioredis.Redis.from_url(
                self.url,
                decode_responses=True,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 1),  # one immediate reconnect (a stale connection)
            )
            found = _LoopClient(client)
            self._per_loop.set(found)
        return found

    def client(self) -> aioredis.Redis:
        return self._loop_client().client

    def script(self, source: str) -> Any:
        """A registered Lua script (EVALSHA, loaded again by redis-py if Redis lost it)."""
        per_loop = self._loop_client()
        found = per_loop.scripts.get(source)
        if found is None:
            found = per_loop.scripts[source] = per_loop.client.register_script(source)
        return found

    async def run(self, op: Callable[[aioredis.Redis], Awaitable[T]], *, probe: bool = False) -> T:
        """`op(client)`, bounded; `probe` (an explicit check) raises even during a run."""
        client = self.client()
        now = time.monotonic()
        if self.down and not probe:
            if now < self._retry_at:
                raise _Down
            self._retry_at = now + self.retry_interval  # this call is the one retry
        try:
            with anyio.fail_after(self.timeout * 2 + 0.25):
                result = await op(client)
        except (RedisError, OSError, TimeoutError) as exc:
            error = self._failure(exc, probe)
            raise error from (None if isinstance(error, RedisUnavailableError) else exc)
        if not self.connected:
            self.connected = True
        elif self.down:
            self.down = False
            logger.info("Redis at %s is reachable again (%s)", self.redacted, self.what)
        return result

    def _failure(self, exc: BaseException, probe: bool) -> Exception:
        if not self.connected or probe:
            return RedisUnavailableError(self.redacted, _scrub(exc, self.url), what=self.what)
        self._retry_at = time.monotonic() + self.retry_interval
        if not self.down:
            self.down = True
            logger.warning(
                "Redis at %s is unreachable (%s); %s; trying again every %g s",
                self.redacted,
                type(exc).__name__,
                self.fallback,
                self.retry_interval,
            )
        return _Down()

    async def aclose(self) -> None:
        """Close this event loop's client (clients of loops that ended died with them)."""
        per_loop = self._per_loop.get(None)
        if per_loop is not None:
            self._per_loop.set(None)
            with anyio.CancelScope(shield=True), suppress(RedisError, OSError):
                await per_loop.client.aclose()


class _RedisObject:
    """Lifecycle shared by the store and the limiter."""

    _backend: _Backend

    @property
    def url(self) -> str:
        """The Redis URL, password masked."""
        return self._backend.redacted

    async def ping(self) -> None:
        """Check that Redis answers; raises `RedisUnavailableError` if it does not."""
        await self._backend.run(lambda r: r.ping(), probe=True)

    async def aclose(self) -> None:
        """Close the connections (the object may be used again: it reconnects)."""
        await self._backend.aclose()

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
