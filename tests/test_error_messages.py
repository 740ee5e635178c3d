"""Errors that say what to do: where the request went (scheme, host and port, never the
query), how many attempts were made, which setting to change, and never a secret."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import baiduwx_async as wx
from baiduwx_async import testing
from baiduwx_async.cli import error_line

from .support import API_KEY, SECRET_KEY, TOKEN

pytestmark = pytest.mark.anyio

NO_WAIT = wx.RetryPolicy(max_retries=2, initial_backoff=0, max_backoff=0)
MESSAGES = [wx.user("hi")]
SECRETS = (API_KEY, SECRET_KEY, TOKEN, "client_secret", "access_token=")


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused at once."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "QIANFAN_AK",
        "QIANFAN_SK",
        "QIANFAN_ACCESS_KEY",
        "QIANFAN_SECRET_KEY",
        "QIANFAN_ACCESS_TOKEN",
        "QIANFAN_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("anyio_backend", "backend"),
    [("asyncio", "httpx"), ("trio", "httpx"), ("asyncio", "aiohttp")],
)
async def test_refused_token_call_names_port_attempts_and_base_url(
    backend: str, closed_port: int
) -> None:
    client = wx.AsyncClient(
        credentials=wx.OAuthCredentials(API_KEY, SECRET_KEY),
        base_url=f"http://127.0.0.1:{closed_port}",
        retry_policy=NO_WAIT,
        http_backend=backend,  # type: ignore[arg-type]
    )
    async with client:
        with pytest.raises(wx.TransportError) as caught:
            await client.chat("mpt30b", MESSAGES)
    error = caught.value
    text = str(error)
    assert f"POST http://127.0.0.1:{closed_port}/oauth/2.0/token failed" in text
    assert error.url == f"http://127.0.0.1:{closed_port}/oauth/2.0/token"
    assert error.attempts == 3 and "gave up after 3 attempts" in text
    assert "The address comes from base_url=" in text
    assert_no_secret(text)


async def test_refused_call_names_the_environment_variable_it_came_from(
    closed_port: int, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("QIANFAN_BASE_URL", f"http://127.0.0.1:{closed_port}")
    async with wx.AsyncClient(
        credentials=wx.StaticToken(TOKEN), retry_policy=NO_WAIT, max_retries=0
    ) as client:
        with pytest.raises(wx.TransportError) as caught:
            await client.complete("pythia12b", "hi")
    text = str(caught.value)
    assert f"http://127.0.0.1:{closed_port}/rpc/2.0/" in text
    assert "gave up after 1 attempt -" in text and "comes from QIANFAN_BASE_URL" in text
    assert_no_secret(text)


async def test_default_https_port_is_shown() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    async with (
        http,
        wx.AsyncClient(
            credentials=wx.StaticToken(TOKEN), http_client=http, retry_policy=NO_WAIT
        ) as client,
    ):
        with pytest.raises(wx.TransportError) as caught:
            await client.chat("mpt30b", MESSAGES)
    text = str(caught.value)
    assert "https://aip.baidubce.com:443/rpc/2.0/" in text
    assert "the default base_url (set base_url= or QIANFAN_BASE_URL" in text
    assert_no_secret(text)


@pytest.mark.parametrize(
    ("exception", "limit", "seconds", "advice"),
    [
        (httpx.ConnectTimeout, "connect", 2.5, "connect=SECONDS"),
        (httpx.ReadTimeout, "read", 7.0, "timeout=SECONDS"),
        (httpx.WriteTimeout, "write", 7.0, "write=SECONDS"),
        (httpx.PoolTimeout, "pool", 1.5, "pool=SECONDS"),
    ],
)
async def test_timeout_names_the_limit_its_value_and_timeout(
    exception: type[httpx.TimeoutException], limit: str, seconds: float, advice: str
) -> None:
    def expire(request: httpx.Request) -> httpx.Response:
        raise exception("timed out", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(expire))
    timeout = httpx.Timeout(7.0, connect=2.5, pool=1.5)
    async with (
        http,
        wx.AsyncClient(
            credentials=wx.StaticToken(TOKEN),
            base_url="https://qianfan.example:8443",
            http_client=http,
            timeout=timeout,
            retry_policy=NO_WAIT,
        ) as client,
    ):
        with pytest.raises(wx.RequestTimeoutError) as caught:
            await client.chat("mpt30b", MESSAGES)
    error = caught.value
    text = str(error)
    assert (error.limit, error.seconds, error.attempts) == (limit, seconds, 3)
    assert "https://qianfan.example:8443/rpc/2.0/" in text
    assert f"the {limit} timeout ({seconds:g} s) expired" in text
    assert "gave up after 3 attempts" in text and advice in text
    assert_no_secret(text)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn serves on asyncio only
@pytest.mark.parametrize("backend", ["httpx", "aiohttp"])
async def test_real_read_timeout_is_named_with_its_value(backend: str) -> None:
    async with testing.run_emulator() as emu:
        emu.configure(first_token_latency=0.4)
        client = emu.client(
            timeout=httpx.Timeout(5.0, read=0.1),
            retry_policy=NO_WAIT,
            max_retries=1,
            http_backend=backend,
        )
        with pytest.raises(wx.RequestTimeoutError) as caught:
            await client.chat("mpt30b", MESSAGES)
    error = caught.value
    text = str(error)
    assert error.limit == "read" and error.seconds == 0.1 and error.attempts == 2
    assert f"{emu.base_url}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt30b" in text
    assert "the read timeout (0.1 s) expired" in text and "timeout=SECONDS" in text
    assert_no_secret(text)


async def oauth_refusal(**client_options: Any) -> wx.AuthenticationError:
    async with testing.run_emulator(asgi=True) as emu:
        async with emu.client(**client_options) as client:
            with pytest.raises(wx.AuthenticationError) as caught:
                await client.chat("mpt30b", MESSAGES)
    return caught.value


async def test_invalid_client_hint_names_the_credentials_argument() -> None:
    error = await oauth_refusal(credentials=wx.OAuthCredentials(API_KEY, SECRET_KEY))
    assert error.code == "invalid_client"
    assert error.hint is not None and "credentials=OAuthCredentials(...)" in error.hint
    assert "same application" in error.hint and "IAMCredentials" in error.hint
    assert error.hint in str(error)
    assert_no_secret(str(error))


async def test_invalid_client_hint_names_the_environment_variables(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("QIANFAN_AK", API_KEY)
    clean_env.setenv("QIANFAN_SK", SECRET_KEY)
    async with testing.run_emulator(asgi=True) as emu:
        http = emu.http_client(base_url=testing.ASGI_BASE_URL)
        async with wx.AsyncClient(base_url=emu.base_url, http_client=http) as client:
            with pytest.raises(wx.AuthenticationError) as caught:
                await client.chat("mpt30b", MESSAGES)
    error = caught.value
    assert error.hint is not None
    assert "the environment variables QIANFAN_AK and QIANFAN_SK" in error.hint
    assert_no_secret(str(error))
    line = error_line(error)  # what the CLI prints
    assert "QIANFAN_AK and QIANFAN_SK" in line and "same application" in line
    assert_no_secret(line)


async def test_cli_line_of_a_connection_failure_keeps_port_attempts_and_setting(
    closed_port: int,
) -> None:
    async with wx.AsyncClient(
        credentials=wx.OAuthCredentials(API_KEY, SECRET_KEY),
        base_url=f"http://127.0.0.1:{closed_port}",
        retry_policy=NO_WAIT,
    ) as client:
        with pytest.raises(wx.TransportError) as caught:
            await client.chat("mpt30b", MESSAGES)
    line = error_line(caught.value)
    assert f"127.0.0.1:{closed_port}" in line and "after 3 attempts" in line
    assert "base_url=" in line
    assert_no_secret(line)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the aiohttp transport's loop
@pytest.mark.parametrize("backend", ["httpx", "aiohttp"])
async def test_silence_in_the_middle_of_a_stream_says_what_to_change(backend: str) -> None:
    from .test_transports import always, client_of, scripted

    chunk = {"id": "as-s", "object": "chat.completion", "created": 1, "sentence_id": 0,
             "is_end": False, "is_truncated": False, "result": "one. ",
             "need_clear_history": False,
             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}  # fmt: skip
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 4000\r\n\r\n"
    first_chunk_then_silence = always(head + b"data: " + json.dumps(chunk).encode() + b"\n\n")
    async with scripted(first_chunk_then_silence) as server:
        client = client_of(server, backend, timeout=httpx.Timeout(5.0, read=0.2))
        async with client:
            seen = []
            with pytest.raises(wx.RequestTimeoutError) as caught:
                async with client.chat_stream("mpt30b", MESSAGES) as stream:
                    async for chunk in stream:
                        seen.append(chunk.result)
    assert seen == ["one. "]
    error = caught.value
    assert error.limit == "read"
    assert "timeout=SECONDS" in str(error) and "between two chunks" in str(error)
    assert_no_secret(str(error))
