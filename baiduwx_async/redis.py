"""
A token store and a rate limiter shared by many processes through Redis (extra `redis`).

```python
import baiduwx_async as wx
from baiduwx_async.redis import RedisRateLimiter, RedisTokenStore

async with (
    RedisTokenStore("redis://redis.internal:6379/0") as store,
    RedisRateLimiter("redis://redis.internal:6379/0", qps=20) as limiter,
    wx.AsyncClient(token_store=store, rate_limiter=limiter) as client,
):
    ...
```

Every process (on any machine) using the same Redis, `prefix` and limiter `name` then
makes one token request between them, and starts at most `qps` requests a second between
them. Built on redis-py's asyncio client, so this module runs on **asyncio only** (under
trio its methods raise `RuntimeError`).

- **`RedisTokenStore`** implements `SharedTokenStore`. A token is kept as JSON under
  `{prefix}token:{key}` (the key is the hash the client passes, never a secret) with a
  Redis expiry equal to the token's remaining lifetime. `fetch_lock(key)` is a Redis lock
  (`SET NX PX` with a random value, released by a compare-and-delete script) that expires
  after `lock_timeout` seconds should its holder die; waiters poll it with short sleeps and
  raise `RedisLockTimeoutError` after `lock_timeout` (+1) seconds. So processes starting
  cold together make one token request, and after a 110/111 one refresh serves them all.
  The Redis database holds live access tokens: protect it (a password, `rediss://`).
- **`RedisRateLimiter`** implements `RateLimiter` with the rules of `AdaptiveRateLimiter`
  (see `_limits`), on one schedule for all processes, each step one atomic Lua script on
  Redis' own clock (`TIME`), so the processes' clocks do not matter:
  GCRA spacing at `1/(rate * 0.98)`, burst 1 (no 1-s window holds more than `qps` starts,
  no 60-s window more than `rpm`); a throttled answer halves the shared rate at most once
  a second across all processes (waiters already queued are re-spaced when they wake);
  successes raise it by 5 % of the ceiling a second up to the ceiling; an
  `X-Ratelimit-Limit-Requests` header lowers the shared ceiling (never raises it).
  It needs `qps` or `rpm`. All processes sharing a `name` should configure the same limits.
  Processes wake late (a busy CPU, a stalled loop), and a late start followed by punctual
  ones would put more than `qps` starts in a second; so a waiter is let go by a second
  script when it wakes, no sooner than one interval after the latest start (more than
  `LATE_TOLERANCE`, 10 ms, late moves the schedule for those behind it). A process's first
  request also leaves late (a new connection, code run for the first time): `cold_start`
  seconds (0.05) are kept free after it. One wait costs two round trips to Redis, a start
  that need not wait one.

**Redis unreachable.** Every Redis call is bounded by `timeout` (default 1 s, socket
connect and read, at most one immediate reconnect). Then:

- *at first use* (Redis never reached by this object): the call raises
  `RedisUnavailableError` (a `WenxinError`) naming the URL with any password masked.
  `await obj.ping()` checks up front.
- *during a run* (Redis reached before): nothing fails; the call that finds Redis gone
  costs at most its bounded wait, and later calls do not wait for Redis at all. The
  limiter paces requests with an in-process `AdaptiveRateLimiter` of the same limits
  (each process then allows the full `qps` on its own: the adaptive slow-down brings the
  total back under the service's limit), and the token store keeps tokens in the client's
  memory (`load` finds nothing, `save` and the lock are skipped: each process may fetch
  its own token). A warning is logged once per outage on the `baiduwx_async.redis`
  logger; Redis is tried again at most every `retry_interval` seconds (default 5), and an
  info record says when it is back.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "baiduwx_async.redis needs the redis package (redis-py >= 5): "
        "pip install 'baiduwx_async[redis]'"
    ) from _exc

import anyio
import anyio.lowlevel

from ._errors import ValidationError, WenxinError
from ._limits import (
    CUT_FACTOR,
    CUT_HOLDOFF,
    MAX_STEP,
    MIN_RATE,
    RECOVERY,
    SAFETY,
    AdaptiveRateLimiter,
    _check_limit,
)
from ._models import RateLimitInfo
from ._tokens import AccessToken

__all__ = [
    "RedisLockTimeoutError",
    "RedisRateLimiter",
    "RedisTokenStore",
    "RedisUnavailableError",
    "redact_url",
]

logger = logging.getLogger("baiduwx_async.redis")

T = TypeVar("T")

DEFAULT_PREFIX = "baiduwx:"
DEFAULT_TIMEOUT = 1.0  #: seconds: socket connect and read timeout of every Redis call
DEFAULT_RETRY_INTERVAL = 5.0  #: seconds between attempts to reach Redis again after a failure
#: seconds kept free after a process's first request, which leaves later than its slot (a
#: new connection, code run for the first time, a CPU busy starting the other workers)
DEFAULT_COLD_START = 0.05
#: a start let go up to this late keeps the schedule's grid; a later one moves it. Half of
#: the ~20 ms slack SAFETY leaves in a 1-s window: 21 starts never fit in one second
LATE_TOLERANCE = 0.01
STATE_TTL_MS = 3_600_000  #: a limiter's shared state is forgotten after an hour unused
LOCK_POLL_FIRST = 0.005  #: seconds: first pause of a fetch-lock waiter, doubling ...
LOCK_POLL_MAX = 0.05  #: ... up to this

_PASSWORD_QUERY = frozenset({"password", "pass", "pwd"})
_SCHEMES = frozenset({"redis", "rediss", "unix"})


def redact_url(url: str) -> str:
    """`url` with the password of its user info (and of a `password=` query) masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable Redis URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        if ":" not in userinfo:  # redis://secret@host: redis-py reads a lone name as password
            user = ""
        netloc = f"{user}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _PASSWORD_QUERY else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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


class _LoopClient:
    __slots__ = ("client", "scripts")

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.scripts: dict[str, Any] = {}


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
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found.append(userinfo.split(":", 1)[1] if ":" in userinfo else userinfo)
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


# --- the token store

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


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
                        release = self._backend.script(_RELEASE_LOCK)
                        await self._backend.run(lambda r: release(keys=[name], args=[value]))
                    except (_Down, RedisUnavailableError):
                        pass  # the lock's expiry frees it


# --- the rate limiter
#
# The shared state is one hash per limiter: next (the GCRA "next allowed time"), last (when
# the latest start was let go), rate (after a cut; absent: the ceiling), hdr (the ceiling a
# header set), last_cut, last_adjust, epoch (number of cuts), cut_at and cut_factor (the
# last cut, to re-space waiters reserved before it). Times are Redis' clock in seconds,
# kept as "%.6f" strings (Lua's own number formatting keeps only 14 digits).
# Each script answers one string of space-separated fields, shown below as {a, b, ...}:
# redis-py parses one string much faster than an array of them.
#
# A slot is reserved at once, but a waiter is let go only by a second script when it wakes:
# no sooner than its slot, and no sooner than one interval after the latest start booked
# (`last`). A process that wakes late (a busy CPU, a stalled event loop) then delays those
# behind it instead of ending up closer than one interval to them (the server's sliding
# window counts starts, not reservations); those it delays are booked at exact intervals,
# so the delay does not grow along the queue.

_LUA_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.6f', x) end
local function num(x) return string.format('%.17g', x) end
local function reply(...) return table.concat({...}, ' ') end
local function limits(configured, rate_field, hdr_field)
    local ceiling = tonumber(configured)
    local hdr = tonumber(hdr_field)
    if hdr and hdr < ceiling then ceiling = hdr end
    local rate = tonumber(rate_field) or ceiling
    if rate > ceiling then rate = ceiling end
    return rate, ceiling
end
"""

# KEYS[1] state; ARGV: configured rate, safety, state ttl (ms), seconds booked on top if let go
# -> {wait, slot, end of slot, epoch, rate, ceiling}; wait "0": go now (already let go)
_ACQUIRE = (
    _LUA_COMMON
    + """
local s = redis.call('HMGET', KEYS[1], 'next', 'rate', 'hdr', 'epoch', 'last')
local rate, ceiling = limits(ARGV[1], s[2], s[3])
local interval = 1 / (rate * tonumber(ARGV[2]))
local slot = tonumber(s[1]) or now
local last = tonumber(s[5])
if last and last + interval > slot then slot = last + interval end
if slot < now then slot = now end
local finish = fmt(slot + interval)
if slot <= now then
    redis.call('HSET', KEYS[1], 'next', finish, 'last', fmt(now + tonumber(ARGV[4])))
else
    redis.call('HSET', KEYS[1], 'next', finish)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return reply(fmt(slot - now), fmt(slot), finish, s[4] or '0', num(rate), num(ceiling))
"""
)

# KEYS[1] state; ARGV: slot, epoch it was reserved in, configured rate, safety, seconds on
# top, lateness tolerated
# -> {wait, slot, epoch, go}: go "1": let go after `wait` (its start is booked now);
# go "0": the slot was stretched by a cut, come back after `wait`
_CONFIRM = (
    _LUA_COMMON
    + """
local s = redis.call('HMGET', KEYS[1], 'epoch', 'cut_at', 'cut_factor', 'last', 'rate', 'hdr')
local epoch = s[1] or '0'
local slot = tonumber(ARGV[1])
if epoch ~= ARGV[2] then  -- cut since the reservation: the queue behind the cut stretches
    local cut_at = tonumber(s[2]) or now
    local factor = tonumber(s[3]) or 1
    if slot > cut_at then slot = cut_at + (slot - cut_at) * factor end
end
if slot > now then return reply(fmt(slot - now), fmt(slot), epoch, '0') end
local rate = limits(ARGV[3], s[5], s[6])
local interval = 1 / (rate * tonumber(ARGV[4]))
local last = tonumber(s[4])
if last and last + interval > slot then slot = last + interval end
if slot > now then  -- one interval after the latest start: booked, go then
    redis.call('HSET', KEYS[1], 'last', fmt(slot + tonumber(ARGV[5])))
    return reply(fmt(slot - now), fmt(slot), epoch, '1')
end
-- late: a little (the wake-up, this call) keeps the grid; more moves it, so those
-- behind keep their distance from this start
local booked = math.max(slot, now - tonumber(ARGV[6]))
redis.call('HSET', KEYS[1], 'last', fmt(booked + tonumber(ARGV[5])))
return reply('0', fmt(slot), epoch, '1')
"""
)

# KEYS[1] state; ARGV: end of the slot, slot -> '1' if handed back
_GIVE_BACK = """
if redis.call('HGET', KEYS[1], 'next') == ARGV[1] then
    redis.call('HSET', KEYS[1], 'next', ARGV[2])
    return '1'
end
return '0'
"""

# KEYS[1] state; ARGV: configured rate, holdoff, factor, min rate, state ttl (ms)
# -> {cut (0/1), rate, ceiling}
_CUT = (
    _LUA_COMMON
    + """
local s = redis.call('HMGET', KEYS[1], 'rate', 'hdr', 'last_cut', 'epoch', 'next')
local rate, ceiling = limits(ARGV[1], s[1], s[2])
local last = tonumber(s[3])
if last and now - last < tonumber(ARGV[2]) then return reply('0', num(rate), num(ceiling)) end
local new = math.max(rate * tonumber(ARGV[3]), math.min(tonumber(ARGV[4]), ceiling / 8))
if new >= rate then
    redis.call('HSET', KEYS[1], 'last_cut', fmt(now), 'last_adjust', fmt(now))
    return reply('0', num(rate), num(ceiling))
end
local factor = rate / new
local nxt = tonumber(s[5]) or now
if nxt > now then nxt = now + (nxt - now) * factor end
redis.call('HSET', KEYS[1], 'rate', num(new), 'last_cut', fmt(now), 'last_adjust', fmt(now),
    'epoch', tostring((tonumber(s[4]) or 0) + 1), 'cut_at', fmt(now), 'cut_factor', num(factor),
    'next', fmt(nxt))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return reply('1', num(new), num(ceiling))
"""
)

# KEYS[1] state; ARGV: configured rate, recovery, max step, state ttl (ms) -> {rate, ceiling}
_RECOVER = (
    _LUA_COMMON
    + """
local s = redis.call('HMGET', KEYS[1], 'rate', 'hdr', 'last_adjust')
local rate, ceiling = limits(ARGV[1], s[1], s[2])
if not tonumber(s[1]) or rate >= ceiling then return reply(num(ceiling), num(ceiling)) end
local dt = math.min(now - (tonumber(s[3]) or now), tonumber(ARGV[3]))
if dt <= 0 then return reply(num(rate), num(ceiling)) end
rate = math.min(rate + tonumber(ARGV[2]) * ceiling * dt, ceiling)
redis.call('HSET', KEYS[1], 'rate', num(rate), 'last_adjust', fmt(now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return reply(num(rate), num(ceiling))
"""
)

# KEYS[1] state; ARGV: configured rate, header rate, state ttl (ms) -> {rate, ceiling}
_HEADER = (
    _LUA_COMMON
    + """
local hdr = tonumber(redis.call('HGET', KEYS[1], 'hdr'))
local limit = tonumber(ARGV[2])
if not hdr or limit < hdr then redis.call('HSET', KEYS[1], 'hdr', ARGV[2]) end
local s = redis.call('HMGET', KEYS[1], 'rate', 'hdr')
local rate, ceiling = limits(ARGV[1], s[1], s[2])
if tonumber(s[1]) and tonumber(s[1]) > ceiling then
    redis.call('HSET', KEYS[1], 'rate', num(ceiling))
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return reply(num(rate), num(ceiling))
"""
)


class RedisRateLimiter(_RedisObject):
    """One request schedule for every process using this Redis, `prefix` and `name`.

    Implements `RateLimiter` (see the module docstring for the rules and for what
    happens when Redis is unreachable). `qps` and/or `rpm` are required: with both the
    lower rate rules. `adaptive=False` keeps only the configured (and header-lowered)
    ceiling.
    """

    def __init__(
        self,
        url: str,
        *,
        qps: float | None = None,
        rpm: float | None = None,
        prefix: str = DEFAULT_PREFIX,
        name: str = "default",
        adaptive: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        cold_start: float = DEFAULT_COLD_START,
    ) -> None:
        _check_limit("qps", qps)
        if not 0 <= cold_start < math.inf:
            raise ValidationError("cold_start", "must be a number of seconds >= 0", cold_start)
        _check_limit("rpm", rpm)
        if qps is None and rpm is None:
            raise ValidationError("qps", "a shared limiter needs qps or rpm")
        self._qps = qps
        self._rpm = rpm
        self._adaptive = adaptive
        self._configured = min(x for x in (qps, None if rpm is None else rpm / 60.0) if x)
        self._backend = _Backend(
            url,
            timeout=timeout,
            retry_interval=retry_interval,
            what="rate limiter",
            fallback=f"requests are paced in this process only (qps={qps}, rpm={rpm})",
        )
        self._fallback = AdaptiveRateLimiter(qps=qps, rpm=rpm, adaptive=adaptive)
        self.prefix = prefix
        self.name = name
        self._key = f"{prefix}limiter:{name}"
        self.cold_start = cold_start
        # the shared rate and ceiling as last seen, to skip Redis when there is nothing to do
        self._rate = self._ceiling = self._configured
        self._cold = True  # no request let go yet: the first books `cold_start` on top

    @property
    def qps(self) -> float | None:
        return self._qps

    @property
    def rpm(self) -> float | None:
        return self._rpm

    @property
    def rate(self) -> float:
        """The shared rate (req/s, before the safety margin) as this process last saw it."""
        return self._rate

    @property
    def ceiling(self) -> float:
        """min(qps, rpm/60, header/60) as this process last saw it."""
        return self._ceiling

    @property
    def fallback(self) -> AdaptiveRateLimiter:
        """The in-process limiter used while Redis is unreachable."""
        return self._fallback

    @property
    def using_fallback(self) -> bool:
        return self._backend.down

    def __repr__(self) -> str:
        return (
            f"RedisRateLimiter({self.url!r}, qps={self._qps!r}, rpm={self._rpm!r}, "
            f"name={self.name!r}, rate={self._rate:.4g}/s)"
        )

    async def _eval(self, source: str, *args: object) -> list[str]:
        script = self._backend.script(source)
        key = self._key
        result = await self._backend.run(lambda r: script(keys=[key], args=list(args)))
        return str(result).split(" ")  # one string: cheaper to parse than an array

    def _extra(self) -> float:
        return self.cold_start if self._cold else 0.0

    def _seen(self, rate: str, ceiling: str) -> None:
        self._rate, self._ceiling = float(rate), float(ceiling)

    async def acquire(self) -> None:
        """Wait for this process's slot in the shared schedule."""
        try:
            wait_s, slot, end, epoch, rate, ceiling = await self._eval(
                _ACQUIRE, self._configured, SAFETY, STATE_TTL_MS, self._extra()
            )
        except _Down:
            await self._fallback.acquire()
            return
        self._seen(rate, ceiling)
        wait = float(wait_s)
        if wait <= 0:
            self._cold = False
            return
        try:
            while True:
                await anyio.sleep(wait)
                try:  # let go: not before the slot (stretched by a cut meanwhile), nor
                    # sooner than one interval after the latest start let go
                    wait_s, slot, epoch, go = await self._eval(
                        _CONFIRM,
                        slot,
                        epoch,
                        self._configured,
                        SAFETY,
                        self._extra(),
                        LATE_TOLERANCE,
                    )
                except _Down:
                    return
                wait = float(wait_s)
                if go == "1":
                    self._cold = False
                    if wait > 0:  # booked one interval after the previous start
                        await anyio.sleep(wait)
                    return
        except BaseException:
            # cancelled: hand the slot back if nobody reserved after it
            with anyio.CancelScope(shield=True), suppress(_Down, RedisUnavailableError):
                await self._eval(_GIVE_BACK, end, slot)
            raise

    async def feedback(self, *, throttled: bool, ratelimit: RateLimitInfo | None) -> None:
        """Learn from one answer; Redis is asked only when the shared state may change."""
        await self._fallback.feedback(throttled=throttled, ratelimit=ratelimit)
        try:
            limit = None if ratelimit is None else ratelimit.limit_requests
            if limit is not None and 0 < limit / 60.0 < self._ceiling:
                self._seen(*await self._eval(_HEADER, self._configured, limit / 60.0, STATE_TTL_MS))
            if not self._adaptive:
                return
            if throttled:
                _, rate, ceiling = await self._eval(
                    _CUT, self._configured, CUT_HOLDOFF, CUT_FACTOR, MIN_RATE, STATE_TTL_MS
                )
                self._seen(rate, ceiling)
            elif self._rate < self._ceiling:
                self._seen(
                    *await self._eval(_RECOVER, self._configured, RECOVERY, MAX_STEP, STATE_TTL_MS)
                )
        except _Down:
            return

    async def state(self) -> dict[str, float]:
        """The shared state now: `rate` and `ceiling` (req/s), `epoch` (cuts so far), and
        `next` (seconds from now until the next free slot, 0 if free). For tests and
        monitoring; raises `RedisUnavailableError` if Redis does not answer."""
        key = self._key

        async def read(r: aioredis.Redis) -> tuple[list[Any], Any]:
            fields = await r.hmget(key, ["next", "rate", "hdr", "epoch"])
            return list(fields), await r.time()

        fields, now_pair = await self._backend.run(read, probe=True)
        now = int(now_pair[0]) + int(now_pair[1]) / 1e6
        nxt, rate, hdr, epoch = (None if x is None else float(x) for x in fields)
        ceiling = float(self._configured if hdr is None else min(hdr, self._configured))
        return {
            "rate": ceiling if rate is None else min(rate, ceiling),
            "ceiling": ceiling,
            "epoch": epoch or 0.0,
            "next": 0.0 if nxt is None else max(0.0, nxt - now),
        }
