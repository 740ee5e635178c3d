"""Embeddings: one call split over requests and merged in order, and the per-text batches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import respx

import baiduwx_async as wx

from .support import BASE_URL, TOKEN, error_body, make_client

pytestmark = pytest.mark.anyio

EMBED_URL = f"{BASE_URL}/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/embedding-v1"


def vector_of(text: str) -> list[float]:
    """A vector that says which text it belongs to."""
    return [float(len(text)), float(ord(text[0])), 0.5]


def answer(request: httpx.Request) -> httpx.Response:
    texts = json.loads(request.content)["input"]
    data = [
        {"object": "embedding", "embedding": vector_of(text), "index": i}
        for i, text in enumerate(texts)
    ]
    data.reverse()  # the service's order is not trusted: the index decides
    return httpx.Response(
        200,
        json={
            "id": f"as-{texts[0]}",
            "object": "embedding_list",
            "created": 1687155816,
            "data": data,
            "usage": {"prompt_tokens": len(texts), "total_tokens": 2 * len(texts)},
            "brand_new": True,
        },
    )


async def test_embed_sends_the_documented_body(router: respx.MockRouter) -> None:
    route = router.post(EMBED_URL).mock(side_effect=answer)
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        reply = await client.embed("embedding-v1", ["hello", "world"], user_id="u-1")
    request = route.calls.last.request
    assert json.loads(request.content) == {"input": ["hello", "world"], "user_id": "u-1"}
    assert request.url.params["access_token"] == TOKEN
    assert isinstance(reply, wx.EmbeddingResponse)
    assert reply.id == "as-hello" and reply.created == 1687155816
    assert reply.data == [wx.Embedding(0, vector_of("hello")), wx.Embedding(1, vector_of("world"))]
    assert reply.vectors == [vector_of("hello"), vector_of("world")]
    assert reply.usage == wx.Usage(prompt_tokens=2, total_tokens=4)
    assert reply.raw["brand_new"] is True and reply.request_id is not None


async def test_many_texts_go_out_concurrently_and_come_back_in_order(
    router: respx.MockRouter,
) -> None:
    in_flight = most = 0

    async def slow_answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        texts = json.loads(request.content)["input"]
        await anyio.sleep(0.02 if texts[0] == "t0" else 0.001)  # the first finishes last
        in_flight -= 1
        return answer(request)

    route = router.post(EMBED_URL).mock(side_effect=slow_answer)
    texts = [f"t{i}" for i in range(37)]
    async with make_client(credentials=wx.StaticToken(TOKEN), max_concurrency=3) as client:
        reply = await client.embed("embedding-v1", texts, texts_per_request=5)
    sent = [json.loads(call.request.content)["input"] for call in route.calls]
    assert sorted(len(batch) for batch in sent) == [2] + [5] * 7
    assert most == 3, "as many at once as the client allows, no more"
    assert [item.index for item in reply.data] == list(range(37))
    assert reply.vectors == [vector_of(t) for t in texts]
    assert reply.usage == wx.Usage(prompt_tokens=37, total_tokens=74)
    assert reply.id == "as-t0" and len(reply.raw["data"]) == 37
    assert reply.raw["usage"]["total_tokens"] == 74


async def test_one_failed_request_fails_the_call(router: respx.MockRouter) -> None:
    def refuse_some(request: httpx.Request) -> httpx.Response:
        if "t5" in json.loads(request.content)["input"]:
            return httpx.Response(200, json=error_body(336003, "too many texts"))
        return answer(request)

    router.post(EMBED_URL).mock(side_effect=refuse_some)
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.InvalidRequestError, match="too many texts"):
            await client.embed("embedding-v1", [f"t{i}" for i in range(10)], texts_per_request=5)


@pytest.mark.parametrize(
    ("texts", "field", "rule"),
    [
        ("hello", "texts", "not one string"),
        ([], "texts", "must not be empty"),
        (["a", "  "], "texts[1]", "non-blank"),
        (["a", 3], "texts[1]", "non-blank"),
        ({"a": 1}, "texts", "list of strings"),
        (None, "texts", "list of strings"),
    ],
)
async def test_bad_texts_are_refused_before_anything_is_sent(
    router: respx.MockRouter, texts: Any, field: str, rule: str
) -> None:
    route = router.route()
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ValidationError, match=rule) as caught:
            await client.embed("embedding-v1", texts)
    assert caught.value.field == field
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("keywords", "field"),
    [
        ({"texts_per_request": 0}, "texts_per_request"),
        ({"texts_per_request": True}, "texts_per_request"),
        ({"user_id": 5}, "user_id"),
        ({"timeout": -1}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
async def test_bad_options_are_refused_before_anything_is_sent(
    router: respx.MockRouter, keywords: dict[str, Any], field: str
) -> None:
    route = router.route()
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ValidationError) as caught:
            await client.embed("embedding-v1", ["a"] * 40, **keywords)
        assert caught.value.field == field
        with pytest.raises(wx.ValidationError):
            await client.embed("../x", ["a"] * 40)
        with pytest.raises(wx.ValidationError):
            client.iter_batch_embed("embedding-v1", ["a"], **keywords)
    assert route.call_count == 0


@pytest.mark.parametrize(
    "data",
    [
        [],
        [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}],
        [{"index": 0, "embedding": ["x"]}, {"index": 1, "embedding": [1.0]}],
        [{"index": 0, "embedding": [None]}, {"index": 1, "embedding": [1.0]}],
        [{"index": 0, "embedding": "1.0"}, {"index": 1, "embedding": [1.0]}],
        [{"index": 5, "embedding": [1.0]}, {"index": 1, "embedding": [1.0]}],
    ],
)
async def test_malformed_answers_are_protocol_errors(
    router: respx.MockRouter, data: list[Any]
) -> None:
    body = {"id": "as-1", "created": 1, "data": data, "usage": {"prompt_tokens": 1}}
    router.post(EMBED_URL).mock(return_value=httpx.Response(200, json=body))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ProtocolError, match="EmbeddingResponse"):
            await client.embed("embedding-v1", ["a", "b"])


# --- batches: one result per text


async def test_batch_embed_gives_one_result_per_text_in_order(router: respx.MockRouter) -> None:
    route = router.post(EMBED_URL).mock(side_effect=answer)
    texts = [f"t{i}" for i in range(10)]
    texts[3] = " "  # fails alone, unsent
    progress: list[wx.BatchProgress] = []
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        results = await client.batch_embed(
            "embedding-v1", texts, texts_per_request=4, concurrency=2, on_progress=progress.append
        )
    assert [r.index for r in results] == list(range(10))
    assert [r.input for r in results] == texts
    assert [r.ok for r in results] == [i != 3 for i in range(10)]
    assert isinstance(results[3].error, wx.ValidationError) and results[3].attempts == 0
    assert all(
        r.response == vector_of(t) and r.attempts == 1
        for r, t in zip(results, texts, strict=True)
        if r.ok
    )
    sent = [json.loads(call.request.content)["input"] for call in route.calls]
    assert sorted(map(len, sent)) == [2, 3, 4]
    assert progress[-1].done == 10 and progress[-1].failed == 1 and progress[-1].total == 10


async def test_a_failed_request_fails_only_its_texts(router: respx.MockRouter) -> None:
    def refuse_one(request: httpx.Request) -> httpx.Response:
        if "t4" in json.loads(request.content)["input"]:
            return httpx.Response(200, json=error_body(336003, "text too long"))
        return answer(request)

    router.post(EMBED_URL).mock(side_effect=refuse_one)
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        results = await client.batch_embed(
            "embedding-v1", [f"t{i}" for i in range(9)], texts_per_request=3
        )
    assert [r.ok for r in results] == [True] * 3 + [False] * 3 + [True] * 3
    assert all(isinstance(r.error, wx.InvalidRequestError) for r in results[3:6])


async def test_iter_batch_embed_reads_an_async_generator_lazily(router: respx.MockRouter) -> None:
    router.post(EMBED_URL).mock(side_effect=answer)
    read = 0

    async def texts() -> AsyncIterator[str]:
        nonlocal read
        for i in range(1000):
            read += 1
            yield f"t{i}"

    seen = 0
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.iter_batch_embed(
            "embedding-v1", texts(), concurrency=2, texts_per_request=10
        ) as results:
            async for result in results:
                assert result.response == vector_of(f"t{result.index}")
                seen += 1
                if seen == 25:
                    break
    assert read < 200, "texts are read as requests need them"


async def test_iter_batch_embed_without_async_with(router: respx.MockRouter) -> None:
    router.post(EMBED_URL).mock(side_effect=answer)
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        indexes = sorted(
            [r.index async for r in client.iter_batch_embed("embedding-v1", ["a", "b", "c"])]
        )
    assert indexes == [0, 1, 2]
