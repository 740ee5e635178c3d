"""`RedisRateLimiter`: the rules of `AdaptiveRateLimiter` on one schedule kept in Redis.

Each step is one Lua script (see `_scripts`) run atomically on Redis' own clock; the rule
constants (`SAFETY`, `CUT_FACTOR`, ...) and the validation of `qps`/`rpm`/`tpm` are those of
`_limits` and `_token_budget`, and the in-process `AdaptiveRateLimiter` takes over while
Redis is unreachable.

Without `qps`/`rpm` nothing waits until a throttled answer, and a start costs no round trip:
each process reports its starts at most every `SYNC_INTERVAL` and learns then whether the
processes are being slowed down. The first throttled answer, in any process, limits all of
them to half the rate they sent together in the last second; they climb back to that rate,
and a quiet minute there lifts the limit (the rules of `AdaptiveRateLimiter`, shared).

With `tpm`, a request first books its tokens in the shared window (one round trip when they
fit now; else it sleeps until they should and asks again), then its start slot as above;
`settle` is one more round trip.
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
    RELEASE_AFTER,
    SAFETY,
    AdaptiveRateLimiter,
)
from .._models import RateLimitInfo
from .._token_budget import CUT_FACTOR as TOKEN_CUT_FACTOR
from .._token_budget import CUT_HOLDOFF as TOKEN_CUT_HOLDOFF
from .._token_budget import MAX_STEP as TOKEN_MAX_STEP
from .._token_budget import MIN_SCALE, PACE_GRACE, RATIO_WEIGHT, TokenCharge
from .._token_budget import RECOVERY as TOKEN_RECOVERY
from .._token_budget import SAFETY as TOKEN_SAFETY
from ._connection import (
    DEFAULT_PREFIX,
    DEFAULT_RETRY_INTERVAL,
    DEFAULT_TIMEOUT,
    RedisUnavailableError,
    _Backend,
    _Down,
    _RedisObject,
)
from ._scripts import (
    ACQUIRE,
    CONFIRM,
    CUT,
    GIVE_BACK,
    HEADER,
    OPEN,
    RECOVER,
    RELEASE,
    SYNC,
    TOKENS_HEADER,
    TOKENS_SETTLE,
    TOKENS_TAKE,
)

__all__ = ["DEFAULT_COLD_START", "LATE_TOLERANCE", "RedisRateLimiter"]

#: seconds kept free after a process's first request, which leaves later than its slot (a
#: new connection, code run for the first time, a CPU busy starting the other workers)
DEFAULT_COLD_START = 0.05
#: a start let go up to this late keeps the schedule's grid; a later one moves it. Half of
#: the ~20 ms slack SAFETY leaves in a 1-s window: 21 starts never fit in one second
LATE_TOLERANCE = 0.01
STATE_TTL_MS = 3_600_000  #: a limiter's shared state is forgotten after an hour unused
#: seconds between two reports of a process's starts while no limit is in force
SYNC_INTERVAL = 0.1


class RedisRateLimiter(_RedisObject):
    """One request schedule for every process using this Redis, `prefix` and `name`.

    Implements `RateLimiter`, and `TokenRateLimiter` with `tpm` (see the module docstring
    for the rules and for what happens when Redis is unreachable). With both `qps` and
    `rpm` the lower rate rules; with neither, the processes share only the adaptive
    slow-down. `adaptive=False` keeps only the configured (and header-lowered) ceilings.
    """

    def __init__(
        self,
        url: str,
        *,
        qps: float | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        prefix: str = DEFAULT_PREFIX,
        name: str = "default",
        adaptive: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        cold_start: float = DEFAULT_COLD_START,
        token_window: float = 60.0,
    ) -> None:
        # the in-process limiter checks qps, rpm and tpm, and its ceiling is min(qps, rpm/60)
        self._fallback = AdaptiveRateLimiter(
            qps=qps, rpm=rpm, tpm=tpm, adaptive=adaptive, token_window=token_window
        )
        if not 0 <= cold_start < math.inf:
            raise ValidationError("cold_start", "must be a number of seconds >= 0", cold_start)
        configured = self._fallback.ceiling
        self._configured = configured  # None: no ceiling until a throttled answer
        self._peak: float | None = None  # without one: the shared ceiling a cut set
        self._starts = 0  # starts not yet reported (without a ceiling)
        self._next_sync = -math.inf
        self._tpm = tpm
        self._token_window = token_window
        self._backend = _Backend(
            url,
            timeout=timeout,
            retry_interval=retry_interval,
            what="rate limiter",
            fallback=f"requests are paced in this process only (qps={qps}, rpm={rpm}, tpm={tpm})",
        )
        self.prefix = prefix
        self.name = name
        self._key = f"{prefix}limiter:{name}"
        self._token_keys = [self._key, f"{self._key}:tokens"]
        self.cold_start = cold_start
        # the shared rate and ceiling as last seen, to skip Redis when there is nothing to do
        self._rate = self._ceiling = math.inf if configured is None else configured
        self._cold = True  # no request let go yet: the first books `cold_start` on top
        self._token_limit = math.inf if tpm is None else float(tpm)  # as last seen
        self._token_turn: anyio.Lock | None = None

    @property
    def qps(self) -> float | None:
        return self._fallback.qps

    @property
    def rpm(self) -> float | None:
        return self._fallback.rpm

    @property
    def tpm(self) -> float | None:
        """The configured tokens per minute (`None`: no token budget)."""
        return self._tpm

    @property
    def rate(self) -> float:
        """The shared rate (req/s, before the safety margin) as this process last saw it
        (`inf`: no limit in force)."""
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
        tpm = "" if self._tpm is None else f"tpm={self._tpm!r}, "
        return (
            f"RedisRateLimiter({self.url!r}, qps={self.qps!r}, rpm={self.rpm!r}, {tpm}"
            f"name={self.name!r}, rate={self._rate:.4g}/s)"
        )

    async def _eval(self, source: str, *args: object, keys: list[str] | None = None) -> list[str]:
        script = self._backend.script(source)
        keys = keys or [self._key]
        result = await self._backend.run(lambda r: script(keys=keys, args=list(args)))
        return str(result).split(" ")  # one string: cheaper to parse than an array

    async def _report(self, now: float) -> None:
        """Without a ceiling: report this process's starts, learn the shared limit."""
        starts, self._starts = self._starts, 0
        self._next_sync = now + SYNC_INTERVAL
        (peak,) = await self._eval(SYNC, starts, STATE_TTL_MS)
        self._open(float(peak) if peak else None)

    def _open(self, peak: float | None) -> None:
        if peak is None:
            self._peak, self._rate, self._ceiling = None, math.inf, math.inf
        elif self._peak != peak:
            self._peak = self._ceiling = peak
            self._rate = min(self._rate, peak)

    def _extra(self) -> float:
        return self.cold_start if self._cold else 0.0

    def _seen(self, rate: str, ceiling: str) -> None:
        self._rate, self._ceiling = float(rate), float(ceiling)

    async def acquire(self) -> None:
        """Wait for this process's slot in the shared schedule."""
        configured = self._configured
        try:
            if configured is None:
                if self._peak is None:
                    self._starts += 1
                    now = anyio.current_time()
                    if now < self._next_sync:
                        return
                    await self._report(now)
                    if self._peak is None:
                        return
                configured = self._peak
            wait_s, slot, end, epoch, rate, ceiling = await self._eval(
                ACQUIRE, configured, SAFETY, STATE_TTL_MS, self._extra()
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
                        configured,
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
            if ratelimit is not None:
                await self._header(ratelimit)
            if not self._fallback.adaptive:
                return
            configured = self._configured if self._configured is not None else self._peak
            if throttled:
                if configured is None:  # the first throttled answer without a ceiling
                    starts, self._starts = self._starts, 0
                    (peak,) = await self._eval(OPEN, starts, MIN_RATE, STATE_TTL_MS)
                    self._open(float(peak))
                    configured = float(peak)
                _, rate, ceiling = await self._eval(
                    CUT, configured, CUT_HOLDOFF, CUT_FACTOR, MIN_RATE, STATE_TTL_MS
                )
                self._seen(rate, ceiling)
            elif configured is not None and self._rate < self._ceiling:
                self._seen(*await self._eval(RECOVER, configured, RECOVERY, MAX_STEP, STATE_TTL_MS))
            elif self._configured is None and self._peak is not None:
                now = anyio.current_time()
                if now >= self._next_sync:  # back at the peak: lifted after a quiet minute?
                    self._next_sync = now + SYNC_INTERVAL
                    (released,) = await self._eval(RELEASE, RELEASE_AFTER)
                    if released == "1":
                        self._open(None)
        except _Down:
            return

    async def _header(self, ratelimit: RateLimitInfo) -> None:
        limit = ratelimit.limit_requests
        if self._configured is not None and limit is not None and 0 < limit / 60.0 < self._ceiling:
            self._seen(*await self._eval(HEADER, self._configured, limit / 60.0, STATE_TTL_MS))
        tokens = ratelimit.limit_tokens
        if self._tpm is not None and tokens is not None and 0 < tokens < self._token_limit:
            (lowest,) = await self._eval(TOKENS_HEADER, tokens, STATE_TTL_MS)
            self._token_limit = float(lowest)

    # --- the token budget

    def check_tokens(self, tokens: int, field: str = "tpm") -> None:
        """Raise `ValidationError` for a request that could never fit in the budget."""
        self._fallback.check_tokens(tokens, field)

    async def acquire_tokens(self, tokens: int) -> TokenCharge:
        """Book `tokens` in the shared window, wait for the booking, then for a start slot."""
        if self._tpm is None:
            raise RuntimeError("this limiter has no token budget (tpm=None)")
        # asked again at least this often while waiting: give-backs may shorten the wait
        longest = PACE_GRACE * self._token_window
        if self._token_turn is None:
            self._token_turn = anyio.Lock()
        async with self._token_turn:  # one waiter of this process asks Redis, in turn
            charge = await self._book_tokens(tokens, longest)
        try:
            await self.acquire()
        except BaseException:
            with anyio.CancelScope(shield=True), suppress(RedisUnavailableError):
                await self.settle(charge, 0)  # never sent: given back
            raise
        return charge

    async def _book_tokens(self, tokens: int, longest: float) -> TokenCharge:
        while True:
            try:
                wait_s, booking, at, paced, budget = await self._eval(
                    TOKENS_TAKE,
                    tokens,
                    self._tpm,
                    self._token_window,
                    TOKEN_SAFETY,
                    PACE_GRACE,
                    STATE_TTL_MS,
                    keys=self._token_keys,
                )
            except _Down:
                return await self._fallback.tokens.take(tokens)  # type: ignore[union-attr]
            if wait_s == "-1":  # a header lowered the budget below this request
                self._token_limit = float(budget)
                self._fallback.tokens.lower(int(float(budget)))  # type: ignore[union-attr]
                self.check_tokens(tokens)
            if booking != "0":
                return TokenCharge(tokens, float(at), float(paced), None, booking)
            await anyio.sleep(min(float(wait_s), longest))

    async def settle(self, charge: TokenCharge, used: int, *, throttled: bool = False) -> None:
        """Replace the charge by the tokens used (0: failed); `throttled` after a 336502."""
        if charge.settled:
            return
        if charge.booking is None:  # booked in process while Redis was away
            await self._fallback.settle(charge, used, throttled=throttled)
            return
        charge.settled = True
        try:
            await self._eval(
                TOKENS_SETTLE,
                charge.booking,
                charge.tokens,
                used,
                charge.paced,
                "1" if throttled and self._fallback.adaptive else "0",
                self._tpm,
                self._token_window,
                TOKEN_SAFETY,
                TOKEN_CUT_HOLDOFF,
                TOKEN_CUT_FACTOR,
                MIN_SCALE,
                TOKEN_RECOVERY,
                TOKEN_MAX_STEP,
                RATIO_WEIGHT,
                STATE_TTL_MS,
                keys=self._token_keys,
            )
        except _Down:
            return

    async def state(self) -> dict[str, float]:
        """The shared state now: `rate` and `ceiling` (req/s), `epoch` (cuts so far), and
        `next` (seconds from now until the next free slot, 0 if free); `inf` where no
        limit is in force (no qps/rpm and no throttled answer yet). For tests and
        monitoring; raises `RedisUnavailableError` if Redis does not answer."""
        key = self._key

        async def read(r: aioredis.Redis) -> tuple[list[Any], Any]:
            fields = await r.hmget(key, ["next", "rate", "hdr", "epoch", "peak"])
            return list(fields), await r.time()

        fields, now_pair = await self._backend.run(read, probe=True)
        now = int(now_pair[0]) + int(now_pair[1]) / 1e6
        nxt, rate, hdr, epoch, peak = (None if x is None else float(x) for x in fields)
        configured = self._configured if self._configured is not None else peak
        if configured is None:
            ceiling = math.inf
        else:
            ceiling = float(configured if hdr is None else min(hdr, configured))
        return {
            "rate": ceiling if rate is None else min(rate, ceiling),
            "ceiling": ceiling,
            "epoch": epoch or 0.0,
            "next": 0.0 if nxt is None else max(0.0, nxt - now),
        }
