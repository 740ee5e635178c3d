"""Open calls: extra_body, extra_headers and extra_query on every call, and the keywords
of other clients answered with the name to use here."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async import _signing

from .support import BASE_URL, CHAT_URL, COMPLETIONS_URL, TOKEN, chat_body, make_client
from .test_iam import ACCESS_KEY, SECRET, StepClock, verified
from .test_streaming import RecordingStream, event_stream, good_stream

pytestmark = pytest.mark.anyio

EMBED_URL = f"{BASE_URL}/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/embedding-v1"
EXTRAS: dict[str, Any] = {
    "extra_body": {"enable_system_memory": True, "system_memory_id": "sm-1", "x": {"a": [1]}},
    "extra_headers": {"X-Trace": "t-1", "appid": "42"},
    "extra_query": {"tenant": "a b", "n": 3},
}


def embed_body(count: int, dims: int = 3) -> dict[str, Any]:
    return {
        "id": "as-emb",
        "object": "embedding_list",
        "created": 1,
        "data": [
            {"object": "embedding", "embedding": [float(i)] * dims, "index": i}
            for i in range(count)
        ],
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }


def completion_answer() -> dict[str, Any]:
    return {**chat_body("done"), "object": "completion"}


def check_extras_sent(request: httpx.Request) -> dict[str, Any]:
    assert request.headers["x-trace"] == "t-1" and request.headers["appid"] == "42"
    assert request.url.params["tenant"] == "a b" and request.url.params["n"] == "3"
    assert request.url.params["access_token"] == TOKEN
    body: dict[str, Any] = json.loads(request.content)
    assert body["enable_system_memory"] is True and body["x"] == {"a": [1]}
    return body


async def test_chat_sends_extras_and_merges_the_body_last(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        await client.chat(
            "mpt30b",
            [wx.user("hi")],
            temperature=0.5,
            extra_body={"temperature": 0.9, "new_field": [1, "two", None]},
            extra_headers={"X-Trace": "t-1"},
        )
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.9,  # extra_body is merged last: the caller's word wins
        "stream": False,
        "new_field": [1, "two", None],
    }
    assert request.headers["x-trace"] == "t-1"


async def test_every_call_takes_the_extras(router: respx.MockRouter) -> None:
    chat = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    completions = router.post(COMPLETIONS_URL).mock(
        return_value=httpx.Response(200, json=completion_answer())
    )
    embeddings = router.post(EMBED_URL).mock(return_value=httpx.Response(200, json=embed_body(1)))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        await client.chat("mpt30b", [wx.user("hi")], **EXTRAS)
        body = check_extras_sent(chat.calls.last.request)
        assert body["stream"] is False
        await client.complete("pythia12b", "hi", **EXTRAS)
        assert check_extras_sent(completions.calls.last.request)["prompt"] == "hi"
        await client.embed("embedding-v1", ["hi"], **EXTRAS)
        assert check_extras_sent(embeddings.calls.last.request)["input"] == ["hi"]
        [result] = await client.batch_chat("mpt30b", [[wx.user("hi")]], **EXTRAS)
        assert result.ok and check_extras_sent(chat.calls.last.request)
        [done] = await client.batch_complete("pythia12b", ["hi"], **EXTRAS)
        assert done.ok and check_extras_sent(completions.calls.last.request)
        [vector] = await client.batch_embed("embedding-v1", ["hi"], **EXTRAS)
        assert vector.ok and check_extras_sent(embeddings.calls.last.request)


async def test_streams_take_the_extras(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=event_stream(RecordingStream([good_stream()])))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.chat_stream("mpt30b", [wx.user("hi")], **EXTRAS) as stream:
            await stream.collect()
    assert check_extras_sent(route.calls.last.request)["stream"] is True
    body = good_stream().replace(b"chat.completion", b"completion")
    route = router.post(COMPLETIONS_URL).mock(return_value=event_stream(RecordingStream([body])))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.complete_stream("pythia12b", "hi", **EXTRAS) as completion:
            await completion.collect()
    assert check_extras_sent(route.calls.last.request)["stream"] is True


async def test_a_header_of_ours_is_replaced_whatever_its_case(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        await client.chat(
            "mpt30b", [wx.user("hi")], extra_headers={"request_id": "mine", "content-type": "x/y"}
        )
    request = route.calls.last.request
    assert request.headers.get_list("request_id") == ["mine"]
    assert request.headers.get_list("content-type") == ["x/y"]


async def test_query_and_headers_are_signed_under_iam(router: respx.MockRouter) -> None:
    route = router.post(url__startswith=CHAT_URL).mock(
        return_value=httpx.Response(200, json=chat_body())
    )
    clock = StepClock()
    async with make_client(
        credentials=wx.IAMCredentials(ACCESS_KEY, SECRET), clock=clock
    ) as client:
        await client.chat(
            "mpt30b",
            [wx.user("hi")],
            extra_query={"a b": "c/d", "x": ""},
            extra_headers={"x-bce-custom": "v"},
        )
    request = route.calls.last.request
    assert request.url.params["a b"] == "c/d"
    issued = _signing.parse_authorization(request.headers["authorization"]).issued_at()
    assert verified(request, issued) is None
    assert "x-bce-custom" in request.headers["authorization"]
    # the query is part of what was signed: the same signature does not fit another query
    tampered = httpx.Request(
        "POST", request.url.copy_set_param("a b", "other"), headers=request.headers
    )
    assert verified(tampered, issued) is not None


def _calls(client: wx.AsyncClient) -> list[Callable[..., Awaitable[Any] | Any]]:
    """Every way to make a call, each given the same keywords."""

    async def chat(**kw: Any) -> Any:
        return await client.chat("mpt30b", [wx.user("hi")], **kw)

    async def complete(**kw: Any) -> Any:
        return await client.complete("pythia12b", "hi", **kw)

    async def chat_stream(**kw: Any) -> Any:
        return client.chat_stream("mpt30b", [wx.user("hi")], **kw)

    async def complete_stream(**kw: Any) -> Any:
        return client.complete_stream("pythia12b", "hi", **kw)

    async def embed(**kw: Any) -> Any:
        return await client.embed("embedding-v1", ["hi"], **kw)

    async def batch_chat(**kw: Any) -> Any:
        return await client.batch_chat("mpt30b", [[wx.user("hi")]], **kw)

    async def batch_complete(**kw: Any) -> Any:
        return await client.batch_complete("pythia12b", ["hi"], **kw)

    async def batch_embed(**kw: Any) -> Any:
        return await client.batch_embed("embedding-v1", ["hi"], **kw)

    return [
        chat,
        complete,
        chat_stream,
        complete_stream,
        embed,
        batch_chat,
        batch_complete,
        batch_embed,
    ]


@pytest.mark.parametrize(
    ("keywords", "field"),
    [
        ({"extra_body": {"stream": True}}, "extra_body['stream']"),
        ({"extra_body": {"when": object()}}, "extra_body['when']"),
        ({"extra_body": {"score": float("nan")}}, "extra_body['score']"),
        ({"extra_body": {"s": {1, 2}}}, "extra_body['s']"),
        ({"extra_body": ["not", "a", "mapping"]}, "extra_body"),
        ({"extra_headers": {"X-A": 1}}, "extra_headers['X-A']"),
        ({"extra_headers": {"X-A": "a\r\nInjected: 1"}}, "extra_headers['X-A']"),
        ({"extra_headers": {"bad name": "v"}}, "extra_headers"),
        ({"extra_query": {"access_token": "mine"}}, "extra_query['access_token']"),
        ({"extra_query": {"q": None}}, "extra_query['q']"),
        ({"extra_query": {"q": [1]}}, "extra_query['q']"),
        ({"request_id": 5}, "request_id"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "10"}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
async def test_bad_extras_are_refused_before_anything_is_sent(
    router: respx.MockRouter, keywords: dict[str, Any], field: str
) -> None:
    route = router.route()
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        for call in _calls(client):
            with pytest.raises(wx.ValidationError) as caught:
                await call(**keywords)
            assert caught.value.field == field, call.__name__
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("max_tokens", "max_output_tokens"),
        ("max_completion_tokens", "max_output_tokens"),
        ("model", "endpoint"),
        ("n", "one answer per call"),
        ("stream", "chat_stream"),
        ("user", "user_id"),
        ("tools", "functions"),
        ("temprature", "temperature"),
    ],
)
async def test_other_clients_keywords_name_ours(
    router: respx.MockRouter, name: str, hint: str
) -> None:
    route = router.route()
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        for call in _calls(client):
            if name == "temprature" and "embed" in call.__name__:
                continue  # embeddings have no temperature to suggest
            with pytest.raises(TypeError, match=rf"unexpected keyword argument '{name}'.*{hint}"):
                await call(**{name: 1})
    assert route.call_count == 0


async def test_chat_only_keywords_on_complete_point_to_chat(router: respx.MockRouter) -> None:
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(TypeError, match="complete\\(\\) takes a prompt string; use chat"):
            await client.complete("pythia12b", "hi", messages=[wx.user("hi")])  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="system is a chat field"):
            client.complete_stream("pythia12b", "hi", system="be brief")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="chat\\(\\) takes messages"):
            await client.chat("mpt30b", [wx.user("hi")], prompt="hi")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="texts are the second argument"):
            await client.embed("embedding-v1", ["a"], input=["a"])  # type: ignore[call-arg]
    assert not router.calls


async def test_zero_temperature_explains_the_service_and_suggests_a_value(
    router: respx.MockRouter,
) -> None:
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        for call in _calls(client):
            if "embed" in call.__name__:
                continue
            with pytest.raises(wx.ValidationError, match=r"refuses 0.*0\.01") as caught:
                await call(temperature=0)
            assert caught.value.field == "temperature"
        with pytest.raises(wx.ValidationError) as over:
            await client.chat("mpt30b", [wx.user("hi")], temperature=1.5)
        assert "0.01" not in str(over.value)  # the hint is for 0 only
    assert not router.calls


def test_help_lists_every_keyword() -> None:
    chat = inspect.signature(wx.AsyncClient.chat).parameters
    for name in ("temperature", "system", "functions", "extra_body", "timeout", "request_id"):
        assert chat[name].kind is inspect.Parameter.KEYWORD_ONLY and chat[name].default is None
    assert "system" not in inspect.signature(wx.AsyncClient.complete).parameters
    embed = inspect.signature(wx.AsyncClient.embed).parameters
    assert embed["texts_per_request"].default is None  # 16, or 1 for tao_8k
    batch = inspect.signature(wx.AsyncClient.batch_chat).parameters
    assert {"concurrency", "qps", "system", "extra_query"} <= batch.keys()
