"""The README's idioms as a user's own code, checked with `mypy --strict` by
tests/test_typing_idioms.py: each result type must be what the README says, without a
cast or an assert."""

from __future__ import annotations

import httpx
from typing_extensions import assert_type

import baiduwx_async as wx


async def calls(client: wx.AsyncClient) -> None:
    reply = await client.chat("mpt30b", [wx.user("Please introduce The Great Wall")])
    assert_type(reply.result, str)
    assert_type(reply.usage.total_tokens, int)
    done = await client.complete("pythia12b", "Introduce the city Beijing", stop=["\n\n"])
    assert_type(done.result, str)


async def streams(client: wx.AsyncClient) -> None:
    async with client.chat_stream("mpt30b", [wx.user("And the Forbidden City?")]) as stream:
        async for chunk in stream:
            assert_type(chunk, wx.ChatChunk)
            assert_type(chunk.result, str)
    assert_type(stream.text, str)
    # after the loop, collect() returns the whole answer: its usage is never None
    whole = await stream.collect()
    assert_type(whole.usage.total_tokens, int)
    reply = await client.chat_stream("mpt30b", [wx.user("hi")]).collect()
    assert_type(reply, wx.ChatResponse)


async def batches(client: wx.AsyncClient, conversations: list[list[wx.Message]]) -> None:
    results = await client.batch_complete("pythia12b", ["Beijing", "Shanghai"])
    for r in results:
        # `ok` narrows: the response where it is True, the error where it is False
        shown = r.response.result if r.ok else r.error
        assert_type(shown, str | Exception)
        if r.response is not None:
            assert_type(r.response, wx.CompletionResponse)
        if not r.ok:
            assert_type(r.error, Exception)
        if isinstance(r, wx.BatchSuccess):
            assert_type(r.response.usage.total_tokens, int)
        assert_type(r.attempts, int)
    chats = await client.batch_chat("mpt30b", conversations, concurrency=32, qps=10)
    first = chats[0].unwrap()  # the response, or the item's error raised
    assert_type(first, wx.ChatResponse)
    async with client.iter_batch_complete("pythia12b", ["a", "b"]) as running:
        async for item in running:
            assert_type(item.unwrap().result, str)


async def errors(client: wx.AsyncClient) -> None:
    try:
        await client.chat("mpt30b", [wx.user("hi")], timeout=httpx.Timeout(30, connect=5))
    except wx.RequestTimeoutError as exc:
        assert_type(exc.limit, wx.TimeoutLimit | None)
        assert_type(exc.attempts, int | None)
    except wx.TransportError as exc:
        assert_type(exc.url, str | None)
    except wx.APIError as exc:
        assert_type(exc.code, int | str | None)
        assert_type(exc.hint, str | None)
