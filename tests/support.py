"""Shared test data and helpers."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

import baiduwx_async as wx

BASE_URL = "https://wx.test"
CHAT_URL = f"{BASE_URL}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt30b"
COMPLETIONS_URL = f"{BASE_URL}/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/pythia12b"
TOKEN_URL = f"{BASE_URL}/oauth/2.0/token"
API_KEY = "ak-unit-test-0001"
SECRET_KEY = "sk-unit-test-very-secret"
TOKEN = "24.tok-1.2592000.1485516651.282335-8574074"
FAST_RETRIES = wx.RetryPolicy(max_retries=3, initial_backoff=0.001, max_backoff=0.002)


class FakeClock:
    """Time a test moves: by hand (`clock.now += 5`), or by `sleep`, which advances the
    clock to its deadline once no sleeper has had an earlier one for a few scheduling
    rounds (so tasks just started get to run first): concurrent sleepers wake in deadline
    order, at once. Unix seconds by default; `FakeClock(0.0)` for a clock from zero."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self._deadlines: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        deadline = self.now + delay
        self._deadlines.append(deadline)
        rounds = 0
        try:
            while True:
                await anyio.lowlevel.checkpoint()  # let tasks not yet asleep run first
                if self.now >= deadline:
                    return
                rounds = rounds + 1 if deadline <= min(self._deadlines) else 0
                if rounds >= 5:
                    self.now = deadline
                    return
        finally:
            self._deadlines.remove(deadline)


def chat_body(result: str = "你好！有什么我可以帮助你的吗？", **extra: Any) -> dict[str, Any]:
    """A chat answer as docs/protocol.md §4 shows it."""
    return {
        "id": "as-m5cqte6b4s",
        "object": "chat.completion",
        "created": 1710917007,
        "result": result,
        "is_truncated": False,
        "need_clear_history": False,
        "usage": {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10},
        **extra,
    }


def completion_body(result: str = "Beijing is the capital of China.") -> dict[str, Any]:
    return {**chat_body(result), "object": "completion"}


def token_body(token: str = TOKEN, expires_in: int = 2592000) -> dict[str, Any]:
    return {
        "refresh_token": "25.refresh",
        "expires_in": expires_in,
        "scope": "public wise_adapt",
        "session_key": "sk",
        "access_token": token,
        "session_secret": "ss",
    }


def error_body(code: int, message: str = "error") -> dict[str, Any]:
    return {"error_code": code, "error_msg": message, "id": "as-fxhfe8n53r"}


def make_client(**kwargs: Any) -> wx.AsyncClient:
    kwargs.setdefault("credentials", wx.OAuthCredentials(API_KEY, SECRET_KEY))
    kwargs.setdefault("base_url", BASE_URL)
    kwargs.setdefault("retry_policy", FAST_RETRIES)
    if not {"qps", "rpm", "rate_limiter"} & kwargs.keys():
        # Unit tests send rate-limit answers on purpose; the adaptive slow-down they
        # would trigger is tested with the emulator.
        kwargs["rate_limiter"] = wx.NoLimit()
    return wx.AsyncClient(**kwargs)
