"""The ERNIE chat fields and function calls on the emulator, over httpx.ASGITransport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from baiduwx_async.emulator import Emulator, EmulatorConfig, count_tokens

from .test_emulator import CHAT, MESSAGES, FakeClock, assert_error, assert_ok, call
from .test_emulator_stream import ENVELOPE, RATE_HEADERS, data_chunks

pytestmark = pytest.mark.anyio

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "The weather of a city",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "detailed": {"type": "boolean"},
            "hours": {"type": "array", "items": {"type": "number"}},
            "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
        },
        "required": ["location"],
    },
}
TIME: dict[str, Any] = {
    "name": "get_time",
    "description": "The time of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ASK_WEATHER = [{"role": "user", "content": "Use get_weather for Beijing"}]


def function_turns(result: str = '{"temperature": 25}') -> list[dict[str, Any]]:
    call_turn = {"name": "get_weather", "arguments": '{"location": "Beijing"}'}
    return [
        *ASK_WEATHER,
        {"role": "assistant", "content": "", "function_call": call_turn},
        {"role": "function", "name": "get_weather", "content": result},
    ]


@pytest.fixture
def emu(clock: FakeClock) -> Emulator:
    return Emulator(EmulatorConfig(seed=13), clock=clock)


async def chat(client: httpx.AsyncClient, token: str, **body: Any) -> dict[str, Any]:
    return assert_ok(await call(client, token, {"messages": MESSAGES, **body}))


# --- fields that shape the answer ------------------------------------------------------------


async def test_system_shapes_the_answer(client: httpx.AsyncClient, token: str) -> None:
    plain = await chat(client, token)
    body = await chat(client, token, system="You are a helpful pirate")
    assert body["result"].startswith("[You are a helpful pirate] ")
    assert body["finish_reason"] == "normal"
    assert body["is_truncated"] is False
    # the system prompt counts as input, and picks other sentences
    assert body["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"] + 5
    assert body["result"].removeprefix("[You are a helpful pirate] ") != plain["result"]
    again = await chat(client, token, system="You are a helpful pirate")
    assert again["result"] == body["result"]
    assert "finish_reason" not in plain  # a seed-model answer keeps its documented keys


async def test_max_output_tokens_truncates(client: httpx.AsyncClient, token: str) -> None:
    whole = await chat(client, token, max_output_tokens=2048)
    assert whole["is_truncated"] is False
    assert whole["finish_reason"] == "normal"
    assert whole["usage"]["completion_tokens"] > 5
    body = await chat(client, token, max_output_tokens=5)
    assert body["is_truncated"] is True
    assert body["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5 == count_tokens(body["result"])
    assert whole["result"].startswith(body["result"])
    assert list(body) == [
        "id", "object", "created", "result", "is_truncated", "need_clear_history",
        "finish_reason", "usage",
    ]  # fmt: skip


async def test_max_output_tokens_truncates_a_stream(client: httpx.AsyncClient, token: str) -> None:
    whole = await chat(client, token, max_output_tokens=7)
    response = await call(
        client, token, {"messages": MESSAGES, "max_output_tokens": 7, "stream": True}
    )
    chunks = data_chunks(response.text)
    assert "".join(c["result"] for c in chunks) == whole["result"]
    assert chunks[-1]["is_end"] is True
    assert chunks[-1]["is_truncated"] is True
    assert chunks[-1]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 7
    assert all(c["finish_reason"] == "normal" and not c["is_truncated"] for c in chunks[:-1])


async def test_json_object_answers(client: httpx.AsyncClient, token: str) -> None:
    body = await chat(client, token, response_format="json_object", system="Be terse")
    answer = json.loads(body["result"])
    assert isinstance(answer, dict)
    assert answer["answer"].startswith("[Be terse] ")
    text = await chat(client, token, response_format="text")
    with pytest.raises(json.JSONDecodeError, match="Expecting value"):
        json.loads(text["result"])


async def test_switches_and_other_fields_are_accepted(
    client: httpx.AsyncClient, token: str
) -> None:
    body = await chat(
        client,
        token,
        disable_search=True,
        enable_citation=False,
        enable_trace=True,
        user_ip="127.0.0.1",
        enable_system_memory=False,
        system_memory_id="sm-1",
    )
    assert body["finish_reason"] == "normal"


LONG_SYSTEM = "s" * 1025

INVALID: list[tuple[dict[str, Any], int, str]] = [
    ({"system": 3}, 336001, "Invalid Argument"),
    ({"system": LONG_SYSTEM}, 336104, "the length of system must be at most 1024"),
    ({"max_output_tokens": "5"}, 336001, "Invalid Argument"),
    ({"max_output_tokens": True}, 336001, "Invalid Argument"),
    ({"max_output_tokens": 1}, 336003, "max_output_tokens must be in [2, 2048]"),
    ({"max_output_tokens": 2049}, 336003, "max_output_tokens"),
    ({"response_format": {"type": "json_object"}}, 336001, "Invalid Argument"),
    ({"response_format": "yaml"}, 336003, "response_format"),
    ({"disable_search": "yes"}, 336001, "Invalid Argument"),
    ({"enable_citation": 1}, 336001, "Invalid Argument"),
    ({"enable_trace": None}, 336001, "Invalid Argument"),
    ({"user_ip": 127}, 336001, "Invalid Argument"),
    ({"functions": WEATHER}, 336001, "Invalid Argument"),
    ({"functions": ["get_weather"]}, 336001, "Invalid Argument"),
    ({"functions": [{**WEATHER, "name": ""}]}, 336003, "functions[0].name"),
    ({"functions": [WEATHER, WEATHER]}, 336003, "functions[1].name 'get_weather' is not unique"),
    ({"functions": [{**WEATHER, "description": None}]}, 336003, "functions[0].description"),
    ({"functions": [{"name": "f", "description": "d"}]}, 336003, "functions[0].parameters"),
    ({"functions": [{**WEATHER, "responses": []}]}, 336003, "functions[0].responses"),
    ({"functions": [{**WEATHER, "examples": [{}]}]}, 336003, "functions[0].examples"),
    ({"functions": [WEATHER], "tool_choice": "get_weather"}, 336001, "Invalid Argument"),
    ({"functions": [WEATHER], "tool_choice": {"type": "tool"}}, 336003, "tool_choice must be"),
    (
        {"functions": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
        336003,
        "tool_choice names 'x', which is not in functions",
    ),
]


@pytest.mark.parametrize(("fields", "code", "text"), INVALID)
async def test_field_checks(
    client: httpx.AsyncClient, token: str, fields: dict[str, Any], code: int, text: str
) -> None:
    response = await call(client, token, {"messages": MESSAGES, **fields})
    assert_error(response, code)
    assert text in response.json()["error_msg"]


async def test_limits_are_configurable(
    client: httpx.AsyncClient, emu: Emulator, token: str
) -> None:
    emu.configure(max_system_chars=2000, max_output_tokens_limit=4096)
    assert_ok(await call(client, token, {"messages": MESSAGES, "system": LONG_SYSTEM}))
    assert_ok(await call(client, token, {"messages": MESSAGES, "max_output_tokens": 4096}))


# --- function turns --------------------------------------------------------------------------

INVALID_TURNS: list[tuple[list[dict[str, Any]], int, str]] = [
    (
        [{"role": "function", "name": "f", "content": "{}"}],
        336003,
        "the role of messages[0] must be user",
    ),
    (
        [*ASK_WEATHER, {"role": "function", "name": "f", "content": "x"}, *MESSAGES],
        336003,
        "the role of messages[1] must be assistant",
    ),
    (
        [*ASK_WEATHER, {"role": "assistant", "content": "a"}, {"role": "system", "content": "x"}],
        336003,
        "the role of messages[2] must be user or function",
    ),
    (
        [*ASK_WEATHER, {"role": "assistant", "content": "a"}, {"role": "function", "content": "x"}],
        336003,
        "messages[2] of role function must have a name",
    ),
    (
        [*ASK_WEATHER, {"role": "assistant", "content": " "}, *MESSAGES],
        336003,
        "the content of messages[1] must not be blank",
    ),
    (
        [*ASK_WEATHER, {"role": "assistant", "function_call": {"name": "f"}}, *MESSAGES],
        336003,
        "the function_call of messages[1] needs a name and arguments",
    ),
    (
        [{"role": "user", "content": "x", "function_call": {"name": "f", "arguments": "{}"}}],
        336003,
        "only assistant messages may have a function_call",
    ),
    ([{"role": "user", "content": "x", "name": 5}], 336001, "Invalid Argument"),
    (
        [*ASK_WEATHER, {"role": "assistant", "content": "", "function_call": "f"}, *MESSAGES],
        336001,
        "Invalid Argument",
    ),
    ([*ASK_WEATHER, {"role": "assistant"}, *MESSAGES], 336001, "Invalid Argument"),
]


@pytest.mark.parametrize(("messages", "code", "text"), INVALID_TURNS)
async def test_turn_checks(
    client: httpx.AsyncClient, token: str, messages: list[dict[str, Any]], code: int, text: str
) -> None:
    response = await call(client, token, {"messages": messages})
    assert_error(response, code)
    assert text in response.json()["error_msg"]


async def test_function_turns_are_accepted(client: httpx.AsyncClient, token: str) -> None:
    turns = function_turns()
    # an assistant turn that calls a function may leave its content out entirely
    del turns[1]["content"]
    assert_ok(await call(client, token, {"messages": turns}))
    assert_ok(
        await call(
            client, token, {"messages": [*turns, {"role": "assistant", "content": "ok"}, *MESSAGES]}
        )
    )


# --- function calls --------------------------------------------------------------------------


async def test_a_named_function_is_called(client: httpx.AsyncClient, token: str) -> None:
    body = assert_ok(
        await call(client, token, {"messages": ASK_WEATHER, "functions": [TIME, WEATHER]})
    )
    assert body["result"] == ""
    assert body["finish_reason"] == "function_call"
    assert body["is_truncated"] is False
    function_call = body["function_call"]
    assert list(function_call) == ["name", "arguments", "thoughts"]
    assert function_call["name"] == "get_weather"
    assert isinstance(function_call["thoughts"], str) and function_call["thoughts"]
    arguments = json.loads(function_call["arguments"])
    assert list(arguments) == ["location", "days", "unit", "detailed", "hours", "where"]
    assert isinstance(arguments["location"], str)
    assert isinstance(arguments["days"], int)
    assert arguments["unit"] == "celsius"
    assert isinstance(arguments["detailed"], bool)
    assert isinstance(arguments["hours"], list) and isinstance(arguments["hours"][0], float)
    assert list(arguments["where"]) == ["lat"]
    usage = body["usage"]
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    again = assert_ok(
        await call(client, token, {"messages": ASK_WEATHER, "functions": [TIME, WEATHER]})
    )
    assert again["function_call"] == function_call


async def test_no_function_named_means_text(client: httpx.AsyncClient, token: str) -> None:
    body = await chat(client, token, functions=[WEATHER, TIME])
    assert body["result"]
    assert body["finish_reason"] == "normal"
    assert "function_call" not in body


async def test_tool_choice_forces_a_function(client: httpx.AsyncClient, token: str) -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    body = await chat(client, token, functions=[WEATHER, TIME], tool_choice=choice)
    assert body["function_call"]["name"] == "get_time"
    assert list(json.loads(body["function_call"]["arguments"])) == ["city"]
    # even when the user names another one
    body = assert_ok(
        await call(
            client,
            token,
            {"messages": ASK_WEATHER, "functions": [WEATHER, TIME], "tool_choice": choice},
        )
    )
    assert body["function_call"]["name"] == "get_time"


async def test_a_function_result_is_used(client: httpx.AsyncClient, token: str) -> None:
    body = assert_ok(
        await call(client, token, {"messages": function_turns(), "functions": [WEATHER]})
    )
    assert body["result"].startswith('get_weather returned {"temperature": 25}. ')
    assert body["finish_reason"] == "normal"
    assert "function_call" not in body
    other = assert_ok(await call(client, token, {"messages": function_turns('{"temperature": 3}')}))
    assert other["result"].startswith('get_weather returned {"temperature": 3}. ')


async def test_a_function_call_in_a_stream(client: httpx.AsyncClient, token: str) -> None:
    plain = assert_ok(await call(client, token, {"messages": ASK_WEATHER, "functions": [WEATHER]}))
    response = await call(
        client, token, {"messages": ASK_WEATHER, "functions": [WEATHER], "stream": True}
    )
    assert response.headers["content-type"] == "text/event-stream"
    assert all(name in response.headers for name in RATE_HEADERS)
    chunks = data_chunks(response.text)
    last = chunks[-1]
    assert last["is_end"] is True
    assert last["result"] == ""
    assert last["function_call"] == plain["function_call"]
    assert last["finish_reason"] == "function_call"
    assert list(last) == [*ENVELOPE[:-2], "function_call", "finish_reason", "usage"]
    assert last["usage"] == plain["usage"]


async def test_a_function_result_in_a_stream(client: httpx.AsyncClient, token: str) -> None:
    plain = assert_ok(await call(client, token, {"messages": function_turns()}))
    response = await call(client, token, {"messages": function_turns(), "stream": True})
    chunks = data_chunks(response.text)
    assert "".join(c["result"] for c in chunks) == plain["result"]
    assert all("function_call" not in c for c in chunks)
    assert [list(c) for c in chunks] == [ENVELOPE] * len(chunks)


async def test_function_calls_count_against_limits(
    client: httpx.AsyncClient, emu: Emulator, token: str
) -> None:
    emu.configure(tpm=10**6)
    body = {"messages": ASK_WEATHER, "functions": [WEATHER]}
    response = await call(client, token, body, headers={"Request_id": "fc-1"})
    answer = assert_ok(response)
    assert response.headers["x-baidu-request-id"] == "fc-1"
    used = 10**6 - int(response.headers["x-ratelimit-remaining-tokens"])
    assert used == answer["usage"]["total_tokens"]
    emu.configure(faults={"error_336100": 1.0})
    assert_error(await call(client, token, body), 336100)
    stats = emu.stats()
    assert stats["endpoints"]["chat/mpt30b"] == {"ok": 1, "error_336100": 1}
    assert stats["completion_tokens"] == answer["usage"]["completion_tokens"]
    assert CHAT.endswith("/chat/mpt30b")


async def test_citations_come_with_search_info(client: httpx.AsyncClient, token: str) -> None:
    plain = await chat(client, token)
    body = await chat(client, token, enable_citation=True)
    first, _, rest = plain["result"].partition(". ")
    assert body["result"] == f"{first}.^[1]^ {rest}"
    (result,) = body["search_info"]["search_results"]
    assert list(result) == ["index", "url", "title"]
    assert result["index"] == 1
    assert result["url"].startswith("https://search.emulator.invalid/")
    assert list(body).index("search_info") == list(body).index("finish_reason") - 1
    assert "search_info" not in await chat(client, token, enable_citation=False)
    assert "search_info" not in await chat(client, token, enable_citation=True, disable_search=True)
    response = await call(
        client, token, {"messages": MESSAGES, "enable_citation": True, "stream": True}
    )
    chunks = data_chunks(response.text)
    assert chunks[-1]["search_info"] == body["search_info"]
    assert all("search_info" not in c for c in chunks[:-1])
    assert "".join(c["result"] for c in chunks) == body["result"]
