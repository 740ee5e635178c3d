"""Hostile answers: whatever the server sends, the client raises one of its own typed
errors (never another exception, never a hang) and holds a bounded amount of memory."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import baiduwx_async as wx
from baiduwx_async._models import decode
from baiduwx_async._protocol import error_in_answer

from .support import CHAT_URL, TOKEN, chat_body, make_client

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = ["id", "object", "created", "result", "usage", "is_truncated", "sentence_id", "is_end"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        JSON,
        st.fixed_dictionaries({}, optional={name: JSON for name in FIELDS}),
        st.builds(
            lambda changes: {**chat_body(), **changes},
            st.dictionaries(st.sampled_from(FIELDS), JSON),
        ),
    ),
    cls=st.sampled_from([wx.ChatResponse, wx.CompletionResponse, wx.ChatChunk, wx.CompletionChunk]),
)
def test_decoding_any_json_gives_a_response_or_a_protocol_error(data: Any, cls: Any) -> None:
    with contextlib.suppress(wx.ProtocolError):
        decode(data, cls)


@settings(max_examples=300)
@given(status=st.integers(100, 599), body=st.binary(max_size=300), stream=st.booleans())
def test_reading_any_answer_gives_a_result_or_our_error(
    status: int, body: bytes, stream: bool
) -> None:
    error, _ = error_in_answer(
        status,
        "reason",
        {"retry-after": "x"},
        body,
        request_id=None,
        now=0.0,
        expect_json=not stream,
    )
    assert error is None or isinstance(error, wx.WenxinError)


def test_deep_nesting_is_a_protocol_error_not_a_recursion_error() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    error, data = error_in_answer(200, "OK", {}, deep, request_id=None, now=0.0)
    assert isinstance(error, wx.ProtocolError) and data is None


pytestmark_anyio = pytest.mark.anyio


@pytestmark_anyio
@pytest.mark.parametrize(
    "body",
    [
        b'{"id": 1}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe\x00garbage",
        json.dumps(chat_body())
        .replace('"created": 1710917007', '"created": ' + "9" * 5000)
        .encode(),
        json.dumps({**chat_body(), "usage": "lots"}).encode(),
    ],
)
async def test_hostile_bodies_raise_protocol_errors(router: respx.MockRouter, body: bytes) -> None:
    router.post(CHAT_URL).mock(return_value=httpx.Response(200, content=body))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ProtocolError):
            await client.chat("mpt30b", [wx.user("hi")])


@pytestmark_anyio
async def test_oversized_answer_is_refused(router: respx.MockRouter) -> None:
    big = json.dumps(chat_body("x" * 5000)).encode()
    router.post(CHAT_URL).mock(return_value=httpx.Response(200, content=big))
    async with make_client(credentials=wx.StaticToken(TOKEN), max_response_bytes=4096) as client:
        with pytest.raises(wx.ProtocolError, match="over the limit of 4096"):
            await client.chat("mpt30b", [wx.user("hi")])
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        assert (await client.chat("mpt30b", [wx.user("hi")])).result == "x" * 5000


@pytestmark_anyio
async def test_oversized_answer_without_content_length_is_refused_while_reading(
    router: respx.MockRouter,
) -> None:
    async def endless() -> Any:
        while True:
            yield b"x" * 65536

    router.post(CHAT_URL).mock(return_value=httpx.Response(200, content=endless()))
    async with make_client(credentials=wx.StaticToken(TOKEN), max_response_bytes=1 << 20) as client:
        with pytest.raises(wx.ProtocolError, match="over the limit"):
            await client.chat("mpt30b", [wx.user("hi")])


@pytestmark_anyio
async def test_oversized_stream_line_is_refused(router: respx.MockRouter) -> None:
    line = b"data: " + b"x" * 10_000 + b"\n\n"
    router.post(CHAT_URL).mock(
        return_value=httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=line
        )
    )
    async with make_client(credentials=wx.StaticToken(TOKEN), max_response_bytes=4096) as client:
        with pytest.raises(wx.StreamError, match="exceeds 4096"):
            async for _ in client.chat_stream("mpt30b", [wx.user("hi")]):
                pass


def test_plain_http_to_another_host_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="baiduwx_async")
    wx.AsyncClient(credentials=wx.StaticToken(TOKEN), base_url="http://qianfan.example")
    assert "plain http" in caplog.text
    caplog.clear()
    for local in [
        "http://127.0.0.1:8000",
        "http://localhost:8000",
        "http://[::1]:8000",
        "https://x.example",
    ]:
        wx.AsyncClient(credentials=wx.StaticToken(TOKEN), base_url=local)
    assert "plain http" not in caplog.text


def test_https_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # Certificates are checked on both backends: tests/test_tls.py, against a TLS server.
    monkeypatch.delenv("QIANFAN_BASE_URL", raising=False)
    client = wx.AsyncClient(credentials=wx.StaticToken(TOKEN))
    assert client.base_url.scheme == "https"
