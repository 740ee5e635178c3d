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
  Without `qps`/`rpm` it shares only the adaptive slow-down: nothing waits and a start
  costs no round trip (starts are reported every 0.1 s) until a throttled answer, which
  limits every process to half the rate they sent together. With `tpm` it also keeps one
  token budget (a sliding 60-s window of bookings, settled by each answer's usage) in the
  same hash. All processes sharing a `name` should configure the same limits.
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

# Checked here, before the submodules (which import redis-py too), so the message is the
# same however much of the package an earlier import left in `sys.modules`.
try:
    import redis.asyncio as _redis_asyncio  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "baiduwx_async.redis needs the redis package (redis-py >= 5): "
        "pip install 'baiduwx_async[redis]'"
    ) from _exc

from ._connection import RedisLockTimeoutError, RedisUnavailableError, redact_url
from ._connection import _scrub as _scrub  # not public: for the tests
from ._limiter import RedisRateLimiter
from ._store import RedisTokenStore

__all__ = [
    "RedisLockTimeoutError",
    "RedisRateLimiter",
    "RedisTokenStore",
    "RedisUnavailableError",
    "redact_url",
]
