"""The client's plumbing: bodies, headers, ids, timeouts, connection ownership, logs."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx

import baiduwx_async as wx

from .support import (
    API_KEY,
    BASE_URL,
    CHAT_URL,
    COMPLETIONS_URL,
    SECRET_KEY,
    TOKEN,
    chat_body,
    completion_body,
    error_body,
    make_client,
)

pytestmark = pytest.mark.anyio


async def test_chat_sends_the_documented_body(
    router: respx.MockRouter, token_route: respx.Route
) -> None:
    route = router.post(CHAT_URL).mock(
        return_value=httpx.Response(
            200,
            json=chat_body(),
            headers={
                "X-Baidu-Request-Id": "echoed-1",
                "X-Ratelimit-Limit-Requests": "300",
                "X-Ratelimit-Remaining-Tokens": "299971",
            },
        )
    )
    async with make_client() as client:
        reply = await client.chat(
            "mpt30b",
            [{"role": "user", "content": "Please introduce The Great Wall"}],
            temperature=0.7,
            stop=["\n\n"],
        )
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "messages": [{"role": "user", "content": "Please introduce The Great Wall"}],
        "temperature": 0.7,
        "stop": ["\n\n"],
        "stream": False,
    }
    assert request.url.params["access_token"] == TOKEN
    assert isinstance(reply, wx.ChatResponse)
    assert reply.result == "你好！有什么我可以帮助你的吗？"
    assert reply.usage.total_tokens == 10
    assert reply.request_id == "echoed-1"
    assert reply.ratelimit.limit_requests == 300 and reply.ratelimit.remaining_tokens == 299971


async def test_complete_sends_prompt_to_the_completions_route(
    router: respx.MockRouter, token_route: respx.Route
) -> None:
    route = router.post(COMPLETIONS_URL).mock(
        return_value=httpx.Response(200, json=completion_body())
    )
    async with make_client() as client:
        done = await client.complete("pythia12b", "Introduce the city Beijing", top_k=5)
    assert json.loads(route.calls.last.request.content) == {
        "prompt": "Introduce the city Beijing",
        "top_k": 5,
        "stream": False,
    }
    assert isinstance(done, wx.CompletionResponse)
    assert done.object == "completion"


async def test_request_id_is_sent_and_kept(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        generated = await client.chat("mpt30b", [wx.user("hi")])
        chosen = await client.chat("mpt30b", [wx.user("hi")], request_id="my-trace-1")
    first, second = (call.request.headers["request_id"] for call in route.calls)
    assert (
        first.startswith(f"baiduwx_async-{wx.__version__}-") and len(first.rsplit("-", 1)[1]) == 16
    )
    assert generated.request_id == first, "without an echo the id we sent is kept"
    assert second == "my-trace-1" and chosen.request_id == "my-trace-1"


async def test_retries_keep_the_request_id(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(
        side_effect=[httpx.Response(200, json=error_body(2)), httpx.Response(200, json=chat_body())]
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        await client.chat("mpt30b", [wx.user("hi")])
    ids = {call.request.headers["request_id"] for call in route.calls}
    assert len(ids) == 1


async def test_per_call_timeout_reaches_the_transport(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client(credentials=wx.StaticToken(TOKEN), timeout=42) as client:
        await client.chat("mpt30b", [wx.user("hi")])
        await client.chat("mpt30b", [wx.user("hi")], timeout=httpx.Timeout(3.0))
    default, custom = (call.request.extensions["timeout"] for call in route.calls)
    assert default["read"] == 42 and default["connect"] == 10
    assert custom == httpx.Timeout(3.0).as_dict()


async def test_caller_http_client_is_used_and_left_open(router: respx.MockRouter) -> None:
    router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with httpx.AsyncClient() as http:
        async with make_client(credentials=wx.StaticToken(TOKEN), http_client=http) as client:
            await client.chat("mpt30b", [wx.user("hi")])
        assert not http.is_closed
    assert http.is_closed


async def test_a_closed_client_refuses_calls_before_sending(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        assert not client.is_closed
        await client.chat("mpt30b", [wx.user("hi")])
    assert client.is_closed
    with pytest.raises(RuntimeError, match="client is closed"):
        await client.chat("mpt30b", [wx.user("hi")])
    assert route.call_count == 1


async def test_debug_log_and_httpx_log_carry_no_secret(
    router: respx.MockRouter, token_route: respx.Route, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    router.post(CHAT_URL).mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=chat_body())]
    )
    # With a caller's http_client, httpx's own client logs each request URL at INFO.
    async with httpx.AsyncClient() as http, make_client(http_client=http) as client:
        await client.chat("mpt30b", [wx.user("hi")])
    records = [r for r in caplog.records if r.name in ("baiduwx_async", "httpx")]
    assert any(r.name == "httpx" for r in records), "httpx logged its requests"
    assert any("attempt 2" in r.getMessage() for r in records if r.name == "baiduwx_async")
    for secret in (TOKEN, SECRET_KEY, API_KEY):
        assert secret not in caplog.text
    assert "access_token=***" in caplog.text


def test_bad_client_settings() -> None:
    with pytest.raises(wx.ValidationError, match="base_url"):
        wx.AsyncClient(credentials=wx.StaticToken(TOKEN), base_url="ftp://x")
    with pytest.raises(wx.ValidationError, match="timeout"):
        wx.AsyncClient(credentials=wx.StaticToken(TOKEN), timeout=0)
    with pytest.raises(wx.ValidationError, match="credentials"):
        wx.AsyncClient(credentials=("ak", "sk"))  # type: ignore[arg-type]
    with pytest.raises(wx.ValidationError, match="http_backend"):
        wx.AsyncClient(credentials=wx.StaticToken(TOKEN), http_backend="curl")  # type: ignore[arg-type]


async def test_base_url_trailing_slash_and_path_are_kept(router: respx.MockRouter) -> None:
    route = router.post(
        "https://gateway.test/prefix/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt30b"
    ).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client(
        credentials=wx.StaticToken(TOKEN), base_url="https://gateway.test/prefix/"
    ) as client:
        await client.chat("mpt30b", [wx.user("hi")])
    assert route.call_count == 1
    assert BASE_URL not in str(route.calls.last.request.url)


def test_building_a_client_switches_on_the_httpx_log_redaction() -> None:
    httpx_logger = logging.getLogger("httpx")
    ours = [f for f in httpx_logger.filters if type(f).__name__ == "_RedactTokens"]
    for f in ours:
        httpx_logger.removeFilter(f)
    try:
        make_client()
        assert [type(f).__name__ for f in httpx_logger.filters].count("_RedactTokens") == 1
        make_client()
        assert [type(f).__name__ for f in httpx_logger.filters].count("_RedactTokens") == 1
    finally:
        if not any(type(f).__name__ == "_RedactTokens" for f in httpx_logger.filters):
            for f in ours:
                httpx_logger.addFilter(f)
