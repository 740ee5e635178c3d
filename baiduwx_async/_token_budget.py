"""
A tokens-per-minute budget (`tpm=`): each request is charged ahead by an estimate of its
tokens and settled by the `usage` of its answer.

Decisions:

- **The estimate is a seam.** `TokenEstimator` is any function of the JSON body about to be
  sent that returns a number of tokens; `estimate_tokens` is the default. It counts
  characters: every CJK ideograph is one token (the service counts 1 token for about 1 to
  1.5 Chinese characters, and the official SDK's local estimate counts one per ideograph), any
  other text one token per `CHARS_PER_TOKEN` (3) characters (English runs about 4
  characters per token; the SDK's local estimate is words x 1.3, about 3.5 to 4 characters).
  Both lean high on purpose: an estimate too high is given back when the answer's `usage`
  arrives, one too low can cost a 336502. A chat or completion is also charged the room its
  answer may take: its `max_output_tokens` if the body has one, else `DEFAULT_ANSWER_ROOM`.
- **A sliding window, exact.** Every start books its tokens at its time; the tokens of a
  start leave the budget `window` (60 s) later, so the budget refills as they leave, not all
  at once at the top of a minute. At most `budget` tokens are booked in any window.
- **Paced, not burst.** Inside the window, starts are spaced like a GCRA schedule at
  `budget * SAFETY / window` tokens per second (3 % below the budget: room for the estimates
  of the requests in flight, so the window rarely has to hold a start back), so a steady
  batch runs at the budget's pace from its first second instead of spending the whole
  minute's budget at once and pausing for the rest of it. The pace counts what a request is
  expected to use (its estimate times the ratio of used to estimated tokens seen so far),
  so a generous estimate (the room of an answer) does not slow the batch down while it is
  in flight; the window, which counts the whole estimate until settlement, keeps the
  promise. A start let go up to `PACE_GRACE` of the window late keeps the pace's grid, so a
  late wake-up is not lost time.
- **Settlement.** A finished answer replaces its estimate by its `usage.total_tokens` in
  the window and in the pace (given back or charged); a failed request is settled at zero
  (the service does not count a refused request); a stream at its end, or when it is closed
  early, at the last usage it carried. A request cancelled before its answer keeps its
  estimate until it leaves the window.
- **Waiters are served in order** (a large request is not starved by small ones), and a
  give-back wakes the first of them at once.
- **The service's word wins downward.** `X-Ratelimit-Limit-Tokens` lowers the budget, never
  raises it; after a 336502 answer the budget is halved (at most once a second, never below
  1/8 of it) and climbs back by 5 % of it per second of successes.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from ._errors import ValidationError

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_ANSWER_ROOM",
    "TokenCharge",
    "TokenEstimator",
    "TokenWindow",
    "estimate_tokens",
]

#: characters of non-CJK text counted as one token by the default estimator
CHARS_PER_TOKEN = 3
#: tokens charged ahead for the answer of a chat or completion without `max_output_tokens`
#: (ERNIE's own default for `max_output_tokens`)
DEFAULT_ANSWER_ROOM = 1024
SAFETY = 0.97  #: the pace runs at this share of the budget
PACE_GRACE = 1 / 60  #: share of the window a late start may be without moving the grid
CUT_FACTOR = 0.5  #: multiplicative decrease after a 336502
CUT_HOLDOFF = 1.0  #: seconds after a cut during which 336502 answers are not cut again
RECOVERY = 0.05  #: share of the budget regained per second of successes
MAX_STEP = 2.0  #: at most this many seconds count for one success
MIN_SCALE = 0.125  #: a cut never takes the budget below this share of it
RATIO_WEIGHT = 0.1  #: weight of one settlement in the used/estimated ratio the pace counts

#: A function of the JSON body about to be sent (`messages`, `prompt` or `input`, and the
#: parameters) that returns the tokens to charge ahead for it.
TokenEstimator = Callable[[Mapping[str, Any]], int]

_CJK_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _text_tokens(text: str) -> int:
    if text.isascii():
        return -(-len(text) // CHARS_PER_TOKEN)
    ideographs = len(_CJK_RE.findall(text))
    return ideographs + -(-(len(text) - ideographs) // CHARS_PER_TOKEN)


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """The default `TokenEstimator`: characters counted as tokens (see the module docstring),
    plus, for a chat or completion, the room of its answer."""
    messages = body.get("messages")
    if messages is not None:
        tokens = sum(_text_tokens(str(m.get("content") or "")) for m in messages)
        system = body.get("system")
        if isinstance(system, str):
            tokens += _text_tokens(system)
    elif "prompt" in body:
        tokens = _text_tokens(str(body["prompt"]))
    else:  # embeddings: a list of texts, no answer
        texts = body.get("input") or ()
        return sum(_text_tokens(str(t)) for t in texts)
    room = body.get("max_output_tokens")
    return tokens + (room if isinstance(room, int) and room > 0 else DEFAULT_ANSWER_ROOM)


class TokenCharge:
    """What one request was charged: settled once by the limiter that made it."""

    __slots__ = ("at", "booking", "entry", "paced", "settled", "tokens")

    def __init__(
        self,
        tokens: int,
        at: float,
        paced: float,
        entry: list[float] | None,
        booking: str | None = None,
    ) -> None:
        self.tokens = tokens  #: the estimate charged
        self.at = at  #: when it was booked (the limiter's clock)
        self.paced = paced  #: tokens the pace counted for it
        self.entry = entry  #: its [time, tokens] in the window (in-process)
        self.booking = booking  #: its id in a shared (Redis) window
        self.settled = False


class _Waiter:
    __slots__ = ("event", "tokens")

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.event = anyio.Event()


def check_tpm(value: object) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf
    if value is not None and not ok:
        raise ValidationError("tpm", "must be a finite number > 0 (None: no budget)", value)


class TokenWindow:
    """The in-process token budget (see the module docstring for the rules).

    `window` is the length of the sliding window in seconds of `clock` (60; tests shrink it
    together with the emulator's minute). Waiting is done with `anyio` timeouts.
    """

    def __init__(
        self,
        tpm: float,
        *,
        window: float = 60.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        check_tpm(tpm)
        self.tpm = tpm
        self.window = window
        self._clock = clock if clock is not None else anyio.current_time
        self._limit = float(tpm)  # min(tpm, header)
        self._scale = 1.0  # adaptive share of the limit
        self._entries: deque[list[float]] = deque()  # [time, tokens], in time order
        self._total = 0.0
        self._tat = -math.inf  # the pace's "next allowed time"
        self._ratio = 1.0  # used / estimated tokens, as settled so far
        self._queue: deque[_Waiter] = deque()
        self._last_cut = -math.inf
        self._last_adjust = -math.inf
        self.used = 0  #: tokens settled so far (for progress reports)

    @property
    def budget(self) -> float:
        """Tokens per window in force now: min(tpm, header), times the adaptive share."""
        return self._limit * self._scale

    @property
    def limit(self) -> float:
        """min(tpm, X-Ratelimit-Limit-Tokens): what adaptive recovery climbs back to."""
        return self._limit

    def booked(self) -> float:
        """Tokens booked in the window now (estimates not yet settled included)."""
        self._expire(self._clock())
        return self._total

    def check(self, tokens: int, field: str = "tpm") -> None:
        """Refuse a request that could never fit in the whole budget."""
        if tokens > self._limit:
            raise ValidationError(
                field,
                f"the request is estimated at {tokens} tokens (with its answer's room), more "
                f"than the whole budget of {self._limit:.0f} tokens per minute allows; shorten "
                "it, set max_output_tokens, raise tpm, or pass a token_estimator",
                tokens,
            )

    async def take(self, tokens: int) -> TokenCharge:
        """Wait until `tokens` fit in the window and the pace, then book them."""
        self.check(tokens)
        if not self._queue:
            now = self._clock()
            if self._ready_at(tokens, now) <= now:
                return self._book(tokens, now)
        waiter = _Waiter(tokens)
        self._queue.append(waiter)
        try:
            while True:
                if self._queue[0] is waiter:
                    self.check(tokens)  # the budget may have been lowered meanwhile
                    now = self._clock()
                    at = self._ready_at(tokens, now)
                    if at <= now:
                        break
                    waiter.event = anyio.Event()
                    with anyio.move_on_after(at - now):
                        await waiter.event.wait()
                else:
                    await waiter.event.wait()
                    waiter.event = anyio.Event()
        finally:
            if self._queue and self._queue[0] is waiter:
                self._queue.popleft()
            else:
                self._queue.remove(waiter)
            self._wake()
        return self._book(tokens, self._clock())

    def settle(self, charge: TokenCharge, used: int, *, throttled: bool = False) -> None:
        """Replace the estimate by what the answer used (0 for a failed request)."""
        if charge.settled:
            return
        charge.settled = True
        now = self._clock()
        if throttled:
            self._cut(now)
        elif used > 0:
            self._recover(now)
        entry = charge.entry
        if entry is not None and entry[0] > now - self.window:  # still in the window
            self._total += used - entry[1]
            entry[1] = used
        if charge.tokens > 0 and used > 0:
            self._ratio += RATIO_WEIGHT * (used / charge.tokens - self._ratio)
        self._tat += (used - charge.paced) / self._pace()
        self.used += used
        if used < charge.tokens:
            self._wake()

    def lower(self, limit_tokens: int | None) -> None:
        """`X-Ratelimit-Limit-Tokens` lowers the budget, never raises it."""
        if limit_tokens is not None and 0 < limit_tokens < self._limit:
            self._limit = float(limit_tokens)

    # --- the core: plain functions of the clock value passed in

    def _pace(self) -> float:
        return self.budget * SAFETY / self.window

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        entries = self._entries
        while entries and entries[0][0] <= cutoff:
            self._total -= entries.popleft()[1]

    def _ready_at(self, tokens: int, now: float) -> float:
        """The earliest time, not before `now`, when `tokens` fit the pace and the window."""
        self._expire(now)
        at = max(now, self._tat)
        excess = self._total + tokens - self.budget
        if excess > 0:  # wait for the oldest bookings to leave the window
            for time, booked in self._entries:
                excess -= booked
                if excess <= 0:
                    return max(at, time + self.window)
            # A cut took the budget below this request (which fits the uncut one): it goes
            # alone, once the window is empty.
            return max(at, self._entries[-1][0] + self.window) if self._entries else at
        return at

    def _book(self, tokens: int, now: float) -> TokenCharge:
        entry = [now, float(tokens)]
        self._entries.append(entry)
        self._total += tokens
        paced = tokens * min(self._ratio, 1.0)
        self._tat = max(self._tat, now - PACE_GRACE * self.window) + paced / self._pace()
        return TokenCharge(tokens, now, paced, entry)

    def _wake(self) -> None:
        if self._queue:
            self._queue[0].event.set()

    def _cut(self, now: float) -> None:
        if now - self._last_cut < CUT_HOLDOFF:
            return
        self._last_cut = self._last_adjust = now
        self._scale = max(self._scale * CUT_FACTOR, MIN_SCALE)

    def _recover(self, now: float) -> None:
        if self._scale >= 1.0:
            return
        dt = min(now - self._last_adjust, MAX_STEP)
        if dt > 0:
            self._last_adjust = now
            self._scale = min(1.0, self._scale + RECOVERY * dt)
            self._wake()
