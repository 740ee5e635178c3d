"""Validation before sending (one test per rule, nothing on the wire) and response decoding."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async._models import ChatParams, check_endpoint, decode

from .support import CHAT_URL, chat_body, make_client

pytestmark = pytest.mark.anyio

GOOD = [{"role": "user", "content": "hello"}]

CHAT_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, chat() keyword arguments, field named, part of the rule)
    ("temperature zero", {"temperature": 0}, "temperature", "(0, 1]"),
    ("temperature above 1", {"temperature": 1.01}, "temperature", "(0, 1]"),
    ("temperature a bool", {"temperature": True}, "temperature", "number"),
    ("temperature NaN", {"temperature": float("nan")}, "temperature", "number"),
    ("top_p below 0", {"top_p": -0.1}, "top_p", "[0, 1]"),
    ("top_p above 1", {"top_p": 1.5}, "top_p", "[0, 1]"),
    ("penalty below 1", {"penalty_score": 0.99}, "penalty_score", "[1, 2]"),
    ("penalty above 2", {"penalty_score": 2.01}, "penalty_score", "[1, 2]"),
    ("top_k zero", {"top_k": 0}, "top_k", "positive integer"),
    ("top_k float", {"top_k": 1.5}, "top_k", "positive integer"),
    ("stop five words", {"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ("stop word too long", {"stop": ["x" * 21]}, "stop[0]", "at most 20"),
    ("stop word not a string", {"stop": ["ok", 3]}, "stop[1]", "string"),
    ("metadata 17 pairs", {"metadata": {str(i): "v" for i in range(17)}}, "metadata", "16"),
    ("metadata non-string value", {"metadata": {"k": 1}}, "metadata['k']", "strings"),
    ("user_id not a string", {"user_id": 42}, "user_id", "string"),
    ("messages empty", {"messages": []}, "messages", "empty"),
    ("messages a string", {"messages": "hello"}, "messages", "list"),
    (
        "messages even",
        {"messages": [*GOOD, {"role": "assistant", "content": "hi"}]},
        "messages",
        "odd",
    ),
    (
        "first role assistant",
        {"messages": [{"role": "assistant", "content": "x"}]},
        "messages[0].role",
        "starting with user",
    ),
    (
        "roles not alternating",
        {"messages": [*GOOD, {"role": "user", "content": "x"}, {"role": "user", "content": "y"}]},
        "messages[1].role",
        "alternate",
    ),
    (
        "content blank",
        {"messages": [{"role": "user", "content": "  \n"}]},
        "messages[0].content",
        "non-blank",
    ),
    ("content missing", {"messages": [{"role": "user"}]}, "messages[0].content", "non-blank"),
    (
        "content not a string",
        {"messages": [{"role": "user", "content": 5}]},
        "messages[0].content",
        "string",
    ),
    ("message not a mapping", {"messages": [42]}, "messages[0]", "Message"),
    (
        "total too long",
        {"messages": [wx.user("x" * 2400), wx.assistant("y" * 2), wx.user("z" * 2399)]},
        "messages",
        "4800",
    ),
    ("endpoint with slash", {"endpoint": "a/b"}, "endpoint", "no '/'"),
    ("endpoint dot-dot", {"endpoint": ".."}, "endpoint", "'.'"),
    ("endpoint empty", {"endpoint": ""}, "endpoint", "not empty"),
    ("endpoint with query", {"endpoint": "x?access_token=1"}, "endpoint", "path segment"),
    ("per-call timeout negative", {"timeout": -1}, "timeout", "positive"),
]


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"), [c[1:] for c in CHAT_CASES], ids=[c[0] for c in CHAT_CASES]
)
async def test_chat_rejects_bad_input_before_sending(
    router: respx.MockRouter, kwargs: dict[str, Any], field: str, rule: str
) -> None:
    route = router.route().mock(return_value=httpx.Response(200, json=chat_body()))
    arguments = {"endpoint": "mpt30b", "messages": GOOD, **kwargs}
    async with make_client() as client:
        with pytest.raises(wx.ValidationError) as caught:
            await client.chat(arguments.pop("endpoint"), arguments.pop("messages"), **arguments)
    assert caught.value.field == field
    assert rule in caught.value.rule
    assert field in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert route.call_count == 0, "nothing may be sent for invalid input"


@pytest.mark.parametrize("prompt", ["", "   ", None, 12, b"bytes"])
async def test_complete_rejects_bad_prompt_before_sending(
    router: respx.MockRouter, prompt: Any
) -> None:
    route = router.route().mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client() as client:
        with pytest.raises(wx.ValidationError, match="prompt"):
            await client.complete("pythia12b", prompt)
    assert route.call_count == 0


async def test_complete_checks_parameters_too(router: respx.MockRouter) -> None:
    route = router.route().mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client() as client:
        with pytest.raises(wx.ValidationError, match="temperature"):
            await client.complete("pythia12b", "hi", temperature=0)
    assert route.call_count == 0


async def test_valid_edges_are_sent_as_given(
    router: respx.MockRouter, token_route: respx.Route
) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    messages = [wx.user("q1"), {"role": "assistant", "content": "a1"}, wx.user("x" * 4796)]
    async with make_client() as client:
        await client.chat(
            "mpt30b",
            messages,
            temperature=1,
            top_p=0,
            penalty_score=2,
            top_k=1,
            stop=["a" * 20] * 4,
            metadata={str(i): "v" for i in range(16)},
            user_id="u-1",
        )
    sent = route.calls.last.request
    import json

    body = json.loads(sent.content)
    assert body["messages"][1] == {"role": "assistant", "content": "a1"}
    assert body["temperature"] == 1 and body["top_p"] == 0 and body["penalty_score"] == 2
    assert body["stop"] == ["a" * 20] * 4 and len(body["metadata"]) == 16
    assert body["stream"] is False
    assert "top_k" in body and "system" not in body


async def test_length_check_can_be_left_to_the_server(
    router: respx.MockRouter, token_route: respx.Route
) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client(max_input_chars=None) as client:
        await client.chat("mpt30b", [wx.user("x" * 6000)])
    assert route.call_count == 1


def test_only_set_parameters_go_in_the_body() -> None:
    assert ChatParams().body_fields() == {}
    assert ChatParams(top_k=3, stop="###").body_fields() == {"top_k": 3, "stop": ["###"]}


@pytest.mark.parametrize("name", ["mpt30b", "ernie-bot_4.0", "sqlcoder_7b", "A1~x"])
def test_endpoint_names_accepted(name: str) -> None:
    assert check_endpoint(name) == name


def test_response_keeps_raw_and_ignores_unknown_fields() -> None:
    data = chat_body(finish_reason="normal", new_field={"nested": [1]}, ban_round=-1)
    reply = decode(data, wx.ChatResponse, request_id="rid")
    assert reply.raw is data and reply.raw["new_field"] == {"nested": [1]}
    assert reply.finish_reason == "normal" and reply.ban_round == -1
    assert reply.usage == wx.Usage(2, 8, 10)
    assert reply.request_id == "rid"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"created": "1710917007"}, "created"),
        ({"is_truncated": "false"}, "is_truncated"),
        (
            {"usage": {"prompt_tokens": True, "completion_tokens": 1, "total_tokens": 1}},
            "prompt_tokens",
        ),
        ({"result": None}, "result"),
        ({"usage": None}, "usage"),
        ({"function_call": [1, 2]}, "function_call"),
    ],
)
def test_wrong_types_are_protocol_errors(change: dict[str, Any], where: str) -> None:
    with pytest.raises(wx.ProtocolError, match=where):
        decode({**chat_body(), **change}, wx.ChatResponse)


def test_missing_fields_are_protocol_errors() -> None:
    data = chat_body()
    del data["usage"]
    with pytest.raises(wx.ProtocolError, match="usage"):
        decode(data, wx.ChatResponse)
    with pytest.raises(wx.ProtocolError, match="JSON object"):
        decode([data], wx.ChatResponse)


def test_rate_limit_headers_parsed_leniently() -> None:
    headers = httpx.Headers(
        {
            "X-Ratelimit-Limit-Requests": "300.0",
            "X-Ratelimit-Limit-Tokens": "300000",
            "X-Ratelimit-Remaining-Requests": "garbage",
        }
    )
    info = wx.RateLimitInfo.from_headers(headers)
    assert info == wx.RateLimitInfo(300, 300000, None, None)
