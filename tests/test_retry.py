"""Backoff, Retry-After, and which failures go again."""

from __future__ import annotations

import email.utils

import anyio
import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async._retry import parse_retry_after

from .support import CHAT_URL, TOKEN, chat_body, error_body, make_client


def test_full_jitter_grows_exponentially_and_is_capped() -> None:
    top = wx.RetryPolicy(initial_backoff=0.5, max_backoff=8.0, random=lambda: 1.0)
    assert [top.wait(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    bottom = wx.RetryPolicy(random=lambda: 0.0)
    assert bottom.wait(3) == 0.0


def test_retry_after_is_a_floor_and_capped() -> None:
    policy = wx.RetryPolicy(random=lambda: 0.0, max_wait=30.0)
    assert policy.wait(0, retry_after=5.0) == 5.0
    assert policy.wait(0, retry_after=3600.0) == 30.0


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 12, usegmt=True), now) == 12.0
    for junk in [None, "", "soon", "nan", "Mon, 99 Foo 2024"]:
        assert parse_retry_after(junk, now) is None


def test_budget_and_the_once_only_code() -> None:
    policy = wx.RetryPolicy(max_retries=3)
    busy = wx.ServerError("high load", code=336100, retryable=True)
    internal = wx.ServerError("Internal error", code=336000, retryable=True)
    assert [policy.allows(busy, n) for n in range(4)] == [True, True, True, False]
    assert [policy.allows(internal, n) for n in range(2)] == [True, False]
    assert not policy.allows(wx.InvalidRequestError("no", code=336003), 0)
    assert policy.allows(wx.TransportError("reset"), 0)
    assert not policy.allows(ValueError("not ours"), 0)


@pytest.mark.anyio
async def test_retry_after_header_is_honoured(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "0.3"}),
            httpx.Response(200, json=chat_body()),
        ]
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        started = anyio.current_time()
        await client.chat("mpt30b", [wx.user("hi")])
        waited = anyio.current_time() - started
    assert route.call_count == 2
    assert waited >= 0.3


@pytest.mark.anyio
async def test_transport_errors_and_timeouts_are_retried(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(
        side_effect=[
            httpx.ConnectError("connection refused"),
            httpx.ReadTimeout("slow"),
            httpx.RemoteProtocolError("peer closed connection without response"),
            httpx.Response(200, json=chat_body()),
        ]
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        reply = await client.chat("mpt30b", [wx.user("hi")])
    assert reply.result
    assert route.call_count == 4


@pytest.mark.anyio
async def test_spent_budget_raises_the_last_error(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.RequestTimeoutError) as caught:
            await client.chat("mpt30b", [wx.user("hi")], max_retries=1)
    assert route.call_count == 2
    assert isinstance(caught.value, TimeoutError)
    assert TOKEN not in str(caught.value)


@pytest.mark.anyio
async def test_connection_failure_message_is_redacted(router: respx.MockRouter) -> None:
    router.post(CHAT_URL).mock(side_effect=httpx.ConnectError(f"failed for ?access_token={TOKEN}"))
    async with make_client(credentials=wx.StaticToken(TOKEN), max_retries=0) as client:
        with pytest.raises(wx.TransportError) as caught:
            await client.chat("mpt30b", [wx.user("hi")], max_retries=0)
    assert TOKEN not in str(caught.value)
    assert "access_token=***" in str(caught.value)


@pytest.mark.anyio
async def test_non_retryable_code_is_sent_once(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=error_body(17)))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.QuotaExceededError):
            await client.chat("mpt30b", [wx.user("hi")])
    assert route.call_count == 1


@pytest.mark.anyio
async def test_per_call_max_retries_zero(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(503))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ServerError):
            await client.chat("mpt30b", [wx.user("hi")], max_retries=0)
    assert route.call_count == 1
