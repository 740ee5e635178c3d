"""The emulator's moving parts: issued tokens, rate windows, statistics and dice.

All of it is plain synchronous code: the emulator runs on one event loop and never awaits
while it updates these, so no locks are needed.
"""

from __future__ import annotations

import hashlib
import random
import string
import time
from collections import Counter, deque
from typing import Any

from ._config import EmulatorConfig
from ._wire import Failure, Headers, error_message

__all__ = ["Dice", "Limiter", "Stats", "TokenRegistry"]

_ID_ALPHABET = string.ascii_lowercase + string.digits


class Dice:
    """Seeded randomness: response ids and fault choices draw from separate streams."""

    def __init__(self, seed: int | None) -> None:
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        self._ids = random.Random(None if seed is None else f"{seed}/ids")
        self._faults = random.Random(None if seed is None else f"{seed}/faults")

    def response_id(self) -> str:
        return "as-" + "".join(self._ids.choices(_ID_ALPHABET, k=10))

    def hex(self, digits: int) -> str:
        return f"{self._ids.getrandbits(digits * 4):0{digits}x}"

    def randint(self, low: int, high: int) -> int:
        return self._ids.randint(low, high)

    def fault(self, faults: dict[str, float]) -> str | None:
        """A fault name by the configured fractions, or None."""
        roll = self._faults.random()
        total = 0.0
        for name, fraction in faults.items():
            total += fraction
            if roll < total:
                return name
        return None


def _app_id(api_key: str) -> int:
    return 10_000_000 + int(hashlib.sha256(api_key.encode()).hexdigest()[:8], 16) % 90_000_000


class TokenRegistry:
    """Access tokens issued by /oauth/2.0/token: token -> expiry (clock seconds)."""

    def __init__(self, dice: Dice) -> None:
        self._dice = dice
        self._expiry: dict[str, float] = {}

    def issue(self, api_key: str, lifetime: int, now: float) -> tuple[str, str]:
        """A new (access token, refresh token) pair."""
        tail = f"{int(now)}.{self._dice.randint(100000, 999999)}-{_app_id(api_key)}"
        token = f"24.{self._dice.hex(32)}.{lifetime}.{tail}"
        refresh = f"25.{self._dice.hex(32)}.315360000.{tail}"
        self._expiry[token] = now + lifetime
        return token, refresh

    def check(self, token: str | None, now: float, static: set[str]) -> int | None:
        """None when valid, else the error code: 110 unknown/revoked, 111 expired."""
        if token is None:
            return 110
        expiry = self._expiry.get(token)
        if expiry is None:
            return None if token in static else 110
        return None if now < expiry else 111

    def revoke(self) -> None:
        self._expiry.clear()


class Limiter:
    """QPS, RPM, TPM and quota windows, and the X-Ratelimit-* headers they imply."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._recent: deque[float] = deque()  # admission times inside the QPS window
        self._minute: deque[list[int]] = deque()  # [second, requests, tokens]
        self._minute_requests = 0
        self._minute_tokens = 0
        self._day = -1
        self._day_count = 0
        self._total = 0

    def _expire_minute(self, now: float) -> None:
        cutoff = int(now) - 60
        minute = self._minute
        while minute and minute[0][0] <= cutoff:
            _, requests, tokens = minute.popleft()
            self._minute_requests -= requests
            self._minute_tokens -= tokens

    def admit(self, now: float, tokens: int, config: EmulatorConfig) -> Failure | None:
        """Count one request of `tokens` tokens, or the failure that refuses it."""
        if config.total_quota is not None and self._total >= config.total_quota:
            return Failure(19, error_message(19))
        day = int(now // 86400)
        if day != self._day:
            self._day, self._day_count = day, 0
        if config.daily_quota is not None and self._day_count >= config.daily_quota:
            return Failure(17, error_message(17))
        qps = config.qps
        if qps is not None:
            capacity = max(1, int(qps))
            cutoff = now - capacity / qps
            recent = self._recent
            while recent and recent[0] <= cutoff:
                recent.popleft()
            if len(recent) >= capacity:
                return Failure(18, error_message(18))
        self._expire_minute(now)
        if config.rpm is not None and self._minute_requests >= config.rpm:
            return Failure(336501, error_message(336501))
        if config.tpm is not None and self._minute_tokens + tokens > config.tpm:
            return Failure(336502, error_message(336502))

        if qps is not None:
            self._recent.append(now)
        second = int(now)
        minute = self._minute
        if minute and minute[-1][0] == second:
            minute[-1][1] += 1
            minute[-1][2] += tokens
        else:
            minute.append([second, 1, tokens])
        self._minute_requests += 1
        self._minute_tokens += tokens
        self._day_count += 1
        self._total += 1
        return None

    def headers(self, now: float, config: EmulatorConfig) -> Headers:
        self._expire_minute(now)
        rpm = config.rpm or config.advertised_rpm
        tpm = config.tpm or config.advertised_tpm
        return [
            (b"x-ratelimit-limit-requests", b"%d" % rpm),
            (b"x-ratelimit-limit-tokens", b"%d" % tpm),
            (b"x-ratelimit-remaining-requests", b"%d" % max(0, rpm - self._minute_requests)),
            (b"x-ratelimit-remaining-tokens", b"%d" % max(0, tpm - self._minute_tokens)),
        ]


class Stats:
    """Counters behind `Emulator.stats()`."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero the counters; requests in flight stay counted."""
        self.started = time.monotonic()
        self.token_requests = 0
        self.token_outcomes: Counter[str] = Counter()
        self.calls = 0
        self.endpoints: dict[str, Counter[str]] = {}
        self.faults: Counter[str] = Counter()
        self.max_in_flight = self.in_flight
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_abandoned = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def begin(self) -> None:
        self.calls += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def end(self, key: str, outcome: str) -> None:
        self.in_flight -= 1
        counter = self.endpoints.get(key)
        if counter is None:
            counter = self.endpoints[key] = Counter()
        counter[outcome] += 1

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        outcomes: Counter[str] = Counter()
        for counter in self.endpoints.values():
            outcomes.update(counter)
        return {
            "token_requests": self.token_requests,
            "token_outcomes": dict(self.token_outcomes),
            "calls": self.calls,
            "outcomes": dict(outcomes),
            "endpoints": {key: dict(c) for key, c in self.endpoints.items()},
            "faults": dict(self.faults),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_abandoned": self.streams_abandoned,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "elapsed_seconds": elapsed,
            "requests_per_second": self.calls / elapsed,
        }
