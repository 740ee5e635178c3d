"""The ERNIE family on the chat route: its fields, function calls, and open answers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async._models import check_messages, decode

from .support import CHAT_URL, TOKEN, chat_body, make_client
from .test_streaming import RecordingStream, chunk, event_stream, sse

pytestmark = pytest.mark.anyio

WEATHER = wx.Function(
    name="get_weather",
    description="The weather of a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
CALL = {"name": "get_weather", "arguments": '{"city": "Beijing"}', "thoughts": "I should look"}


def function_call_body() -> dict[str, Any]:
    return chat_body("", function_call=CALL, finish_reason="function_call")


async def test_ernie_fields_are_sent_as_given(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    plain_function = {
        "name": "get_time",
        "description": "now",
        "parameters": {"type": "object"},
        "examples": [[{"role": "user", "content": "time?"}]],
    }
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        await client.chat(
            "mpt30b",
            [wx.user("hi")],
            system="You are terse.",
            max_output_tokens=64,
            response_format="json_object",
            disable_search=True,
            enable_citation=False,
            enable_trace=True,
            functions=[WEATHER, plain_function],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            user_ip="10.0.0.1",
            user_id="u-1",
        )
    assert json.loads(route.calls.last.request.content) == {
        "messages": [{"role": "user", "content": "hi"}],
        "user_id": "u-1",
        "system": "You are terse.",
        "max_output_tokens": 64,
        "response_format": "json_object",
        "disable_search": True,
        "enable_citation": False,
        "enable_trace": True,
        "functions": [
            {
                "name": "get_weather",
                "description": "The weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
            plain_function,
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "user_ip": "10.0.0.1",
        "stream": False,
    }


@pytest.mark.parametrize(
    ("keywords", "field"),
    [
        ({"system": 5}, "system"),
        ({"max_output_tokens": "64"}, "max_output_tokens"),
        ({"max_output_tokens": True}, "max_output_tokens"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"disable_search": 1}, "disable_search"),
        ({"enable_citation": "yes"}, "enable_citation"),
        ({"enable_trace": None, "enable_citation": 0}, "enable_citation"),
        ({"functions": WEATHER}, "functions"),
        ({"functions": [5]}, "functions[0]"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions[0]"),
        ({"functions": [{"name": " ", "description": "", "parameters": {}}]}, "functions[0].name"),
        (
            {"functions": [WEATHER, {"name": "f", "description": "", "parameters": "{}"}]},
            "functions[1].parameters",
        ),
        ({"tool_choice": "get_weather"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
        ({"user_ip": 127}, "user_ip"),
    ],
)
async def test_ernie_fields_are_checked_for_type_and_shape(
    router: respx.MockRouter, keywords: dict[str, Any], field: str
) -> None:
    route = router.route()
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ValidationError) as caught:
            await client.chat("mpt30b", [wx.user("hi")], **keywords)
        assert caught.value.field == field
        with pytest.raises(wx.ValidationError):
            client.chat_stream("mpt30b", [wx.user("hi")], **keywords)
        with pytest.raises(wx.ValidationError):
            await client.batch_chat("mpt30b", [[wx.user("hi")]], **keywords)
        with pytest.raises(wx.ValidationError):
            client.iter_batch_chat("mpt30b", [[wx.user("hi")]], **keywords)
    assert route.call_count == 0


def test_function_checks_its_own_fields() -> None:
    with pytest.raises(wx.ValidationError, match=r"Function\.name"):
        wx.Function("", "d", {})
    with pytest.raises(wx.ValidationError, match=r"Function\.parameters"):
        wx.Function("f", "d", "{}")  # type: ignore[arg-type]
    with pytest.raises(wx.ValidationError, match=r"Function\.examples"):
        wx.Function("f", "d", {}, examples="no")  # type: ignore[arg-type]
    example = [
        wx.user("weather?"),
        wx.Message("assistant", "", function_call=wx.FunctionCall("f", "{}")),
    ]
    assert wx.Function("f", "d", {}, examples=[example]).to_body()["examples"] == [
        [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "function_call": {"name": "f", "arguments": "{}"}},
        ]
    ]


# --- messages


def test_a_function_round_trip_conversation_is_accepted() -> None:
    messages = [
        wx.user("Weather in Beijing?"),
        wx.Message("assistant", "", function_call=wx.FunctionCall("get_weather", '{"city":"B"}')),
        wx.function_result("get_weather", '{"temp": 21}'),
    ]
    assert check_messages(messages) == [
        {"role": "user", "content": "Weather in Beijing?"},
        {
            "role": "assistant",
            "content": "",
            "function_call": {"name": "get_weather", "arguments": '{"city":"B"}'},
        },
        {"role": "function", "content": '{"temp": 21}', "name": "get_weather"},
    ]
    as_dicts = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "function_call": dict(CALL)},
        {"role": "function", "name": "get_weather", "content": "{}"},
    ]
    assert check_messages(as_dicts)[1]["function_call"] == CALL


@pytest.mark.parametrize(
    ("messages", "field", "rule"),
    [
        ([wx.function_result("f", "{}")], "messages[0].role", "must be 'user'"),
        ([{"role": "system", "content": "x"}], "messages[0].role", "'user', 'assistant' or"),
        (
            [wx.user("a"), wx.function_result("f", "{}"), wx.user("b")],
            "messages[1].role",
            "must be 'assistant'",
        ),
        ([wx.user("a"), wx.assistant("b"), wx.assistant("c")], "messages[2].role", "'function'"),
        ([wx.user("a"), wx.assistant(""), wx.user("c")], "messages[1].content", "non-blank"),
        (
            [wx.user("a"), wx.assistant("b"), {"role": "function", "content": "{}"}],
            "messages[2].name",
            "must name the function",
        ),
        (
            [wx.Message("user", "a", function_call=wx.FunctionCall("f", "{}"))],
            "messages[0].function_call",
            "only an assistant",
        ),
        (
            [
                wx.user("a"),
                {"role": "assistant", "content": "", "function_call": {"name": "f"}},
                wx.user("c"),
            ],
            "messages[1].function_call.arguments",
            "JSON text",
        ),
        (
            [
                wx.user("a"),
                {"role": "assistant", "content": None, "function_call": CALL},
                wx.user("c"),
            ],
            "messages[1].content",
            "may be empty",
        ),
    ],
)
def test_message_rules(messages: list[Any], field: str, rule: str) -> None:
    with pytest.raises(wx.ValidationError, match=rule) as caught:
        check_messages(messages)
    assert caught.value.field == field


def test_function_call_parse_arguments() -> None:
    assert wx.FunctionCall("f", '{"city": "Beijing"}').parse_arguments() == {"city": "Beijing"}
    for bad in ("[1, 2]", "not json", "", '"text"'):
        with pytest.raises(wx.ProtocolError, match="not a JSON object"):
            wx.FunctionCall("f", bad).parse_arguments()


# --- answers


async def test_function_call_answer_and_the_round_trip(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(
        side_effect=[
            httpx.Response(200, json=function_call_body()),
            httpx.Response(200, json=chat_body("It is 21 degrees in Beijing.")),
        ]
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        messages: list[wx.MessageLike] = [wx.user("Weather in Beijing?")]
        reply = await client.chat("mpt30b", messages, functions=[WEATHER])
        assert reply.finish_reason == "function_call" and reply.result == ""
        assert reply.function_call == wx.FunctionCall(
            "get_weather", '{"city": "Beijing"}', "I should look"
        )
        assert reply.function_call.parse_arguments() == {"city": "Beijing"}
        assert reply.message == wx.Message("assistant", "", function_call=reply.function_call)
        messages += [reply.message, wx.function_result("get_weather", '{"temp": 21}')]
        final = await client.chat("mpt30b", messages, functions=[WEATHER])
    assert final.result == "It is 21 degrees in Beijing." and final.function_call is None
    assert json.loads(route.calls.last.request.content)["messages"] == [
        {"role": "user", "content": "Weather in Beijing?"},
        {"role": "assistant", "content": "", "function_call": CALL},
        {"role": "function", "content": '{"temp": 21}', "name": "get_weather"},
    ]


def test_answers_keep_every_field_and_type_the_named_ones() -> None:
    body = chat_body(
        "x",
        finish_reason="length",
        is_truncated=True,
        flag=1,
        ban_round=-1,
        search_info={"search_results": [{"index": 1, "url": "https://a", "title": "A"}]},
        brand_new={"nested": [1, 2]},
    )
    reply = decode(body, wx.ChatResponse)
    assert reply.finish_reason == "length" and reply.is_truncated is True
    assert reply.flag == 1 and reply.ban_round == -1
    assert reply.search_info == wx.SearchInfo([wx.SearchResult(1, "https://a", "A")])
    assert reply.raw == body and reply.raw["brand_new"] == {"nested": [1, 2]}
    with pytest.raises(wx.ProtocolError, match="function_call"):
        decode(chat_body("", function_call={"arguments": "{}"}), wx.ChatResponse)
    with pytest.raises(wx.ProtocolError):
        decode(chat_body("", function_call="get_weather"), wx.ChatResponse)


async def test_a_function_call_in_any_chunk_reaches_the_collected_answer(
    router: respx.MockRouter,
) -> None:
    events = [chunk(0, "Let me look."), chunk(1, ""), chunk(2, "", end=True)]
    events[1]["function_call"] = CALL
    events[0]["search_info"] = {"search_results": []}
    events[2]["finish_reason"] = "function_call"
    router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream([sse(events)])))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", [wx.user("w?")], functions=[WEATHER]) as stream:
            chunks = [c async for c in stream]
            reply = await stream.collect()
    assert [c.function_call for c in chunks] == [None, wx.FunctionCall(**CALL), None]
    assert stream.function_call == wx.FunctionCall(**CALL)
    assert reply.function_call == wx.FunctionCall(**CALL)
    assert reply.search_info == wx.SearchInfo([])
    assert reply.finish_reason == "function_call" and reply.result == "Let me look."
    assert reply.message.function_call == wx.FunctionCall(**CALL)
