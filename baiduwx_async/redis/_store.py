"""`RedisTokenStore`: access tokens and their fetch lock shared through Redis."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio

from .._limits import _check_limit
from .._tokens import AccessToken
from ._connection import (
    DEFAULT_PREFIX,
    DEFAULT_RETRY_INTERVAL,
    DEFAULT_TIMEOUT,
    RedisLockTimeoutError,
    RedisUnavailableError,
    _Backend,
    _Down,
    _RedisObject,
    logger,
)
from ._scripts import RELEASE_LOCK

__all__ = ["RedisTokenStore"]

LOCK_POLL_FIRST = 0.005  #: seconds: first pause of a fetch-lock waiter, doubling ...
LOCK_POLL_MAX = 0.05  #: ... up to this


class RedisTokenStore(_RedisObject):
    """Access tokens shared by every process using this Redis and `prefix`.

    Implements `SharedTokenStore` (see the module docstring for keys, expiry, the fetch
    lock and what happens when Redis is unreachable).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        lock_timeout: float = 30.0,
        timeout: float = DEFAULT_TIMEOUT,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
    ) -> None:
        _check_limit("lock_timeout", lock_timeout)
        self._backend = _Backend(
            url,
            timeout=timeout,
            retry_interval=retry_interval,
            what="token store",
            fallback="access tokens are kept in this process only",
        )
        self.prefix = prefix
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"RedisTokenStore({self.url!r}, prefix={self.prefix!r})"

    def _token_key(self, key: str) -> str:
        return f"{self.prefix}token:{key}"

    def _lock_key(self, key: str) -> str:
        return f"{self.prefix}lock:{key}"

    async def load(self, key: str) -> AccessToken | None:
        name = self._token_key(key)
        try:
            text = await self._backend.run(lambda r: r.get(name))
        except _Down:
            return None
        if text is None:
            return None
        try:
            return AccessToken.from_json(str(text))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable token in Redis (%s)", type(exc).__name__)
            return None

    async def save(self, key: str, token: AccessToken) -> None:
        ttl_ms = int((token.obtained_at + token.expires_in - time.time()) * 1000)
        if ttl_ms <= 0:
            return  # already expired: nothing worth sharing
        name, text = self._token_key(key), token.to_json()
        try:
            await self._backend.run(lambda r: r.set(name, text, px=ttl_ms))
        except _Down:
            return

    def fetch_lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Held around "load, and fetch if still needed" by one process at a time."""
        return self._fetch_lock(key)

    @asynccontextmanager
    async def _fetch_lock(self, key: str) -> AsyncIterator[None]:
        name = self._lock_key(key)
        value = secrets.token_hex(16)
        ttl_ms = max(1, int(self.lock_timeout * 1000))
        deadline = anyio.current_time() + self.lock_timeout + 1.0
        pause = LOCK_POLL_FIRST
        held = False
        while True:
            try:
                held = bool(
                    await self._backend.run(lambda r: r.set(name, value, nx=True, px=ttl_ms))
                )
            except _Down:
                break  # no shared lock while Redis is away: this process fetches on its own
            if held:
                break
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise RedisLockTimeoutError(
                    f"the token fetch lock in Redis at {self.url} stayed taken for more than "
                    f"{self.lock_timeout:g} s (lock_timeout)"
                )
            await anyio.sleep(min(pause, remaining))
            pause = min(pause * 2, LOCK_POLL_MAX)
        try:
            yield
        finally:
            if held:
                with anyio.CancelScope(shield=True):
                    try:
                        release = self._backend.script(RELEASE_LOCK)
                        await self._backend.run(lambda r: release(keys=[name], args=[value]))
                    except (_Down, RedisUnavailableError):
                        pass  # the lock's expiry frees it
