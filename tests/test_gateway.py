"""The gateway driven by the real `openai` package (async and sync clients) in front of the
emulator: chat, completions, streams, models, and what each answer looks like on the wire."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Mount

import baiduwx_async as wx
from baiduwx_async.gateway import create_app, serve
from baiduwx_async.testing import run_emulator

from .gateway_support import KEY, MODELS, OTHER_KEY, Gateway, running_gateway

pytestmark = pytest.mark.anyio

QUESTION = [{"role": "user", "content": "Please introduce The Great Wall"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn serves the gateway on asyncio only


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    async with running_gateway() as gateway:
        yield gateway


def sse_events(body: str) -> list[str]:
    return [line[len("data: ") :] for line in body.split("\n\n") if line.startswith("data: ")]


# --- chat


async def test_chat_answers_as_openai_with_the_callers_model_name(gw: Gateway) -> None:
    expected = await gw.client.chat("completions", QUESTION)
    reply = await gw.openai().chat.completions.create(model="ernie", messages=QUESTION)  # type: ignore[arg-type]
    assert reply.object == "chat.completion"
    assert reply.model == "ernie"
    assert reply.id == f"chatcmpl-{reply.id.removeprefix('chatcmpl-')}"
    assert reply.id.startswith("chatcmpl-as-")
    [choice] = reply.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.result
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == expected.usage.completion_tokens
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_sync_client_chat(gw: Gateway) -> None:
    def call() -> Any:
        with gw.sync_openai() as client:
            return client.chat.completions.create(model="ernie", messages=QUESTION)  # type: ignore[arg-type]

    reply = await anyio.to_thread.run_sync(call)
    assert reply.model == "ernie"
    assert reply.choices[0].message.content
    assert gw.emu.stats()["endpoints"]["chat/completions"]["ok"] == 1


async def test_consecutive_user_messages_are_joined_and_parameters_pass_on(gw: Gateway) -> None:
    messages = [
        {"role": "user", "content": "first part"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "part"}],
        },
    ]
    expected = await gw.client.chat(
        "completions", [{"role": "user", "content": "first part\n\nsecond\npart"}]
    )
    reply = await gw.openai().chat.completions.create(
        model="ernie",
        messages=messages,  # type: ignore[arg-type]
        temperature=0,  # the service refuses 0: sent as 0.01
        top_p=0.5,
        stop="never-said",
        user="caller-7",
    )
    assert reply.choices[0].message.content == expected.result


# --- streams


async def test_stream_with_usage(gw: Gateway) -> None:
    expected = await gw.client.chat("completions", QUESTION)
    stream = await gw.openai().chat.completions.create(
        model="ernie",
        messages=QUESTION,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" and c.model == "ernie" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first, *sentences, last, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert len(sentences) >= 2  # one chunk per sentence
    text = "".join(c.choices[0].delta.content or "" for c in sentences)
    assert text == expected.result
    assert all(c.choices[0].finish_reason is None for c in [first, *sentences])
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.content is None
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == expected.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_on_the_wire_ends_with_done_and_has_no_usage_unasked(gw: Gateway) -> None:
    async with gw.http() as http:
        answer = await http.post(
            "/v1/chat/completions",
            json={"model": "ernie", "messages": QUESTION, "stream": True},
        )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.text.endswith("\n\ndata: [DONE]\n\n")
    events = sse_events(answer.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_sync_client_stream(gw: Gateway) -> None:
    def call() -> list[Any]:
        with gw.sync_openai() as client:
            stream = client.chat.completions.create(
                model="ernie",
                messages=QUESTION,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            return list(stream)

    chunks = await anyio.to_thread.run_sync(call)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert gw.emu.stats()["streams_completed"] == 1


# --- completions


async def test_completions(gw: Gateway) -> None:
    expected = await gw.client.complete("pythia12b", "Introduce the city Beijing")
    reply = await gw.openai().completions.create(
        model="pythia", prompt="Introduce the city Beijing", max_tokens=64
    )
    assert reply.object == "text_completion"
    assert reply.model == "pythia"
    assert reply.id.startswith("cmpl-")
    assert reply.choices[0].text == expected.result
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens == expected.usage.total_tokens


async def test_completion_stream_with_usage(gw: Gateway) -> None:
    expected = await gw.client.complete("pythia12b", "Introduce the city Beijing")
    stream = await gw.openai().completions.create(
        model="pythia",
        prompt=["Introduce the city Beijing"],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    *texts, last, usage = chunks
    assert "".join(c.choices[0].text for c in texts) == expected.result
    assert last.choices[0].finish_reason == "stop"
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.total_tokens == expected.usage.total_tokens


# --- models, health


async def test_models_list_and_retrieve(gw: Gateway) -> None:
    client = gw.openai()
    page = await client.models.list()
    assert [m.id for m in page.data] == list(MODELS)
    assert all(m.object == "model" and m.owned_by == "baiduwx" for m in page.data)
    assert (await client.models.retrieve("bge")).id == "bge"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-4o")


async def test_healthz_needs_no_key_and_says_when_the_client_is_closed(gw: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        ok = await http.get("/healthz")
        assert (ok.status_code, ok.json()) == (200, {"status": "ok"})
        assert (await http.get("/v1/models")).status_code == 401
        await gw.client.aclose()
        closed = await http.get("/healthz")
    assert closed.status_code == 503


async def test_every_key_is_accepted(gw: Gateway) -> None:
    for key in (KEY, OTHER_KEY):
        page = await gw.openai(api_key=key).models.list()
        assert len(page.data) == len(MODELS)


# --- one client for all callers


async def test_200_concurrent_callers_make_one_token_request(gw: Gateway) -> None:
    assert gw.emu.stats()["token_requests"] == 0
    client = gw.openai()

    async def ask(i: int) -> str:
        reply = await client.chat.completions.create(
            model="ernie", messages=[{"role": "user", "content": f"question {i}"}]
        )
        return reply.choices[0].message.content or ""

    answers = await asyncio.gather(*(ask(i) for i in range(200)))
    assert all(answers)
    stats = gw.emu.stats()
    assert stats["token_requests"] == 1
    assert stats["endpoints"]["chat/completions"]["ok"] == 200


# --- logging


async def test_one_log_line_per_request_without_key_or_prompt(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="baiduwx_async.gateway")
    secret_prompt = [{"role": "user", "content": "my private question 4711"}]
    client = gw.openai()
    await client.chat.completions.create(model="ernie", messages=secret_prompt)  # type: ignore[arg-type]
    with pytest.raises(openai.AuthenticationError):
        await gw.openai(api_key="sk-wrong-key-0815").models.list()
    records = [r for r in caplog.records if r.name == "baiduwx_async.gateway"]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("POST /v1/chat/completions model=ernie status=200 ")
    assert lines[0].endswith("ms")
    assert lines[1].startswith("GET /v1/models model=- status=401 ")
    everything = caplog.text
    for secret in (KEY, "sk-wrong-key-0815", "4711", "private question"):
        assert secret not in everything


# --- mounted in a user's own app, under asyncio and trio


async def test_mounted_in_a_starlette_app_with_middleware() -> None:
    async with run_emulator(seed=1) as emu:
        gateway = create_app(emu.client(), MODELS, [KEY])
        outer = Starlette(routes=[Mount("/openai", app=gateway)])
        gateway.user_middleware.append(Middleware(GZipMiddleware))  # Starlette's own path
        async with (
            serve(outer) as url,
            openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key=KEY, max_retries=0) as client,
        ):
            reply = await client.chat.completions.create(model="ernie", messages=QUESTION)  # type: ignore[arg-type]
            assert reply.model == "ernie"
            with pytest.raises(openai.NotFoundError):
                await client.models.retrieve("nothing")
            with pytest.raises(openai.AuthenticationError):
                await client.with_options(api_key="wrong").models.list()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_app_runs_under_trio_too(anyio_backend: str) -> None:
    async with run_emulator(asgi=True, seed=1) as emu:
        app = create_app(emu.client(), MODELS)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            reply = await http.post(
                "/v1/chat/completions", json={"model": "ernie", "messages": QUESTION}
            )
            assert reply.status_code == 200
            assert reply.json()["choices"][0]["message"]["content"]
            streamed = await http.post(
                "/v1/chat/completions",
                json={"model": "ernie", "messages": QUESTION, "stream": True},
            )
            assert sse_events(streamed.text)[-1] == "[DONE]"
        assert emu.stats()["streams_completed"] == 1


def test_create_app_checks_its_arguments() -> None:
    client = wx.AsyncClient(credentials=wx.StaticToken("t"))
    with pytest.raises(wx.ValidationError, match=r"models\['x'\]"):
        create_app(client, {"x": "chatty:completions"})
    with pytest.raises(wx.ValidationError, match=r"models\['x'\]"):
        create_app(client, {"x": "chat:../etc"})
    with pytest.raises(wx.ValidationError, match="models"):
        create_app(client, {})
    with pytest.raises(wx.ValidationError, match="api_keys"):
        create_app(client, MODELS, "one-key-as-a-string")
    with pytest.raises(wx.ValidationError, match="api_keys"):
        create_app(client, MODELS, ["  "])
