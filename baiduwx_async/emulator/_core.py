"""`EmulatorState`: one emulated server's settings, clock, tokens, limits and counters.

Everything the routes need and nothing of the routes: `_app`, `_model` and `_stream` import
it, and `_emulator.Emulator` adds the app on top, so imports point one way."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import attrs

from ._config import EmulatorConfig
from ._state import Dice, Limiter, Stats, TokenRegistry

__all__ = ["EmulatorState", "session_key"]


class EmulatorState:
    """The state of a local Wenxin Workshop (Qianfan v1) server; `Emulator` serves it.

    `clock` (unix seconds) decides token expiry, bce-auth-v1 time checks, `created` fields
    and the rate windows; tests inject a fake one.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.clock = clock
        self._dice = Dice(self.config.seed)
        self._tokens = TokenRegistry(self._dice)
        self._limiter = Limiter()
        self._stats = Stats()
        #: Set it to a list, and each finished model call appends `(question, outcome)` to
        #: it once its answer is sent (question None: the body was refused before it was
        #: read): which prompt got which answer, for tests that compare it with a client's
        #: output. Outcomes are those of `stats()`: "ok", "error_18", "drop", ...
        self.call_log: list[tuple[str | None, str]] | None = None

    def __repr__(self) -> str:
        return f"<Emulator endpoints={self.config.endpoints!r} faults={self.config.faults!r}>"

    def configure(self, **changes: Any) -> None:
        """Change several settings at once, all validated before any is applied.

        An unknown name raises `TypeError` naming it; a bad value raises `ValueError` (or
        `TypeError`) and changes nothing. A new `seed` reseeds the ids and fault dice.
        """
        unknown = sorted(set(changes) - EmulatorConfig.field_names())
        if unknown:
            raise TypeError(f"unknown emulator setting(s): {', '.join(unknown)}")
        checked = attrs.evolve(self.config, **changes)
        for name in changes:
            # Already converted and validated as a whole by evolve(); skip per-field hooks,
            # which would see half-applied combinations (e.g. sentences_min/max).
            object.__setattr__(self.config, name, getattr(checked, name))
        if "seed" in changes:
            self._dice.reseed(self.config.seed)

    def stats(self) -> dict[str, Any]:
        """Counters since the start or the last `reset_stats`, as JSON-ready data."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    def reset_limits(self) -> None:
        """Empty the QPS/RPM/TPM windows and the daily and total quota counts."""
        self._limiter.reset()

    def revoke_tokens(self) -> None:
        """Invalidate every issued access token (the next call with one gets 110)."""
        self._tokens.revoke()

    def issue_token(self, api_key: str | None = None) -> str:
        """A valid access token for `api_key` (default: the first configured one), no HTTP."""
        if api_key is None:
            api_key = next(iter(self.config.credentials), "test-api-key")
        return self._tokens.issue(api_key, self.config.token_lifetime, self.clock())[0]

    def _token_body(self, api_key: str) -> dict[str, Any]:
        """The six-key answer of /oauth/2.0/token (docs/protocol.md §2a), in documented order."""
        lifetime = self.config.token_lifetime
        access, refresh = self._tokens.issue(api_key, lifetime, self.clock())
        return {
            "refresh_token": refresh,
            "expires_in": lifetime,
            "scope": "public wise_adapt",
            "session_key": session_key(bytes.fromhex(self._dice.hex(120))),
            "access_token": access,
            "session_secret": self._dice.hex(32),
        }


def session_key(raw: bytes) -> str:
    """A session_key-looking string (base64 text) for the token answer."""
    return base64.b64encode(raw).decode().rstrip("=")
