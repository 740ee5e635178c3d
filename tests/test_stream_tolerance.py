"""What a stream tolerates: everything a lenient reader can still make an answer of.

`sentence_id` is information (repeated, skipped or going back, the chunks are kept in
the order they came), fields the answer does not depend on may be missing or of another
type, and the framing may vary (comments, CRLF, `[DONE]`). What really breaks a stream
(a chunk that is not a JSON object, a `result` that is not text, a body that ends with no
end marker) is still a `StreamError`: see test_streaming.py.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async._chunks import chunk_builder

from .support import CHAT_URL, COMPLETIONS_URL, TOKEN, make_client
from .test_streaming import RecordingStream, chunk, event_stream, sse

pytestmark = pytest.mark.anyio

MESSAGES = [wx.user("hi")]


def serve(router: respx.MockRouter, body: bytes, url: str = CHAT_URL) -> RecordingStream:
    recorder = RecordingStream([body])
    router.post(url).mock(return_value=event_stream(recorder))
    return recorder


def stream_of(sentence_ids: list[int]) -> bytes:
    last = len(sentence_ids) - 1
    return sse(chunk(sid, f"s{i}", end=i == last) for i, sid in enumerate(sentence_ids))


@pytest.mark.parametrize(
    "sentence_ids",
    [
        pytest.param([0, 0, 0, 0], id="repeated (the official SDK's mock server)"),
        pytest.param([0, 3, 7, 8], id="skipped"),
        pytest.param([5, 2, 1, 0], id="decreasing"),
        pytest.param([1, 2, 3, 4], id="not from zero"),
    ],
)
async def test_irregular_sentence_ids_keep_every_chunk_in_order_and_log_once(
    router: respx.MockRouter, caplog: pytest.LogCaptureFixture, sentence_ids: list[int]
) -> None:
    serve(router, stream_of(sentence_ids))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", MESSAGES) as stream:
            chunks = [c async for c in stream]
    assert [c.result for c in chunks] == ["s0", "s1", "s2", "s3"]
    assert [c.sentence_id for c in chunks] == sentence_ids
    assert stream.text == "s0s1s2s3"
    assert stream.finished
    notes = [r for r in caplog.records if "sentence_id" in r.getMessage()]
    assert len(notes) == 1, "said once per stream"
    assert notes[0].levelno == logging.DEBUG


async def test_regular_sentence_ids_log_nothing(
    router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    serve(router, stream_of([0, 1, 2]))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        await client.chat_stream("mpt30b", MESSAGES).collect()
    assert not [r for r in caplog.records if "sentence_id" in r.getMessage()]


async def test_repeated_sentence_ids_in_a_completion_stream_and_collect(
    router: respx.MockRouter,
) -> None:
    serve(router, stream_of([0, 0, 0]), COMPLETIONS_URL)
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        reply = await client.complete_stream("pythia12b", "hi").collect()
    assert reply.result == "s0s1s2"
    assert reply.usage == wx.Usage(5, 2, 7), "the last chunk's usage"


def bare_chunk(result: str, *, end: bool = False, **fields: Any) -> dict[str, Any]:
    return {"result": result, "is_end": end, **fields}


async def test_chunks_with_only_result_and_is_end_make_an_answer(router: respx.MockRouter) -> None:
    serve(router, sse([bare_chunk("a"), bare_chunk("b"), bare_chunk("", end=True)]))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", MESSAGES) as stream:
            chunks = [c async for c in stream]
        reply = await client.chat_stream("mpt30b", MESSAGES).collect()
    assert [c.result for c in chunks] == ["a", "b", ""]
    assert [c.sentence_id for c in chunks] == [0, 1, 2], "the position stands in"
    assert chunks[0].id == "" and chunks[0].object == "" and chunks[0].created == 0
    assert chunks[0].usage is None and stream.usage is None
    assert reply.result == "ab"
    assert reply.usage == wx.Usage(0, 0, 0)


async def test_fields_of_another_type_are_dropped_and_kept_in_raw(
    router: respx.MockRouter,
) -> None:
    odd = {
        "id": 12,
        "object": None,
        "created": "1709089502",
        "sentence_id": "3",
        "is_truncated": "no",
        "need_clear_history": 0,
        "finish_reason": 1,
        "ban_round": "x",
        "usage": {"prompt_tokens": "5", "total_tokens": 7},
    }
    serve(
        router,
        sse([{**chunk(0, "a"), **odd}, {**chunk(1, "b", end=True), "usage": None}]),
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", MESSAGES) as stream:
            first, last = [c async for c in stream]
        reply = await client.chat_stream("mpt30b", MESSAGES).collect()
    assert (first.id, first.object, first.created, first.sentence_id) == ("", "", 0, 0)
    assert (first.is_truncated, first.need_clear_history) == (False, False)
    assert (first.finish_reason, first.ban_round, first.usage) == (None, None, None)
    assert first.raw["created"] == "1709089502" and first.raw["usage"]["prompt_tokens"] == "5"
    assert last.usage is None
    assert reply.result == "ab"
    assert reply.id == ""


async def test_usage_only_on_the_last_chunk(router: respx.MockRouter) -> None:
    plain = [{k: v for k, v in chunk(i, r).items() if k != "usage"} for i, r in enumerate("ab")]
    serve(router, sse([*plain, chunk(2, "c", end=True)]))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", MESSAGES) as stream:
            usages = [c.usage async for c in stream]
    assert usages == [None, None, wx.Usage(5, 6, 11)]
    assert stream.usage == wx.Usage(5, 6, 11)


async def test_unknown_fields_and_other_object_values_are_kept(router: respx.MockRouter) -> None:
    odd = {**chunk(0, "a", end=True), "object": "chat.completion.chunk", "new_field": [1]}
    serve(router, sse([odd]))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", MESSAGES) as stream:
            [only] = [c async for c in stream]
    assert only.object == "chat.completion.chunk"
    assert only.raw["new_field"] == [1]


async def test_framing_variations_a_lenient_reader_accepts(router: respx.MockRouter) -> None:
    body = (
        "\ufeff: keep-alive\r\n\r\n"
        "retry: 1000\r\n"
        "id: 1\r\n"
        "event: message\r\n"
        "data:" + json.dumps(chunk(0, "a")) + "\r\n\r\n"
        ": another keep-alive\n\n"
        "data:   " + json.dumps(chunk(1, "b", end=True)) + "   \r\n\r\n"
        "data: [DONE]\n\n"
        "data: [DONE]\n\n"
    ).encode()
    recorder = serve(router, body)
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", MESSAGES) as stream:
            assert [c.result async for c in stream] == ["a", "b"]
    assert recorder.closed


async def test_done_after_is_end_and_a_last_line_without_newline(router: respx.MockRouter) -> None:
    body = sse([chunk(0, "a")]) + b"data: " + json.dumps(chunk(1, "b", end=True)).encode()
    serve(router, body)
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        reply = await client.chat_stream("mpt30b", MESSAGES).collect()
    assert reply.result == "ab"


def test_every_json_object_gives_a_chunk_or_a_protocol_error() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=5,
    )
    keys = st.sampled_from(
        ["id", "object", "created", "sentence_id", "is_end", "result", "usage", "ban_round"]
    )
    build = chunk_builder(wx.ChatChunk)

    @given(st.dictionaries(keys | st.text(max_size=5), values), st.integers(0, 100))
    def check(data: dict[str, Any], position: int) -> None:
        result, is_end = data.get("result", ""), data.get("is_end", False)
        if not isinstance(result, str) or not isinstance(is_end, bool):
            with pytest.raises(wx.ProtocolError, match=r"result|is_end"):
                build(data, position, None)
        else:
            built = build(data, position, None)
            assert isinstance(built, wx.ChatChunk)
            assert built.raw is data
            assert isinstance(built.result, str) and isinstance(built.is_end, bool)
            assert isinstance(built.sentence_id, int) and isinstance(built.created, int)

    check()


def test_the_fast_constructor_builds_what_the_converter_builds() -> None:
    from baiduwx_async._models import decode

    data = {**chunk(4, "当然"), "ban_round": -1}
    for cls in (wx.ChatChunk, wx.CompletionChunk):
        built = chunk_builder(cls)(data, 0, None)
        assert built == decode(data, cls)
        assert type(built) is cls
        assert built.raw is data


async def test_each_chunk_is_checked_on_the_httpx_mock_transport() -> None:
    body = sse([chunk(0, "a"), {"result": ["not", "text"], "is_end": True}])

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    async with http, wx.AsyncClient(credentials=wx.StaticToken(TOKEN), http_client=http) as client:
        with pytest.raises(wx.StreamError, match="result must be a string"):
            await client.chat_stream("mpt30b", MESSAGES).collect()


def emulator_setups(anyio_backend: str) -> list[tuple[str, bool]]:
    """(http_backend, asgi): real sockets on asyncio with both backends; trio in-process."""
    if anyio_backend == "asyncio":
        return [("httpx", False), ("aiohttp", False)]
    return [("httpx", True)]


async def test_emulator_repeating_sentence_id_zero_streams_whole_answers(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    from baiduwx_async.testing import run_emulator

    for backend, asgi in emulator_setups(anyio_backend):
        settings = {"seed": 5, "sentences_min": 4, "sentences_max": 4}
        async with run_emulator(asgi=asgi, stream_sentence_id_zero=True, **settings) as emu:
            caplog.clear()
            async with emu.client(http_backend=backend) as client:
                async with client.chat_stream("mpt30b", MESSAGES) as stream:
                    chunks = [c async for c in stream]
                plain = await client.chat("mpt30b", MESSAGES)
                completion = await client.complete_stream("pythia12b", "hi").collect()
        assert len(chunks) == 4 and [c.sentence_id for c in chunks] == [0, 0, 0, 0], backend
        assert chunks[-1].is_end and stream.finished
        assert stream.text == plain.result, "the same answer as the non-stream call"
        assert completion.result
        notes = [r for r in caplog.records if "sentence_id" in r.getMessage()]
        assert len(notes) == 2, "once for each of the two streams"


def test_a_field_added_to_the_chunk_classes_needs_no_code_in_the_constructor() -> None:
    import attrs

    @attrs.frozen(kw_only=True)
    class WithCall(wx.ChatChunk):
        function_call: dict[str, Any] | None = None
        votes: int = 0

    build = chunk_builder(WithCall)
    call = {"name": "get_weather", "arguments": "{}"}
    built = build({**chunk(0, ""), "function_call": call, "votes": 3}, 0, None)
    assert (built.function_call, built.votes) == (call, 3)
    assert built.result == "" and built.usage == wx.Usage(5, 2, 7)
    odd = build({**chunk(0, ""), "function_call": "not an object", "votes": "x"}, 0, None)
    assert (odd.function_call, odd.votes) == (None, 0), "malformed information is dropped"
    assert attrs.asdict(odd, recurse=False).keys() == {f.name for f in attrs.fields(WithCall)}
