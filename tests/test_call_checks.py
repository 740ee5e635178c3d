"""What a call refuses before sending, and what it sends when it sends several requests:
header names and values, function definitions and calls as objects, misspelt message keys,
one request id per request, per-model texts per request, the fan-out of an embedding
call, and the function call a stream reports."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async._embeddings import EmbeddingResponse, embed_in_parts

from .support import BASE_URL, CHAT_URL, TOKEN, chat_body, make_client
from .test_open_calls import EMBED_URL, _calls, embed_body
from .test_streaming import RecordingStream, chunk, event_stream, sse

pytestmark = pytest.mark.anyio

TAO_URL = f"{BASE_URL}/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/tao_8k"


# --- headers and request ids (checked before anything is sent, the token request included)


@pytest.mark.parametrize(
    ("keywords", "field"),
    [
        ({"extra_headers": {"X\tN": "a"}}, "extra_headers"),
        ({"extra_headers": {"X(N)": "a"}}, "extra_headers"),
        ({"extra_headers": {"": "a"}}, "extra_headers"),
        ({"extra_headers": {"X": "a\x00b"}}, "extra_headers['X']"),
        ({"extra_headers": {"X": "a\x7fb"}}, "extra_headers['X']"),
        ({"extra_headers": {"X": "中"}}, "extra_headers['X']"),
        ({"request_id": "a\r\nX: y"}, "request_id"),
        ({"request_id": "a\x00"}, "request_id"),
        ({"request_id": "编号"}, "request_id"),
    ],
)
async def test_bad_header_names_and_values_are_refused_before_the_token_request(
    router: respx.MockRouter, keywords: dict[str, Any], field: str
) -> None:
    route = router.route()
    async with make_client() as client:  # OAuth: a token would be fetched first
        for call in _calls(client):
            with pytest.raises(wx.ValidationError) as caught:
                await call(**keywords)
            assert caught.value.field == field, call.__name__
    assert route.call_count == 0


async def test_a_header_value_is_never_quoted_back(router: respx.MockRouter) -> None:
    async with make_client() as client:
        with pytest.raises(wx.ValidationError) as caught:
            await client.chat("mpt30b", [wx.user("hi")], extra_headers={"X-Key": "s3cret\n"})
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(caught.value)
    assert not router.calls


async def test_a_tab_in_a_header_value_is_sent(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        await client.chat("mpt30b", [wx.user("hi")], extra_headers={"X-Note": "a\tb"})
    assert route.calls.last.request.headers["x-note"] == "a\tb"


# --- function calls and definitions


def _assistant_asking(call: object) -> list[Any]:
    return [wx.user("hi"), wx.Message("assistant", "", function_call=call), wx.user("ok")]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (wx.FunctionCall("f", {"a": 1}), "messages[1].function_call.arguments"),  # type: ignore[arg-type]
        (wx.FunctionCall(" ", "{}"), "messages[1].function_call.name"),
        (wx.FunctionCall("f", "{}", thoughts=3), "messages[1].function_call.thoughts"),  # type: ignore[arg-type]
        ({"name": "f", "arguments": "{}", "thought": "x"}, "messages[1].function_call['thought']"),
    ],
)
async def test_a_function_call_object_is_checked_as_a_mapping_is(
    router: respx.MockRouter, call: object, field: str
) -> None:
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ValidationError) as caught:
            await client.chat("mpt30b", _assistant_asking(call))
    assert caught.value.field == field
    assert not router.calls


@pytest.mark.parametrize(
    ("keywords", "field"),
    [
        ({"functions": [wx.Function("f", "d", {"a": object()})]}, "functions[0].parameters"),
        ({"functions": [wx.Function("f", "d", {"a": float("nan")})]}, "functions[0].parameters"),
        (
            {"functions": [wx.Function("f", "d", {}, responses={"r": {1, 2}})]},
            "functions[0].responses",
        ),
        (
            {"functions": [{"name": "f", "description": 3, "parameters": {}}]},
            "functions[0].description",
        ),
        (
            {"functions": [{"name": "f", "description": "d", "parameters": None}]},
            "functions[0].parameters",
        ),
        (
            {
                "functions": [
                    {
                        "name": "f",
                        "description": "d",
                        "parameters": {},
                        "examples": [[{"role": "user", "content": " "}]],
                    }
                ]
            },
            "functions[0].examples[0][0].content",
        ),
        (
            {"tool_choice": {"type": "function", "function": {"name": "f", "x": object()}}},
            "tool_choice.function",
        ),
        ({"tool_choice": {"type": "tool", "function": {"name": "f"}}}, "tool_choice"),
        ({"tool_choice": {"function": {"name": "f"}}}, "tool_choice"),
    ],
)
async def test_bad_functions_and_tool_choice_are_refused_before_anything_is_sent(
    router: respx.MockRouter, keywords: dict[str, Any], field: str
) -> None:
    route = router.route()
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ValidationError) as caught:
            await client.chat("mpt30b", [wx.user("hi")], **keywords)
        assert caught.value.field == field
        assert "Attribute(" not in str(caught.value)
        # a batch refuses them up front too, instead of failing every item alike
        with pytest.raises(wx.ValidationError) as caught:
            await client.batch_chat("mpt30b", [[wx.user("hi")]] * 3, **keywords)
        assert caught.value.field == field
    assert route.call_count == 0


def test_a_function_description_must_be_a_string() -> None:
    with pytest.raises(wx.ValidationError, match=r"Function\.description: must be a string"):
        wx.Function("f", 3, {})  # type: ignore[arg-type]
    with pytest.raises(wx.ValidationError, match=r"Function\.parameters"):
        wx.Function("f", "d", None)  # type: ignore[arg-type]


# --- messages given as mappings


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"role": "user", "content": "x", "nmae": "f"}, "messages[0]['nmae']"),
        ({"role": "user", "contents": "x"}, "messages[0]['contents']"),
    ],
)
async def test_an_unknown_key_of_a_message_is_refused(
    router: respx.MockRouter, message: dict[str, Any], field: str
) -> None:
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ValidationError) as caught:
            await client.chat("mpt30b", [message])  # type: ignore[list-item]
    assert caught.value.field == field
    assert not router.calls


async def test_a_misspelt_function_call_is_named_not_taken_for_blank_content(
    router: respx.MockRouter,
) -> None:
    turn = {"role": "assistant", "content": "", "functionCall": {"name": "f", "arguments": "{}"}}
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ValidationError) as caught:
            await client.chat("mpt30b", [wx.user("hi"), turn, wx.user("ok")])  # type: ignore[list-item]
    assert caught.value.field == "messages[1]['functionCall']"


# --- one request id per request


@pytest.mark.parametrize("name", ["batch_chat", "batch_complete", "batch_embed"])
async def test_a_batch_refuses_one_request_id_for_its_many_requests(
    router: respx.MockRouter, name: str
) -> None:
    route = router.route()
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        call = next(c for c in _calls(client) if c.__name__ == name)
        with pytest.raises(wx.ValidationError, match="a batch sends many") as caught:
            await call(request_id="mine")
    assert caught.value.field == "request_id"
    assert route.call_count == 0


async def test_an_embedding_in_several_requests_numbers_the_request_id(
    router: respx.MockRouter,
) -> None:
    route = router.post(EMBED_URL).mock(
        side_effect=lambda r: httpx.Response(200, json=embed_body(2))
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        await client.embed("embedding-v1", ["a", "b", "c", "d", "e", "f"], texts_per_request=2,
                           request_id="mine")  # fmt: skip
        ids = sorted(call.request.headers["request_id"] for call in route.calls)
        assert ids == ["mine-0", "mine-1", "mine-2"]
        route.side_effect = lambda r: httpx.Response(200, json=embed_body(1))
        await client.embed("embedding-v1", ["a"], request_id="alone")
        assert route.calls.last.request.headers["request_id"] == "alone"


# --- keywords that name the call they were given to


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("batch_chat", "batch_chat()"),
        ("batch_complete", "batch_complete()"),
        ("batch_embed", "batch_embed()"),
        ("embed", "embed()"),
        ("chat", "chat()"),
    ],
)
async def test_an_unknown_keyword_names_the_method_called(
    router: respx.MockRouter, name: str, shown: str
) -> None:
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        call = next(c for c in _calls(client) if c.__name__ == name)
        with pytest.raises(TypeError) as caught:
            await call(max_tokens=3)
        assert str(caught.value).startswith(f"{shown} got an unexpected keyword")
        with pytest.raises(TypeError) as caught:
            await call(model="ernie-4.0-8k")
        assert f"the first argument of {shown}" in str(caught.value)
        assert "client.chat(" not in str(caught.value) or name == "chat"
    assert not router.calls


# --- texts per request


async def test_tao_8k_takes_one_text_per_request_by_default(router: respx.MockRouter) -> None:
    route = router.post(TAO_URL).mock(
        side_effect=lambda r: httpx.Response(
            200, json=embed_body(len(json.loads(r.content)["input"]))
        )
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        answer = await client.embed("tao_8k", ["a", "b", "c"])
        assert len(answer.vectors) == 3
        assert [len(json.loads(c.request.content)["input"]) for c in route.calls] == [1, 1, 1]
        results = await client.batch_embed("tao_8k", ["a", "b"])
        assert all(r.ok for r in results)
        sizes = [len(json.loads(c.request.content)["input"]) for c in route.calls]
        assert sizes == [1, 1, 1, 1, 1]


async def test_other_models_take_sixteen_texts_per_request_by_default(
    router: respx.MockRouter,
) -> None:
    route = router.post(EMBED_URL).mock(
        side_effect=lambda r: httpx.Response(
            200, json=embed_body(len(json.loads(r.content)["input"]))
        )
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        await client.embed("embedding-v1", [f"t{i}" for i in range(20)])
    assert sorted(len(json.loads(c.request.content)["input"]) for c in route.calls) == [4, 16]


# --- the embedding batch: user_id reaches every request, refused texts name their place


async def test_an_embedding_batch_sends_its_user_id(router: respx.MockRouter) -> None:
    route = router.post(EMBED_URL).mock(
        side_effect=lambda r: httpx.Response(
            200, json=embed_body(len(json.loads(r.content)["input"]))
        )
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        results = [r async for r in client.iter_batch_embed(
            "embedding-v1", ["a", "b", "c"], texts_per_request=2, user_id="u-7")]  # fmt: skip
    assert len(results) == 3 and route.call_count == 2
    assert all(json.loads(c.request.content)["user_id"] == "u-7" for c in route.calls)


async def test_a_refused_text_of_an_embedding_batch_names_its_place(
    router: respx.MockRouter,
) -> None:
    router.post(EMBED_URL).mock(
        side_effect=lambda r: httpx.Response(
            200, json=embed_body(len(json.loads(r.content)["input"]))
        )
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        results = await client.batch_embed(
            "embedding-v1", ["a", "b", "c", " "], texts_per_request=2
        )
    failed = results[3]
    assert not failed.ok and isinstance(failed.error, wx.ValidationError)
    assert failed.error.field == "texts[3]"


# --- the fan-out of one embedding call


def _answer(part: list[str]) -> EmbeddingResponse:
    return EmbeddingResponse(id="as-1", created=1, data=[], usage=wx.Usage(0, 0, 0))


async def test_the_first_failed_part_stops_the_others() -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def send(part: list[str], number: int | None) -> EmbeddingResponse:
        assert number is not None
        started.append(number)
        if number == 0:
            await anyio.sleep(0.01)
            raise wx.ServerError("busy", code=336100)
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(number)
            raise
        raise AssertionError("unreachable")

    with anyio.fail_after(5):  # without the cancel, the other parts would wait for ever
        with pytest.raises(wx.ServerError):
            await embed_in_parts(["t"] * 4, 1, send, width=4)
    assert sorted(cancelled) == [1, 2, 3]


@pytest.mark.parametrize("width", [1, 3])
async def test_the_parts_run_at_most_width_at_once_and_start_lazily(width: int) -> None:
    in_flight = 0
    most = 0
    waiting_tasks: list[int] = []

    async def send(part: list[str], number: int | None) -> EmbeddingResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        waiting_tasks.append(len(anyio.get_running_tasks()))
        await anyio.sleep(0.001)
        in_flight -= 1
        return _answer(part)

    before = len(anyio.get_running_tasks())
    await embed_in_parts([f"t{i}" for i in range(40)], 2, send, width=width)
    assert most == width
    # the 20 parts are taken in turn by `width` workers, not started as 20 tasks at once
    assert max(waiting_tasks) - before <= width


async def test_an_own_http_client_still_caps_the_parts_in_flight(router: respx.MockRouter) -> None:
    in_flight = 0
    most = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await anyio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json=embed_body(1))

    router.post(EMBED_URL).mock(side_effect=answer)
    async with httpx.AsyncClient() as http:
        client = make_client(credentials=wx.StaticToken(TOKEN), http_client=http)
        async with client:
            await client.embed("embedding-v1", [f"t{i}" for i in range(150)], texts_per_request=1)
    assert most == 100  # the default width when nothing else bounds it


# --- a stream reports the latest function call


async def test_a_stream_reports_the_latest_function_call(router: respx.MockRouter) -> None:
    first = {**chunk(0, ""), "function_call": {"name": "draft", "arguments": "{}"}}
    last = {**chunk(1, "", end=True), "function_call": {"name": "final", "arguments": '{"a":1}'}}
    router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream([sse([first, last])])))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
            names = [c.function_call.name async for c in stream if c.function_call]
            assert names == ["draft", "final"]
            assert stream.function_call == wx.FunctionCall("final", '{"a":1}')
        router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream([sse([first, last])])))
        collected = await client.chat_stream("mpt30b", [wx.user("hi")]).collect()
    assert collected.function_call == wx.FunctionCall("final", '{"a":1}')


# --- small rules


async def test_a_non_finite_query_value_is_refused(router: respx.MockRouter) -> None:
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        for value in (float("nan"), float("inf")):
            with pytest.raises(wx.ValidationError) as caught:
                await client.chat("mpt30b", [wx.user("hi")], extra_query={"x": value})
            assert caught.value.field == "extra_query['x']"
    assert not router.calls


async def test_an_empty_answer_as_a_turn_is_refused_by_the_next_call(
    router: respx.MockRouter,
) -> None:
    router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body("")))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        reply = await client.chat("mpt30b", [wx.user("hi")])
        with pytest.raises(wx.ValidationError) as caught:
            await client.chat("mpt30b", [wx.user("hi"), reply.message, wx.user("again")])
    assert caught.value.field == "messages[1].content"
    assert len(router.calls) == 1


def test_public_classes_name_the_package_they_are_imported_from() -> None:
    for name in ("ChatChunk", "ChatResponse", "AsyncClient", "ValidationError", "BatchSuccess"):
        assert getattr(wx, name).__module__ == "baiduwx_async", name
    assert "baiduwx_async._" not in repr(wx.ChatChunk)
    # the annotations still resolve, so answers still decode
    assert wx.ChatResponse.__attrs_attrs__.usage.type is wx.Usage  # type: ignore[attr-defined]
