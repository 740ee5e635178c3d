"""
Access tokens: what one is, where it is kept between calls and processes, and the
`TokenManager` that hands the current one to every call.

The manager never talks HTTP itself: the client gives it a `fetch` coroutine, so
the single-flight and compare-and-refresh logic here is testable with a fake.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

import anyio
import attrs

__all__ = [
    "AccessToken",
    "FileTokenStore",
    "MemoryTokenStore",
    "SharedTokenStore",
    "TokenManager",
    "TokenStore",
]

logger = logging.getLogger("baiduwx_async")

#: Fraction of `expires_in` after which a token is replaced before the server rejects it.
REFRESH_AT = 0.9


@attrs.frozen(repr=False)
class AccessToken:
    """An OAuth access token and the wall-clock window it is good for."""

    value: str
    obtained_at: float
    expires_in: float

    def is_fresh(self, now: float) -> bool:
        """Still good to send at wall-clock `now`: less than 90 % of its lifetime gone."""
        return now < self.obtained_at + self.expires_in * REFRESH_AT

    def to_json(self) -> str:
        """The form a store keeps it in (`from_json` reads it back)."""
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> AccessToken:
        data = json.loads(text)
        return cls(str(data["value"]), float(data["obtained_at"]), float(data["expires_in"]))

    def __repr__(self) -> str:
        return (
            f"AccessToken(value='***', obtained_at={self.obtained_at}, "
            f"expires_in={self.expires_in})"
        )


class TokenStore(Protocol):
    """Where tokens live between calls, clients and (with a shared store) processes.

    `key` is a hash of the credentials and token URL, never a secret itself. A store
    shared by many processes may also offer `fetch_lock(key)`, an async context manager
    held around "load, and fetch if still needed": then one process fetches and the
    others find its token when they get the lock (see `SharedTokenStore`).
    """

    async def load(self, key: str) -> AccessToken | None:
        """The token kept for `key`, or `None`."""
        ...

    async def save(self, key: str, token: AccessToken) -> None:
        """Keep `token` for `key`, replacing any other."""
        ...


@runtime_checkable
class SharedTokenStore(TokenStore, Protocol):
    """A token store with a lock across processes around fetching."""

    def fetch_lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Held, across processes, while one of them loads and (if need be) fetches."""
        ...


class MemoryTokenStore:
    """Tokens kept in this object only (the default: one per client)."""

    def __init__(self) -> None:
        self._tokens: dict[str, AccessToken] = {}

    async def load(self, key: str) -> AccessToken | None:
        """The token kept for `key`, or `None`."""
        return self._tokens.get(key)

    async def save(self, key: str, token: AccessToken) -> None:
        """Keep `token` for `key`."""
        self._tokens[key] = token

    def __repr__(self) -> str:
        return f"MemoryTokenStore({len(self._tokens)} tokens)"


class FileTokenStore:
    """One JSON file per credentials hash in `directory`, readable by its owner only.

    Files are written atomically (a temporary file renamed over the old one), so a
    reader never sees half a token. A file other users can read or write is not
    trusted: it is ignored with a warning and replaced on the next save. The I/O is
    synchronous on purpose: a few hundred bytes, once per token lifetime, costs less
    than a worker thread would.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()  # the README writes "~/.cache/..."

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    async def load(self, key: str) -> AccessToken | None:
        """The token in `key`'s file; `None` if absent, unreadable or readable by others."""
        return _read_private_token(self._path(key))

    async def save(self, key: str, token: AccessToken) -> None:
        """Write `key`'s file atomically, mode 0600."""
        _write_private_token(self._path(key), token)

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.directory)!r})"


def _read_private_token(path: Path) -> AccessToken | None:
    try:
        with open(path, encoding="utf-8") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                logger.warning(
                    "ignoring token file %s: other users may read it (mode %o)",
                    path,
                    stat.S_IMODE(mode),
                )
                return None
            return AccessToken.from_json(file.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable token file %s: %s", path, type(exc).__name__)
        return None


def _write_private_token(path: Path, token: AccessToken) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp creates the file with mode 0600 before any byte of the token is written.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".token-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(token.to_json())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@attrs.define(eq=False)
class _Flight:
    """One token fetch that every caller arriving meanwhile waits on."""

    done: anyio.Event = attrs.field(factory=lambda: anyio.Event())
    token: AccessToken | None = None
    error: Exception | None = None


class TokenManager:
    """Hands out the current access token; fetches a new one single-flight.

    - The first caller fetches; every caller arriving meanwhile waits for that same
      fetch and gets its token, or its error (so a wrong key pair costs one request).
    - A token is replaced once 90 % of its `expires_in` has passed.
    - `refresh_if_stale(rejected)` replaces the token only if the server rejected the
      one still current: after 110/111 from many calls at once, one refresh serves all.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[AccessToken]],
        *,
        key: str,
        store: TokenStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._key = key
        self._store: TokenStore = store if store is not None else MemoryTokenStore()
        self._clock = clock
        self._current: AccessToken | None = None
        self._flight: _Flight | None = None

    @property
    def store(self) -> TokenStore:
        """Where this manager keeps its tokens."""
        return self._store

    async def get_token(self) -> str:
        """The current token, fetched first if there is none or it is about to expire."""
        current = self._current
        if current is not None and current.is_fresh(self._clock()):
            return current.value
        return await self._replace(rejected=None)

    async def refresh_if_stale(self, rejected: str) -> str:
        """A token other than `rejected`: the current one if it differs, else a new one."""
        current = self._current
        if current is not None and current.value != rejected and current.is_fresh(self._clock()):
            return current.value
        return await self._replace(rejected=rejected)

    async def _replace(self, rejected: str | None) -> str:
        while True:
            flight = self._flight
            if flight is None:
                return await self._lead(rejected)
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.token is not None and flight.token.value != rejected:
                return flight.token.value
            # The leader was cancelled, or fetched the very token we saw rejected: go again.

    async def _lead(self, rejected: str | None) -> str:
        flight = self._flight = _Flight()
        try:
            token = await self._obtain(rejected)
        except Exception as exc:
            flight.error = exc
            raise
        else:
            flight.token = self._current = token
            return token.value
        finally:
            self._flight = None
            flight.done.set()

    async def _obtain(self, rejected: str | None) -> AccessToken:
        if isinstance(self._store, SharedTokenStore):
            async with self._store.fetch_lock(self._key):
                return await self._load_or_fetch(rejected)
        return await self._load_or_fetch(rejected)

    async def _load_or_fetch(self, rejected: str | None) -> AccessToken:
        # Another client or process sharing the store may hold a newer token already.
        stored = await self._store.load(self._key)
        if stored is not None and stored.value != rejected and stored.is_fresh(self._clock()):
            return stored
        token = await self._fetch()
        await self._store.save(self._key, token)
        logger.debug("access token obtained, expires in %.0f s", token.expires_in)
        return token

    def __repr__(self) -> str:
        state = "no token" if self._current is None else "token cached"
        return f"TokenManager({state}, store={self._store!r})"
