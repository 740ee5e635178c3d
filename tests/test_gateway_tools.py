"""Tools and Wenxin function calls both ways, the ERNIE fields, and embeddings (base64 and
float), through the `openai` package and the gateway, in front of the emulator."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import anyio
import openai
import pytest

from .gateway_support import Gateway, running_gateway

pytestmark = pytest.mark.anyio

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}  # no description, no parameters
ASK = [{"role": "user", "content": "What is the weather in Beijing? Please use get_weather."}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    async with running_gateway() as gateway:
        yield gateway


# --- tools


async def test_tools_round_trip(gw: Gateway) -> None:
    client = gw.openai()
    first = await client.chat.completions.create(
        model="ernie",
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and len(call.id) > 20
    assert call.type == "function"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "days"}

    # the answer goes back as OpenAI has it: the assistant turn, then the tool's result
    result = json.dumps({"temperature": 21})
    history = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    second = await client.chat.completions.create(
        model="ernie",
        messages=history,  # type: ignore[arg-type]
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
    )
    text = second.choices[0].message.content or ""
    # the emulator starts its answer with the function message it got: the right name
    assert text.startswith(f"get_weather returned {result}.")
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None


async def test_tool_call_ids_differ_between_answers(gw: Gateway) -> None:
    client = gw.openai()
    ids = set()
    for _ in range(3):
        reply = await client.chat.completions.create(model="ernie", messages=ASK, tools=[WEATHER])  # type: ignore[arg-type, list-item]
        ids.add((reply.choices[0].message.tool_calls or [])[0].id)
    assert len(ids) == 3


async def test_sync_client_tools_round_trip(gw: Gateway) -> None:
    def run() -> str:
        with gw.sync_openai() as client:
            first = client.chat.completions.create(model="ernie", messages=ASK, tools=[WEATHER])  # type: ignore[arg-type, list-item]
            message = first.choices[0].message
            [call] = message.tool_calls or []
            second = client.chat.completions.create(
                model="ernie",
                messages=[
                    *ASK,
                    message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
                ],  # type: ignore[arg-type]
                tools=[WEATHER],  # type: ignore[list-item]
            )
            return second.choices[0].message.content or ""

    assert (await anyio.to_thread.run_sync(run)).startswith("get_weather returned sunny.")


async def test_streamed_tool_call(gw: Gateway) -> None:
    stream = await gw.openai().chat.completions.create(
        model="ernie",
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    calls = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert len(calls) == 1
    [call] = calls[0]
    assert call.index == 0 and call.id and call.id.startswith("call_")
    assert call.function is not None and call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments or "")
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize(
    ("tool_choice", "called"),
    [
        ({"type": "function", "function": {"name": "get_time"}}, "get_time"),
        ("required", "get_time"),  # with a single tool: that one
        ("none", None),  # no functions go upstream, though the question names one
        ("auto", None),  # the question names no function
    ],
)
async def test_tool_choice(gw: Gateway, tool_choice: Any, called: str | None) -> None:
    question = "Tell me something about get_time" if tool_choice == "none" else "Hello there"
    reply = await gw.openai().chat.completions.create(
        model="ernie",
        messages=[{"role": "user", "content": question}],
        tools=[CLOCK],  # type: ignore[list-item]
        tool_choice=tool_choice,
    )
    calls = reply.choices[0].message.tool_calls
    if called is None:
        assert calls is None and reply.choices[0].message.content
    else:
        assert calls is not None and calls[0].function.name == called


async def test_a_tool_choice_naming_an_unsent_tool_is_400(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await gw.openai().chat.completions.create(
            model="ernie",
            messages=ASK,  # type: ignore[arg-type]
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    assert caught.value.response.json()["error"]["param"] == "tool_choice"


async def test_two_calls_in_one_assistant_turn_are_400(gw: Gateway) -> None:
    call = {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [
        *ASK,
        {"role": "assistant", "tool_calls": [{"id": "call_1", **call}, {"id": "call_2", **call}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        await gw.openai().chat.completions.create(model="ernie", messages=messages, tools=[WEATHER])  # type: ignore[arg-type, list-item]
    assert caught.value.response.json()["error"]["param"] == "messages[1].tool_calls"


# --- the ERNIE fields


async def test_system_max_tokens_and_json_mode(gw: Gateway) -> None:
    client = gw.openai()
    briefed = await client.chat.completions.create(
        model="ernie",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Hello"},
        ],
    )
    assert (briefed.choices[0].message.content or "").startswith(
        "[Be brief.\n\nAnswer in English.]"
    )
    cut = await client.chat.completions.create(
        model="ernie", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
    )
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens <= 5
    cut_new = await client.chat.completions.create(
        model="ernie", messages=[{"role": "user", "content": "Hello"}], max_completion_tokens=5
    )
    assert cut_new.choices[0].finish_reason == "length"
    as_json = await client.chat.completions.create(
        model="ernie",
        messages=[{"role": "user", "content": "Hello"}],
        response_format={"type": "json_object"},
    )
    assert "answer" in json.loads(as_json.choices[0].message.content or "")


# --- embeddings


async def test_embeddings_default_base64_are_the_clients_vectors(gw: Gateway) -> None:
    texts = ["the Great Wall", "the Forbidden City"]
    expected = (await gw.client.embed("bge_large_zh", texts)).vectors
    answer = await gw.openai().embeddings.create(model="bge", input=texts)
    assert answer.model == "bge"
    assert [item.index for item in answer.data] == [0, 1]
    for item, vector in zip(answer.data, expected, strict=True):
        assert len(item.embedding) == len(vector) == 1024
        assert item.embedding == pytest.approx(vector, abs=1e-6)  # float32 on the wire
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens


async def test_embeddings_float_are_exact(gw: Gateway) -> None:
    expected = (await gw.client.embed("bge_large_zh", ["one text"])).vectors
    answer = await gw.openai().embeddings.create(
        model="bge", input="one text", encoding_format="float"
    )
    assert [item.embedding for item in answer.data] == expected


async def test_embeddings_base64_on_the_wire_is_little_endian_float32(gw: Gateway) -> None:
    expected = (await gw.client.embed("bge_large_zh", ["wire"])).vectors[0]
    async with gw.http() as http:
        answer = await http.post(
            "/v1/embeddings", json={"model": "bge", "input": ["wire"], "encoding_format": "base64"}
        )
        plain = await http.post("/v1/embeddings", json={"model": "bge", "input": "wire"})
    body = answer.json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert len(raw) == 4 * len(expected)
    assert list(struct.unpack(f"<{len(expected)}f", raw)) == pytest.approx(expected, abs=1e-6)
    assert plain.json()["data"][0]["embedding"] == expected  # the API's default is float


async def test_many_texts_keep_their_order(gw: Gateway) -> None:
    texts = [f"text number {i}" for i in range(40)]  # three upstream requests
    expected = (await gw.client.embed("bge_large_zh", texts)).vectors
    answer = await gw.openai().embeddings.create(model="bge", input=texts, encoding_format="float")
    assert [item.index for item in answer.data] == list(range(40))
    assert [item.embedding for item in answer.data] == expected


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": [[1, 2, 3]]}, "input"),
        ({"input": []}, "input"),
        ({"input": ["fine", "  "]}, "input[1]"),
        ({"input": "x", "dimensions": 256}, "dimensions"),
    ],
)
async def test_invalid_embeddings_are_400(gw: Gateway, fields: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await gw.openai().embeddings.create(model="bge", **fields)
    assert caught.value.response.json()["error"]["param"] == param
