"""Access tokens: single-flight fetch, proactive and compare-and-refresh, stores, secrets."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async._tokens import AccessToken, MemoryTokenStore, TokenManager

from .support import (
    API_KEY,
    CHAT_URL,
    SECRET_KEY,
    TOKEN_URL,
    FakeClock,
    chat_body,
    error_body,
    make_client,
    token_body,
)

pytestmark = pytest.mark.anyio


async def test_a_thousand_cold_calls_make_one_token_request(
    router: respx.MockRouter, token_route: respx.Route
) -> None:
    chat = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client() as client, anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(client.chat, "mpt30b", [wx.user("hi")])
    assert token_route.call_count == 1
    assert chat.call_count == 1000
    token_request = token_route.calls.last.request
    assert token_request.url.params["grant_type"] == "client_credentials"
    assert token_request.url.params["client_id"] == API_KEY


async def test_expired_token_mid_run_refreshes_once_and_no_call_fails(
    router: respx.MockRouter,
) -> None:
    tokens = iter(["24.first", "24.second", "24.third"])

    async def issue(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.01)
        return httpx.Response(200, json=token_body(next(tokens)))

    token_route = router.post(TOKEN_URL).mock(side_effect=issue)
    served = 0
    rejected = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal served
        await anyio.sleep(0.01)  # all 200 calls are in flight together
        served += 1
        if request.url.params["access_token"] == "24.first" and served > 50:
            nonlocal rejected
            rejected += 1
            return httpx.Response(200, json=error_body(111, "Access token expired"))
        return httpx.Response(200, json=chat_body())

    router.post(CHAT_URL).mock(side_effect=answer)
    failures: list[BaseException] = []

    async def one_call() -> None:
        try:
            await client.chat("mpt30b", [wx.user("hi")])
        except wx.WenxinError as exc:  # pragma: no cover - reported by the assertion
            failures.append(exc)

    async with make_client() as client, anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(one_call)
    assert failures == []
    assert token_route.call_count == 2, "one initial fetch and exactly one refresh"
    assert rejected > 100, "most calls were in flight with the old token when it died"


async def test_second_rejection_after_refresh_is_an_authentication_error(
    router: respx.MockRouter, token_route: respx.Route
) -> None:
    chat = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=error_body(110)))
    async with make_client() as client:
        with pytest.raises(wx.AuthenticationError) as caught:
            await client.chat("mpt30b", [wx.user("hi")])
    assert caught.value.code == 110
    assert chat.call_count == 2, "replayed once with a new token, then given up"
    assert token_route.call_count == 2


async def test_static_token_rejection_is_not_replayed(router: respx.MockRouter) -> None:
    chat = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=error_body(111)))
    async with make_client(credentials=wx.StaticToken("24.static")) as client:
        with pytest.raises(wx.AuthenticationError):
            await client.chat("mpt30b", [wx.user("hi")])
    assert chat.call_count == 1
    assert chat.calls.last.request.url.params["access_token"] == "24.static"


@pytest.mark.parametrize("status", [401, 200])
async def test_invalid_client_reaches_every_waiter_without_the_secret(
    router: respx.MockRouter, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def refuse(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.05)  # the network: every caller arrives while the fetch is out
        return httpx.Response(
            status,
            json={"error_description": "Client authentication failed", "error": "invalid_client"},
        )

    token_route = router.post(TOKEN_URL).mock(side_effect=refuse)
    chat = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    errors: list[BaseException] = []

    async def one_call() -> None:
        try:
            await client.chat("mpt30b", [wx.user("hi")])
        except wx.AuthenticationError as exc:
            errors.append(exc)

    async with make_client() as client, anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(one_call)
    assert len(errors) == 50
    assert token_route.call_count == 1, "the waiters share the one failed fetch"
    assert chat.call_count == 0
    assert all(getattr(e, "code", None) == "invalid_client" for e in errors)
    for text in [str(errors[0]), repr(errors[0]), caplog.text]:
        assert SECRET_KEY not in text
        assert API_KEY not in text


async def test_transient_token_endpoint_failures_are_retried(router: respx.MockRouter) -> None:
    token_route = router.post(TOKEN_URL).mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(503),
            httpx.Response(200, json=token_body()),
        ]
    )
    router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client() as client:
        await client.chat("mpt30b", [wx.user("hi")])
    assert token_route.call_count == 3


async def test_token_is_refreshed_ahead_of_expiry(router: respx.MockRouter) -> None:
    tokens = iter(["24.a", "24.b"])
    token_route = router.post(TOKEN_URL).mock(
        side_effect=lambda request: httpx.Response(200, json=token_body(next(tokens), 1000))
    )
    chat = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    clock = FakeClock()
    async with make_client(clock=clock) as client:
        await client.chat("mpt30b", [wx.user("hi")])
        clock.now += 899  # under 90 % of expires_in: still fresh
        await client.chat("mpt30b", [wx.user("hi")])
        assert token_route.call_count == 1
        clock.now += 2  # past 90 %: replaced before the server would refuse it
        await client.chat("mpt30b", [wx.user("hi")])
    assert token_route.call_count == 2
    assert [c.request.url.params["access_token"] for c in chat.calls] == ["24.a", "24.a", "24.b"]


async def test_refresh_if_stale_keeps_a_token_that_was_already_replaced() -> None:
    fetched: list[str] = []

    async def fetch() -> AccessToken:
        fetched.append(f"24.t{len(fetched)}")
        return AccessToken(fetched[-1], 0.0, 1e12)

    class CountingSharedStore(MemoryTokenStore):
        """A shared store (as Redis is) that counts what each call costs."""

        def __init__(self) -> None:
            super().__init__()
            self.visits: list[str] = []

        async def load(self, key: str) -> AccessToken | None:
            self.visits.append("load")
            return await super().load(key)

        @contextlib.asynccontextmanager
        async def fetch_lock(self, key: str) -> AsyncIterator[None]:
            self.visits.append("lock")
            yield

    store = CountingSharedStore()
    manager = TokenManager(fetch, key="k", store=store, clock=lambda: 1.0)
    first = await manager.get_token()
    second = await manager.refresh_if_stale(first)
    assert second != first
    store.visits.clear()
    # A late 111 for the first token costs no fetch, and not even a visit to the shared
    # store: with Redis that would be a lock and a round trip per late answer.
    assert await manager.refresh_if_stale(first) == second
    assert fetched == ["24.t0", "24.t1"]
    assert store.visits == []


async def test_cancelled_leader_lets_a_waiter_fetch() -> None:
    calls = 0
    gate = anyio.Event()

    async def fetch() -> AccessToken:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()  # the leader hangs until cancelled
        return AccessToken(f"24.t{calls}", 0.0, 1e12)

    manager = TokenManager(fetch, key="k", clock=lambda: 1.0)
    results: list[str] = []
    async with anyio.create_task_group() as tg:
        leader = anyio.CancelScope()

        async def lead() -> None:
            with leader:
                await manager.get_token()

        async def wait() -> None:
            results.append(await manager.get_token())

        tg.start_soon(lead)
        await anyio.sleep(0.01)
        tg.start_soon(wait)
        await anyio.sleep(0.01)
        leader.cancel()
    assert results == ["24.t2"]


async def test_file_store_survives_a_new_client(
    router: respx.MockRouter, token_route: respx.Route, tmp_path: Path
) -> None:
    router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    store_dir = tmp_path / "tokens"
    async with make_client(token_store=wx.FileTokenStore(store_dir)) as client:
        await client.chat("mpt30b", [wx.user("hi")])
    async with make_client(token_store=wx.FileTokenStore(store_dir)) as client:
        await client.chat("mpt30b", [wx.user("hi")])
    assert token_route.call_count == 1
    (file,) = store_dir.glob("*.json")
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert SECRET_KEY not in file.name and API_KEY not in file.name
    assert SECRET_KEY not in file.read_text()
    assert not list(store_dir.glob(".token-*")), "no temporary file left behind"


async def test_file_store_refuses_a_file_others_can_read(
    router: respx.MockRouter, token_route: respx.Route, tmp_path: Path
) -> None:
    chat = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    store = wx.FileTokenStore(tmp_path)
    async with make_client(token_store=store) as client:
        await client.chat("mpt30b", [wx.user("hi")])
    (file,) = tmp_path.glob("*.json")
    file.write_text(json.dumps({"value": "24.planted", "obtained_at": 9e9, "expires_in": 9e9}))
    os.chmod(file, 0o644)
    async with make_client(token_store=store) as client:
        await client.chat("mpt30b", [wx.user("hi")])
    assert chat.calls.last.request.url.params["access_token"] != "24.planted"
    assert token_route.call_count == 2
    assert stat.S_IMODE(file.stat().st_mode) == 0o600, "rewritten privately"


async def test_file_store_ignores_a_corrupt_file(tmp_path: Path) -> None:
    store = wx.FileTokenStore(tmp_path)
    path = tmp_path / "k.json"
    path.write_text("{not json")
    os.chmod(path, 0o600)
    assert await store.load("k") is None


def test_reprs_show_no_secret() -> None:
    texts = [
        repr(wx.OAuthCredentials(API_KEY, SECRET_KEY)),
        repr(wx.StaticToken("24.secret-token")),
        repr(AccessToken("24.secret-token", 0, 1)),
        repr(make_client()),
        repr(TokenManager(lambda: None, key="k")),  # type: ignore[arg-type,return-value]
    ]
    for text in texts:
        assert SECRET_KEY not in text and API_KEY not in text and "secret-token" not in text


def test_credentials_from_environment() -> None:
    env = {"QIANFAN_AK": "a", "QIANFAN_SK": "b", "QIANFAN_ACCESS_TOKEN": "t"}
    assert wx.credentials_from_env(env) == wx.OAuthCredentials("a", "b")
    assert wx.credentials_from_env({"QIANFAN_ACCESS_TOKEN": "t"}) == wx.StaticToken("t")
    with pytest.raises(wx.AuthenticationError, match="QIANFAN_SK"):
        wx.credentials_from_env({"QIANFAN_AK": "a"})
    with pytest.raises(wx.AuthenticationError, match="no credentials"):
        wx.credentials_from_env({})


def test_client_without_any_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("QIANFAN_"):
            monkeypatch.delenv(name)
    with pytest.raises(wx.AuthenticationError, match="no credentials"):
        wx.AsyncClient()


def test_client_reads_credentials_and_base_url_from_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QIANFAN_AK", "env-ak")
    monkeypatch.setenv("QIANFAN_SK", "env-sk")
    monkeypatch.setenv("QIANFAN_BASE_URL", "https://qianfan.example/")
    client = wx.AsyncClient()
    assert client.base_url == httpx.URL("https://qianfan.example")
    assert "env-sk" not in repr(client)


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_blank_keys_are_rejected(bad: object) -> None:
    with pytest.raises(wx.ValidationError):
        wx.OAuthCredentials("a", bad)  # type: ignore[arg-type]
