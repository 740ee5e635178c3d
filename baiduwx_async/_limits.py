"""
Client-side rate limiting (docs/protocol.md §7): `qps` / `rpm` ceilings, and adaptive slowing
down after rate-limit answers.

The client awaits `acquire()` before every model request attempt and calls `feedback()`
after every answer. Decisions:

- **Spacing, not a bucket.** A GCRA ("next allowed time") scheduler with a burst of 1:
  each start reserves the slot `max(now, next)` and pushes `next` one interval on. The
  server counts requests in a sliding window, so requests spaced at exactly `1/qps` trip
  it under a few ms of jitter; we space them at `1/(rate * SAFETY)`, which leaves
  `1/SAFETY - 1` ≈ 20 ms of slack in every 1-s window whatever the rate. `rpm=R` is the
  rate `R/60` with the same burst of 1, so no 60-s window holds more than R starts
  (`floor(0.98 R) + 1 <= R`); with both set the lower rate rules, satisfying both.
- **Fair and safe under concurrency.** The slot is reserved synchronously (no await
  between reading and moving `next`), so concurrent acquirers get consecutive slots in
  call order, then sleep until theirs. A waiter cancelled while sleeping hands its slot
  back if nobody still waiting reserved after it (so cancelling a whole queue of waiters
  frees all their slots); a slot cancelled in the middle of the queue is simply wasted,
  which costs the others nothing and delays newcomers by one interval.
- **AIMD** (`adaptive=True`). A throttled answer (4, 18, 336501, 336502, HTTP 429) halves
  the rate, or sets it to what the service accepted over the last second if that is
  lower (its limit, seen from here), at most once per `CUT_HOLDOFF` second, so a burst
  of throttled answers that were in flight together counts as one cut; waiters already
  queued are re-spaced at the new rate. Successes raise it again by `RECOVERY` (5 %) of
  the ceiling per second, i.e. from half back to the ceiling in about 10 s, never above
  it. Never below `MIN_RATE` (0.5 req/s, or 1/8 of a lower ceiling).
- **Unlimited by default.** With neither `qps` nor `rpm` the limiter never waits until it
  sees a throttled answer. It remembers the last `RING` start times (one clock read per
  `acquire`), and on the first throttled answer starts limiting at half the rate it sent
  in the last second. It climbs back to that observed rate, and after `RELEASE_AFTER`
  (60 s) without a throttled answer it is unlimited again.
- **`X-Ratelimit-Limit-Requests`** lowers the ceiling to `header / 60` req/s only when the
  user switched a limit on, and only ever lowers it: the lowest value seen is kept (one
  limiter may serve models with different limits). It never switches limiting on.
- `adaptive=False` keeps only the configured (and header-lowered) ceiling.
- **`tpm`** adds a token budget (`_token_budget.TokenWindow`, which has its own rules): a
  request charged with tokens (`acquire_tokens`) waits for its place in the token schedule
  first, then for its start slot, so starts stay spaced whatever the token waits were.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import anyio

from ._errors import ValidationError
from ._models import RateLimitInfo
from ._token_budget import TokenCharge, TokenWindow

__all__ = ["AdaptiveRateLimiter", "NoLimit", "RateLimiter", "TokenRateLimiter"]

SAFETY = 0.98  #: requests are spaced at 1/(rate * SAFETY): ~20 ms slack per 1-s window
CUT_FACTOR = 0.5  #: multiplicative decrease on a throttled answer
CUT_HOLDOFF = 1.0  #: seconds after a cut during which throttled answers are not cut again
RECOVERY = 0.05  #: additive increase, as a fraction of the ceiling per second of successes
MAX_STEP = 2.0  #: at most this many seconds count for one success (no leap after idling)
MIN_RATE = 0.5  #: req/s floor of a cut
RELEASE_AFTER = 60.0  #: quiet seconds after which a limiter without ceiling is unlimited again
WINDOW = 1.0  #: seconds over which the sending rate is observed
RING = 256  #: start times remembered for that estimate
MIN_SPAN = 0.05  #: shortest span a rate is estimated over, so one burst does not read as infinite


@runtime_checkable
class RateLimiter(Protocol):
    """The seam: the client calls `acquire()` before every model request attempt and
    `feedback()` after every answer. A shared (Redis) limiter implements the same protocol."""

    async def acquire(self) -> None:
        """Wait until one more request may start."""
        ...

    async def feedback(self, *, throttled: bool, ratelimit: RateLimitInfo | None) -> None:
        """Learn from an answer: `throttled` after a rate-limit error; its headers."""
        ...


@runtime_checkable
class TokenRateLimiter(RateLimiter, Protocol):
    """A limiter with a tokens-per-minute budget too. The client estimates each request's
    tokens when `tpm` is not `None`, refuses one that `check_tokens` refuses, calls
    `acquire_tokens(estimate)` instead of `acquire()`, and `settle()` with the tokens the
    answer used (0 for a failed request) once it is known."""

    @property
    def tpm(self) -> float | None:
        """The configured tokens per minute (`None`: no token budget)."""
        ...

    def check_tokens(self, tokens: int, field: str) -> None:
        """Raise `ValidationError` for a request that could never fit in the budget."""
        ...

    async def acquire_tokens(self, tokens: int) -> TokenCharge:
        """Wait until this request and its `tokens` may start; book them."""
        ...

    async def settle(self, charge: TokenCharge, used: int, *, throttled: bool = False) -> None:
        """Replace the charge by what was used; `throttled` after a 336502 answer."""
        ...


class NoLimit:
    """A limiter that never waits and ignores feedback."""

    rate: float | None = None

    async def acquire(self) -> None:
        """Never waits."""
        return None

    async def feedback(self, *, throttled: bool, ratelimit: RateLimitInfo | None) -> None:
        """Ignores what it is told."""
        return None

    def __repr__(self) -> str:
        return "NoLimit()"


class _Ticket:
    """A reserved start slot of a waiting acquirer; re-spaced when the rate drops."""

    __slots__ = ("end", "slot")

    def __init__(self, slot: float, end: float) -> None:
        self.slot = slot
        self.end = end


def _check_limit(name: str, value: float | None) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf
    if value is not None and not ok:
        raise ValidationError(name, "must be a finite number > 0 (None: no limit)", value)


class AdaptiveRateLimiter:
    """Spaces request starts to at most `qps` per second and `rpm` per minute, and slows
    down adaptively after rate-limit answers (see the module docstring for the rules).

    `clock` (default `anyio.current_time`) and `sleep` (default `anyio.sleep`) are used
    only inside `acquire` and `feedback`, so the limiter may be built outside a loop.
    """

    def __init__(
        self,
        *,
        qps: float | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        adaptive: bool = True,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        token_window: float = 60.0,
    ) -> None:
        _check_limit("qps", qps)
        _check_limit("rpm", rpm)
        # `token_window`: seconds of the token budget's sliding window (tests shrink it)
        self._tokens = None if tpm is None else TokenWindow(tpm, window=token_window, clock=clock)
        self._qps = qps
        self._rpm = rpm
        self._adaptive = adaptive
        self._clock = clock if clock is not None else anyio.current_time
        self._sleep = sleep if sleep is not None else anyio.sleep
        limits = [x for x in (qps, None if rpm is None else rpm / 60.0) if x is not None]
        self._configured = min(limits) if limits else None
        self._ceiling = self._configured
        self._rate: float | None = None
        self._interval = 0.0
        self._next = -math.inf
        self._pending: dict[_Ticket, None] = {}  # waiting tickets, in slot order
        self._holes: dict[float, float] = {}  # end -> slot of cancelled tickets
        self._sent: deque[float] = deque(maxlen=RING)
        self._accepted: deque[float] = deque(maxlen=RING)  # times of answers not throttled
        self._peak = 0.0
        self._last_cut = -math.inf
        self._last_adjust = -math.inf
        if self._ceiling is not None:
            self._set_rate(self._ceiling)

    @property
    def qps(self) -> float | None:
        """The configured requests per second (`None`: none)."""
        return self._qps

    @property
    def rpm(self) -> float | None:
        """The configured requests per minute (`None`: none)."""
        return self._rpm

    @property
    def tpm(self) -> float | None:
        """The configured tokens per minute (`None`: no token budget)."""
        return None if self._tokens is None else self._tokens.tpm

    @property
    def tokens(self) -> TokenWindow | None:
        """The token budget, if `tpm` was given."""
        return self._tokens

    @property
    def adaptive(self) -> bool:
        """Whether rate-limit answers slow it down (and successes speed it up again)."""
        return self._adaptive

    @property
    def rate(self) -> float | None:
        """The requests/second ceiling in force now (`None`: unlimited), before `SAFETY`."""
        return self._rate

    @property
    def ceiling(self) -> float | None:
        """min(qps, rpm/60, header/60): the rate that adaptive recovery climbs back to."""
        return self._ceiling

    def __repr__(self) -> str:
        rate = "unlimited" if self._rate is None else f"{self._rate:.4g}/s"
        tpm = "" if self._tokens is None else f"tpm={self._tokens.tpm!r}, "
        return (
            f"AdaptiveRateLimiter(qps={self._qps!r}, rpm={self._rpm!r}, {tpm}"
            f"adaptive={self._adaptive!r}, rate={rate})"
        )

    async def acquire(self) -> None:
        """Wait until this request may start. Does not checkpoint when it need not wait."""
        if self._rate is None:
            if self._adaptive:  # remembered to estimate the rate, should a limit appear
                self._sent.append(self._clock())
            return
        now = self._clock()
        slot = self._next if self._next > now else now
        end = slot + self._interval
        self._next = end  # reserved before any await: concurrent callers queue behind us
        if slot <= now:
            self._sent.append(now)
            return
        ticket = _Ticket(slot, end)
        self._pending[ticket] = None
        try:
            while now < ticket.slot:  # the slot moves later if the rate is cut meanwhile
                await self._sleep(ticket.slot - now)
                now = self._clock()
        except BaseException:
            self._holes[ticket.end] = ticket.slot
            while self._next in self._holes:  # cancelled slots at the tail: hand them back
                self._next = self._holes.pop(self._next)
            self._release(ticket)
            raise
        self._release(ticket)
        self._sent.append(now)

    def check_tokens(self, tokens: int, field: str = "tpm") -> None:
        """Raise `ValidationError` for a request that could never fit in the budget."""
        if self._tokens is not None:
            self._tokens.check(tokens, field)

    async def acquire_tokens(self, tokens: int) -> TokenCharge:
        """Wait for `tokens` in the token budget, then for a start slot."""
        if self._tokens is None:
            raise RuntimeError("this limiter has no token budget (tpm=None)")
        charge = await self._tokens.take(tokens)
        try:
            await self.acquire()
        except BaseException:
            self._tokens.settle(charge, 0)  # never sent
            raise
        return charge

    async def settle(self, charge: TokenCharge, used: int, *, throttled: bool = False) -> None:
        """Replace the charge by the tokens used (0: failed); `throttled` after a 336502."""
        if self._tokens is not None:
            self._tokens.settle(charge, used, throttled=throttled and self._adaptive)

    def _release(self, ticket: _Ticket) -> None:
        del self._pending[ticket]
        if not self._pending:  # no waiter left whose cancellation could reach a hole
            self._holes.clear()

    async def feedback(self, *, throttled: bool, ratelimit: RateLimitInfo | None) -> None:
        """Learn from one answer: `throttled` for a rate-limit answer, plus its headers."""
        if self._tokens is not None and ratelimit is not None:
            self._tokens.lower(ratelimit.limit_tokens)
        if ratelimit is not None and self._ceiling is not None:
            limit = ratelimit.limit_requests
            if limit is not None and 0 < limit / 60.0 < self._ceiling:
                self._ceiling = limit / 60.0
                if self._rate is not None and self._rate > self._ceiling:
                    self._set_rate(self._ceiling)
        if not self._adaptive:
            return
        if throttled:
            self._cut(self._clock())
            return
        now = self._clock()
        self._accepted.append(now)
        if self._rate is not None and self._rate != self._ceiling:
            self._recover(now)

    # --- the sans-I/O core: pure functions of the clock value passed in

    def _set_rate(self, rate: float | None) -> None:
        old, self._rate = self._rate, rate
        if rate is None:
            return
        self._interval = 1.0 / (rate * SAFETY)
        if old is None or rate < old:  # re-space queued waiters and the next slot
            self._holes.clear()
            prev = self._sent[-1] if self._sent else -math.inf
            for ticket in self._pending:
                prev = max(ticket.slot, prev + self._interval)
                ticket.slot, ticket.end = prev, prev + self._interval
            self._next = max(self._next, prev + self._interval)

    def _observed(self, now: float) -> float:
        """Starts per second over the last `WINDOW` seconds, or over the span the ring
        covers if shorter: a batch throttled 50 ms after it began was sending at n/0.05 s,
        not n/1 s."""
        n = 0
        oldest = now
        for t in reversed(self._sent):
            if t <= now - WINDOW:
                break
            n += 1
            oldest = t
        if n == 0:
            return 0.0
        return n / max(now - oldest, MIN_SPAN)

    def _cut(self, now: float) -> None:
        if now - self._last_cut < CUT_HOLDOFF:
            return  # one burst of throttled answers is one cut
        self._last_cut = self._last_adjust = now
        floor = MIN_RATE if self._ceiling is None else min(MIN_RATE, self._ceiling / 8)
        base = self._observed(now) if self._rate is None else self._rate
        if self._ceiling is None:
            self._peak = max(base, floor)
        # What the service accepted over the last second is the best guess of its limit:
        # a client far above it lands near it in one step instead of halving for seconds.
        accepted = sum(1 for t in self._accepted if t > now - WINDOW) / WINDOW
        target = base * CUT_FACTOR
        if accepted > 0:
            target = min(target, accepted)
        self._set_rate(max(target, floor))

    def _recover(self, now: float) -> None:
        assert self._rate is not None
        dt = min(now - self._last_adjust, MAX_STEP)
        if dt <= 0:
            return
        self._last_adjust = now
        top = self._ceiling if self._ceiling is not None else self._peak
        rate = min(self._rate + RECOVERY * top * dt, top)
        if self._ceiling is None and rate >= top and now - self._last_cut >= RELEASE_AFTER:
            self._set_rate(None)
        else:
            self._set_rate(rate)
