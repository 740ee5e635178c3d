"""Every error the gateway answers, as the `openai` package raises it, and the body on the
wire: status, `{"error": {"message", "type", "param", "code"}}`, `Retry-After`; errors in a
stream; body limits; no secret in any of it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

import baiduwx_async as wx

from .gateway_support import KEY, Gateway, running_gateway

pytestmark = pytest.mark.anyio

QUESTION = [{"role": "user", "content": "Please introduce The Great Wall"}]
SECRETS = ("test-api-key", "test-secret-key", "not-the-secret-key", KEY)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    async with running_gateway(app_options={"max_body_bytes": 64 * 1024}) as gateway:
        yield gateway


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    text = exc.response.text
    assert not [secret for secret in SECRETS if secret in text]
    assert "24." not in text  # no access token
    error: dict[str, Any] = body["error"]
    return error


async def chat(gw: Gateway, **fields: Any) -> Any:
    fields.setdefault("model", "ernie")
    fields.setdefault("messages", QUESTION)
    return await gw.openai().chat.completions.create(**fields)


# --- 401, 404


async def test_wrong_key_is_401_invalid_api_key(gw: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await gw.openai(api_key="sk-not-a-key").chat.completions.create(
            model="ernie",
            messages=QUESTION,  # type: ignore[arg-type]
        )
    error = error_of(caught.value)
    assert caught.value.status_code == 401
    assert error["code"] == "invalid_api_key"
    assert "sk-not-a-key" not in caught.value.response.text
    assert gw.emu.stats()["calls"] == 0


async def test_missing_key_is_401(gw: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
            answer = await http.post("/v1/chat/completions", json={}, headers=headers)
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == "invalid_api_key"


async def test_unknown_model_is_404_model_not_found(gw: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await chat(gw, model="gpt-4o")
    error = error_of(caught.value)
    assert (error["code"], error["param"]) == ("model_not_found", "model")


async def test_a_model_of_another_kind_is_404_naming_its_route(gw: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await gw.openai().completions.create(model="ernie", prompt="hello")
    assert "/v1/chat" in error_of(caught.value)["message"]


async def test_unknown_url_and_wrong_method(gw: Gateway) -> None:
    async with gw.http() as http:
        unknown = await http.get("/v1/assistants")
        wrong = await http.get("/v1/chat/completions")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"
    assert wrong.status_code == 405


# --- 400: what is refused, and the client's own checks with the caller's field names


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"seed": 7}, "seed"),
        ({"temperature": 1.5}, "temperature"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
        ),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"top_p": 2}, "top_p"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"messages": []}, "messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "system", "content": "late"},
                ]
            },
            "messages[1].role",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1]",
        ),
        (
            # the client finds the blank assistant turn at upstream index 1: the caller's 2
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": " "},
                    {"role": "user", "content": "again"},
                ]
            },
            "messages[2].content",
        ),
        (
            {"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "{}"}]},
            "messages[0].tool_call_id",
        ),
    ],
)
async def test_invalid_requests_are_400_naming_the_field(
    gw: Gateway, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await chat(gw, **fields)
    error = error_of(caught.value)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert gw.emu.stats()["calls"] == 0  # refused before anything went upstream


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"echo": True}, "echo"), ({"best_of": 3}, "best_of"), ({"prompt": [1, 2, 3]}, "prompt")],
)
async def test_invalid_completions_are_400(gw: Gateway, fields: dict[str, Any], param: str) -> None:
    fields = {"model": "pythia", "prompt": "hello", **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        await gw.openai().completions.create(**fields)
    assert error_of(caught.value)["param"] == param


async def test_malformed_json_and_non_objects_are_400(gw: Gateway) -> None:
    async with gw.http() as http:
        for body in (b'{"model": "ernie",', b"[1, 2]", b"\xff\xfe"):
            answer = await http.post("/v1/chat/completions", content=body)
            assert answer.status_code == 400
            assert answer.json()["error"]["code"] == "invalid_json"


# --- 413


async def test_a_body_over_the_limit_is_413(gw: Gateway) -> None:
    big = [{"role": "user", "content": "x" * 70_000}]
    with pytest.raises(openai.APIStatusError) as caught:
        await chat(gw, messages=big)
    assert caught.value.status_code == 413
    assert error_of(caught.value)["code"] == "request_too_large"


async def test_a_chunked_body_over_the_limit_is_413(gw: Gateway) -> None:
    async def pieces() -> AsyncIterator[bytes]:  # no content-length: read until the limit
        yield b'{"model": "ernie", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}]}'

    async with gw.http() as http:
        answer = await http.post("/v1/chat/completions", content=pieces())
    assert answer.status_code == 413
    assert gw.emu.stats()["calls"] == 0


# --- upstream failures


async def test_upstream_rate_limit_is_429_with_retry_after(gw: Gateway) -> None:
    gw.emu.configure(faults={"http_429": 1.0}, retry_after=7)
    with pytest.raises(openai.RateLimitError) as caught:
        await chat(gw)
    error = error_of(caught.value)
    assert error["code"] == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "7"


async def test_upstream_qps_error_code_is_429(gw: Gateway) -> None:
    gw.emu.configure(faults={"error_4": 1.0})
    with pytest.raises(openai.RateLimitError) as caught:
        await chat(gw)
    assert error_of(caught.value)["code"] == "rate_limit_exceeded"


async def test_upstream_quota_is_429_insufficient_quota(gw: Gateway) -> None:
    gw.emu.configure(daily_quota=1)
    await chat(gw)
    with pytest.raises(openai.RateLimitError) as caught:
        await chat(gw)
    error = error_of(caught.value)
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")


async def test_upstream_timeout_is_504() -> None:
    async with running_gateway(client_options={"timeout": 0.3}, latency=2.0) as gw:
        with pytest.raises(openai.InternalServerError) as caught:
            await chat(gw)
    assert caught.value.status_code == 504
    assert error_of(caught.value)["code"] == "timeout"


@pytest.mark.parametrize("fault", ["http_500", "error_336100", "drop"])
async def test_other_upstream_failures_are_502(gw: Gateway, fault: str) -> None:
    gw.emu.configure(faults={fault: 1.0})
    with pytest.raises(openai.InternalServerError) as caught:
        await chat(gw)
    assert caught.value.status_code == 502
    assert error_of(caught.value)["type"] == "api_error"


async def test_refused_upstream_credentials_are_502_without_the_secret() -> None:
    wrong = wx.OAuthCredentials("test-api-key", "not-the-secret-key")
    async with running_gateway(client_options={"credentials": wrong}) as gw:
        with pytest.raises(openai.InternalServerError) as caught:
            await chat(gw)
    assert caught.value.status_code == 502
    error_of(caught.value)  # checks that no key shows


async def test_too_long_upstream_is_context_length_exceeded(gw: Gateway) -> None:
    gw.emu.configure(fail_prompts={"too long for you": 336007})
    with pytest.raises(openai.BadRequestError) as caught:
        await chat(gw, messages=[{"role": "user", "content": "too long for you"}])
    assert error_of(caught.value)["code"] == "context_length_exceeded"


# --- errors inside a stream


async def test_an_error_after_the_stream_started_is_one_error_event(gw: Gateway) -> None:
    gw.emu.configure(faults={"midstream_error": 1.0})
    stream = await chat(gw, stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received.append(chunk)
    assert received  # the error came after the stream had started
    assert "upstream" in caught.value.message
    async with gw.http() as http:
        answer = await http.post(
            "/v1/chat/completions", json={"model": "ernie", "messages": QUESTION, "stream": True}
        )
    assert answer.status_code == 200
    events = [e for e in answer.text.split("\n\n") if e]
    last = json.loads(events[-1].removeprefix("data: "))
    assert set(last) == {"error"} and last["error"]["type"] == "api_error"
    assert "[DONE]" not in answer.text
    assert not [e for e in events[:-1] if "error" in json.loads(e.removeprefix("data: "))]


async def test_an_error_before_the_stream_started_is_a_plain_error_answer(gw: Gateway) -> None:
    gw.emu.configure(faults={"http_429": 1.0}, retry_after=3)
    with pytest.raises(openai.RateLimitError) as caught:
        await chat(gw, stream=True)
    assert caught.value.response.headers["retry-after"] == "3"
