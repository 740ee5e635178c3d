"""Streams through the client: chunk boundaries, error forms, retries, closing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx

import baiduwx_async as wx

from .support import CHAT_URL, COMPLETIONS_URL, TOKEN, chat_body, error_body, make_client

pytestmark = pytest.mark.anyio

SENTENCES = ["当然可以，", "长城是中国古代的军事防御工程。", "它绵延上万里。"]


def chunk(i: int, result: str, *, end: bool = False, total: int = 3) -> dict[str, Any]:
    return {
        "id": "as-vb0m37ti8y",
        "object": "chat.completion",
        "created": 1709089502 + i,
        "sentence_id": i,
        "is_end": end,
        "is_truncated": False,
        "result": result,
        "need_clear_history": False,
        "finish_reason": "normal",
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 2 * (i + 1),
            "total_tokens": 5 + 2 * (i + 1),
        },
    }


def sse(events: Iterable[dict[str, Any] | str]) -> bytes:
    lines = []
    for event in events:
        text = event if isinstance(event, str) else "data: " + json.dumps(event, ensure_ascii=False)
        lines.append(text + "\n\n")
    return "".join(lines).encode()


def good_stream() -> bytes:
    return sse(chunk(i, s, end=i == len(SENTENCES) - 1) for i, s in enumerate(SENTENCES))


class RecordingStream(httpx.AsyncByteStream):
    """Serves `pieces` (an `Exception` is raised in place), and records being closed."""

    def __init__(self, pieces: Iterable[bytes | Exception], *, hang: bool = False) -> None:
        self.pieces = list(pieces)
        self.hang = hang
        self.closed = False
        self.served = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            if isinstance(piece, Exception):
                raise piece
            self.served += 1
            yield piece
            await anyio.lowlevel.checkpoint()
        if self.hang:
            await anyio.sleep_forever()

    async def aclose(self) -> None:
        self.closed = True


def event_stream(stream: RecordingStream) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
async def test_any_chunk_boundary_gives_the_same_chunks(
    router: respx.MockRouter, size: int
) -> None:
    body = good_stream()
    router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream(split_every(body, size))))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", [wx.user("长城")]) as stream:
            chunks = [c async for c in stream]
    assert [c.result for c in chunks] == SENTENCES
    assert [c.sentence_id for c in chunks] == [0, 1, 2]
    assert chunks[-1].is_end and not chunks[0].is_end
    assert stream.text == "".join(SENTENCES)
    assert stream.usage == wx.Usage(5, 6, 11)
    assert stream.id == "as-vb0m37ti8y"
    assert stream.finished


async def test_crlf_and_cr_line_endings(router: respx.MockRouter) -> None:
    body = good_stream().replace(b"\n\n", b"\r\n\r\n")
    pieces = [body[:7], body[7:8], *split_every(body[8:], 5)]
    router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream(pieces)))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
            assert [c.result async for c in stream] == SENTENCES


async def test_stream_request_body_and_collect(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream([good_stream()])))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        stream = client.chat_stream("mpt30b", [wx.user("hi")], temperature=0.5)
        assert route.call_count == 0, "nothing is sent before the stream is used"
        async with stream:
            reply = await stream.collect()
    assert json.loads(route.calls.last.request.content)["stream"] is True
    assert isinstance(reply, wx.ChatResponse)
    assert reply.result == "".join(SENTENCES)
    assert reply.id == "as-vb0m37ti8y" and reply.created == 1709089502
    assert reply.usage == wx.Usage(5, 6, 11)
    assert reply.request_id is not None


async def test_completion_stream(router: respx.MockRouter) -> None:
    body = good_stream().replace(b"chat.completion", b"completion")
    router.post(COMPLETIONS_URL).mock(return_value=event_stream(RecordingStream([body])))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        stream = client.complete_stream("pythia12b", "Introduce Beijing")
        chunks = [c async for c in stream]  # without `async with`: reading to the end releases it
    assert all(isinstance(c, wx.CompletionChunk) for c in chunks)
    assert stream.text == "".join(SENTENCES)


async def test_reading_to_the_end_without_context_manager_closes(router: respx.MockRouter) -> None:
    recorder = RecordingStream([good_stream()])
    router.post(CHAT_URL).mock(return_value=event_stream(recorder))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async for _ in client.chat_stream("mpt30b", [wx.user("hi")]):
            pass
        assert recorder.closed


async def test_bad_input_raises_at_call_time(router: respx.MockRouter) -> None:
    route = router.route()
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ValidationError, match="temperature"):
            client.chat_stream("mpt30b", [wx.user("hi")], temperature=5)
        with pytest.raises(wx.ValidationError, match="endpoint"):
            client.complete_stream("../x", "hi")
    assert route.call_count == 0


async def test_json_answer_to_a_stream_request_is_its_error(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(
        return_value=httpx.Response(
            200, json=error_body(336003, "the max length of current question is 2000")
        )
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.InvalidRequestError, match="max length"):
            async with client.chat_stream("mpt30b", [wx.user("hi")]):
                pass  # pragma: no cover
    assert route.call_count == 1


async def test_json_without_error_code_is_a_protocol_error(router: respx.MockRouter) -> None:
    router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ProtocolError, match="no error_code"):
            async with client.chat_stream("mpt30b", [wx.user("hi")]):
                pass  # pragma: no cover


@pytest.mark.parametrize(
    "bad_line",
    [
        "data: " + json.dumps(error_body(336100, "high load")),  # form 2: a data chunk
        json.dumps(error_body(336100, "high load")),  # form 1: a bare line
    ],
)
async def test_mid_stream_error_after_a_chunk_is_raised_not_retried(
    router: respx.MockRouter, bad_line: str
) -> None:
    body = sse([chunk(0, SENTENCES[0]), bad_line])
    route = router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream([body])))
    seen: list[str] = []
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ServerError) as caught:
            async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
                async for c in stream:
                    seen.append(c.result)
    assert caught.value.code == 336100
    assert seen == [SENTENCES[0]]
    assert route.call_count == 1, "never retried once a chunk reached the caller"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (sse([chunk(0, "a"), chunk(1, "b")]), "without an is_end"),
        (sse([chunk(0, "a"), "data: {not json"]), "not JSON"),
        (sse([chunk(0, "a"), "data: [1, 2]"]), "not a JSON object"),
        (sse([chunk(0, "a"), "data: " + json.dumps({**chunk(1, "b"), "result": 7})]), "result"),
        (sse([chunk(0, "a"), "data: " + json.dumps({**chunk(1, "b"), "is_end": "yes"})]), "is_end"),
        (sse([chunk(0, "a"), "garbage line"]), "not JSON"),
        (sse([chunk(0, "a"), '{"no": "error code"}']), "without 'data:'"),
    ],
)
async def test_broken_streams_raise_stream_error(
    router: respx.MockRouter, body: bytes, message: str
) -> None:
    route = router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream([body])))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.StreamError, match=message) as caught:
            async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
                async for _ in stream:
                    pass
    assert route.call_count == 1
    assert caught.value.retryable is False


async def test_stream_error_excerpt_is_short_and_redacted(router: respx.MockRouter) -> None:
    body = sse([chunk(0, "a"), f"data: access_token={TOKEN} " + "x" * 5000])
    router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream([body])))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.StreamError) as caught:
            async for _ in client.chat_stream("mpt30b", [wx.user("hi")]):
                pass
    assert TOKEN not in str(caught.value)
    assert len(str(caught.value)) < 300


async def test_done_marker_ends_the_stream(router: respx.MockRouter) -> None:
    body = sse([chunk(0, "a"), chunk(1, "b"), "data: [DONE]", chunk(2, "never")])
    recorder = RecordingStream([body])
    router.post(CHAT_URL).mock(return_value=event_stream(recorder))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
            assert [c.result async for c in stream] == ["a", "b"]
            assert stream.finished
            assert recorder.closed
        assert (await client.chat_stream("mpt30b", [wx.user("hi")]).collect()).result == "ab"


async def test_comments_and_event_lines_are_tolerated(router: respx.MockRouter) -> None:
    body = sse([": keep-alive", chunk(0, "a"), "event: message", chunk(1, "b", end=True)])
    router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream([body])))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        stream = client.chat_stream("mpt30b", [wx.user("hi")])
        assert (await stream.collect()).result == "ab"


async def test_retried_before_the_first_chunk(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(503),
            httpx.Response(200, json=error_body(18)),
            event_stream(RecordingStream([httpx.ReadError("reset")])),  # broke before a chunk
            event_stream(RecordingStream([b""])),  # ended before a chunk
            event_stream(RecordingStream([good_stream()])),
        ]
    )
    async with make_client(credentials=wx.StaticToken(TOKEN), max_retries=5) as client:
        async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
            assert [c.result async for c in stream] == SENTENCES
    assert route.call_count == 6


async def test_not_retried_after_the_first_chunk(router: respx.MockRouter) -> None:
    body = sse([chunk(0, "a")])
    route = router.post(CHAT_URL).mock(
        return_value=event_stream(RecordingStream([body, httpx.ReadError("reset")]))
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.TransportError, match="stream broken"):
            async for _ in client.chat_stream("mpt30b", [wx.user("hi")]):
                pass
    assert route.call_count == 1


async def test_token_refresh_at_stream_start(
    router: respx.MockRouter, token_route: respx.Route
) -> None:
    route = router.post(CHAT_URL).mock(
        side_effect=[
            httpx.Response(200, json=error_body(111, "Access token expired")),
            event_stream(RecordingStream([good_stream()])),
        ]
    )
    async with make_client() as client:
        async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
            await stream.collect()
    assert route.call_count == 2
    assert token_route.call_count == 2


async def test_early_break_closes_the_response(router: respx.MockRouter) -> None:
    recorder = RecordingStream([good_stream()], hang=True)
    router.post(CHAT_URL).mock(return_value=event_stream(recorder))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
            async for _ in stream:
                break
        assert recorder.closed
        assert stream.text == SENTENCES[0]


async def test_cancellation_closes_the_response(router: respx.MockRouter) -> None:
    recorder = RecordingStream([sse([chunk(0, "a")])], hang=True)
    router.post(CHAT_URL).mock(return_value=event_stream(recorder))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with anyio.move_on_after(0.2) as scope:
            async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
                async for _ in stream:
                    pass  # the second chunk never comes
        assert scope.cancelled_caught
        assert recorder.closed


async def test_cancellation_without_context_manager_closes(router: respx.MockRouter) -> None:
    recorder = RecordingStream([sse([chunk(0, "a")])], hang=True)
    router.post(CHAT_URL).mock(return_value=event_stream(recorder))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with anyio.move_on_after(0.2):
            async for _ in client.chat_stream("mpt30b", [wx.user("hi")]):
                pass
        assert recorder.closed


async def test_silence_between_chunks_is_a_timeout(router: respx.MockRouter) -> None:
    recorder = RecordingStream([sse([chunk(0, "a")]), httpx.ReadTimeout("silence")])
    router.post(CHAT_URL).mock(return_value=event_stream(recorder))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.RequestTimeoutError):
            async for _ in client.chat_stream("mpt30b", [wx.user("hi")]):
                pass
    assert recorder.closed
