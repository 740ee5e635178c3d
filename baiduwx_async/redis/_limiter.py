"""`RedisRateLimiter`: the rules of `AdaptiveRateLimiter` on one schedule kept in Redis.

Each step is one Lua script (see `_scripts`) run atomically on Redis' own clock; the rule
constants (`SAFETY`, `CUT_FACTOR`, ...) and the validation of `qps`/`rpm` are those of
`_limits`, and the in-process `AdaptiveRateLimiter` takes over while Redis is unreachable.
"""

from __future__ import annotations

import math
from contextlib import suppress
from typing import Any

import anyio
import redis.asyncio as aioredis

from .._errors import ValidationError
from .._limits import (
    CUT_FACTOR,
    CUT_HOLDOFF,
    MAX_STEP,
    MIN_RATE,
    RECOVERY,
    SAFETY,
    AdaptiveRateLimiter,
)
from .._models import RateLimitInfo
from ._connection import (
    DEFAULT_PREFIX,
    DEFAULT_RETRY_INTERVAL,
    DEFAULT_TIMEOUT,
    RedisUnavailableError,
    _Backend,
    _Down,
    _RedisObject,
)
from ._scripts import ACQUIRE, CONFIRM, CUT, GIVE_BACK, HEADER, RECOVER

__all__ = ["DEFAULT_COLD_START", "LATE_TOLERANCE", "RedisRateLimiter"]

#: seconds kept free after a process's first request, which leaves later than its slot (a
#: new connection, code run for the first time, a CPU busy starting the other workers)
DEFAULT_COLD_START = 0.05
#: a start let go up to this late keeps the schedule's grid; a later one moves it. Half of
#: the ~20 ms slack SAFETY leaves in a 1-s window: 21 starts never fit in one second
LATE_TOLERANCE = 0.01
STATE_TTL_MS = 3_600_000  #: a limiter's shared state is forgotten after an hour unused


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
        # the in-process limiter checks qps and rpm, and its ceiling is min(qps, rpm/60)
        self._fallback = AdaptiveRateLimiter(qps=qps, rpm=rpm, adaptive=adaptive)
        if not 0 <= cold_start < math.inf:
            raise ValidationError("cold_start", "must be a number of seconds >= 0", cold_start)
        configured = self._fallback.ceiling
        if configured is None:
            raise ValidationError("qps", "a shared limiter needs qps or rpm")
        self._configured = configured
        self._backend = _Backend(
            url,
            timeout=timeout,
            retry_interval=retry_interval,
            what="rate limiter",
            fallback=f"requests are paced in this process only (qps={qps}, rpm={rpm})",
        )
        self.prefix = prefix
        self.name = name
        self._key = f"{prefix}limiter:{name}"
        self.cold_start = cold_start
        # the shared rate and ceiling as last seen, to skip Redis when there is nothing to do
        self._rate = self._ceiling = configured
        self._cold = True  # no request let go yet: the first books `cold_start` on top

    @property
    def qps(self) -> float | None:
        return self._fallback.qps

    @property
    def rpm(self) -> float | None:
        return self._fallback.rpm

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
            f"RedisRateLimiter({self.url!r}, qps={self.qps!r}, rpm={self.rpm!r}, "
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
                ACQUIRE, self._configured, SAFETY, STATE_TTL_MS, self._extra()
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
                        CONFIRM,
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
                await self._eval(GIVE_BACK, end, slot)
            raise

    async def feedback(self, *, throttled: bool, ratelimit: RateLimitInfo | None) -> None:
        """Learn from one answer; Redis is asked only when the shared state may change."""
        await self._fallback.feedback(throttled=throttled, ratelimit=ratelimit)
        try:
            limit = None if ratelimit is None else ratelimit.limit_requests
            if limit is not None and 0 < limit / 60.0 < self._ceiling:
                self._seen(*await self._eval(HEADER, self._configured, limit / 60.0, STATE_TTL_MS))
            if not self._fallback.adaptive:
                return
            if throttled:
                _, rate, ceiling = await self._eval(
                    CUT, self._configured, CUT_HOLDOFF, CUT_FACTOR, MIN_RATE, STATE_TTL_MS
                )
                self._seen(rate, ceiling)
            elif self._rate < self._ceiling:
                self._seen(
                    *await self._eval(RECOVER, self._configured, RECOVERY, MAX_STEP, STATE_TTL_MS)
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
