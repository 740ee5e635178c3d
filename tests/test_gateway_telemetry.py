"""The gateway's SERVER span per request, read back with the SDK's in-memory exporter: its
HTTP attributes, the caller's `traceparent` as its parent, the client's CLIENT span as its
child; streams, errors, and a client with telemetry off."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator, Sequence

import anyio
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from .gateway_support import KEY, Gateway, running_gateway
from .otel_support import Telemetry, collecting

pytestmark = pytest.mark.anyio

QUESTION = [{"role": "user", "content": "Please introduce The Great Wall"}]
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn serves the gateway on asyncio only


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with collecting() as telemetry:
        yield telemetry


@pytest.fixture
async def gw(otel: Telemetry) -> AsyncIterator[Gateway]:
    async with running_gateway() as gateway:
        yield gateway


async def ended(otel: Telemetry, count: int) -> tuple[ReadableSpan, ...]:
    """The spans, once `count` have ended: the gateway ends its span after the last byte
    of the answer is sent, which may be just after the caller has read it."""
    with anyio.fail_after(10):
        while len(otel.spans()) < count:
            await anyio.sleep(0.005)
    spans = otel.spans()
    assert len(spans) == count, [s.name for s in spans]
    return tuple(spans)


def by_kind(spans: Sequence[ReadableSpan]) -> tuple[ReadableSpan, ReadableSpan]:
    """The one SERVER span and the one CLIENT span."""
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (client,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    return server, client


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def everything_recorded(spans: Sequence[ReadableSpan]) -> str:
    return json.dumps(
        [
            {
                "name": s.name,
                "attributes": dict(s.attributes or {}),
                "events": [[e.name, dict(e.attributes or {})] for e in s.events],
                "status": s.status.description,
            }
            for s in spans
        ],
        ensure_ascii=False,
        default=str,
    )


async def test_an_incoming_traceparent_parents_the_server_span_and_the_client_span(
    gw: Gateway, otel: Telemetry
) -> None:
    caller = gw.openai(default_headers={"traceparent": TRACEPARENT, "tracestate": "vendor=value"})
    reply = await caller.chat.completions.create(model="ernie", messages=QUESTION)  # type: ignore[arg-type]
    server, client = by_kind(await ended(otel, 2))

    assert server.name == "POST /v1/chat/completions"
    assert dict(server.attributes or {}) == {
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "url.scheme": "http",
        "http.route": "/v1/chat/completions",
        "network.protocol.version": "1.1",
        "server.address": "127.0.0.1",
        "server.port": port_of(gw.url),
        "http.response.status_code": 200,
        "gen_ai.request.model": "ernie",
    }
    assert server.status.status_code is StatusCode.UNSET
    assert server.context is not None and server.parent is not None
    assert server.context.trace_id == TRACE_ID
    assert server.parent.span_id == PARENT_ID
    assert server.parent.is_remote
    assert server.context.trace_state.get("vendor") == "value"

    assert client.name == "chat completions"
    assert client.context is not None and client.parent is not None
    assert client.context.trace_id == TRACE_ID
    assert client.parent.span_id == server.context.span_id
    assert client.attributes is not None
    assert client.attributes["gen_ai.response.id"] == reply.id.removeprefix("chatcmpl-")
    # the client call ran inside the request
    assert server.start_time is not None and client.start_time is not None
    assert server.end_time is not None and client.end_time is not None
    assert server.start_time <= client.start_time <= client.end_time <= server.end_time

    recorded = everything_recorded([server, client])
    assert KEY not in recorded
    assert QUESTION[0]["content"] not in recorded


async def test_without_traceparent_the_server_span_is_a_new_root(
    gw: Gateway, otel: Telemetry
) -> None:
    await gw.openai().completions.create(model="pythia", prompt="Introduce the city Beijing")
    server, client = by_kind(await ended(otel, 2))
    assert server.name == "POST /v1/completions"
    assert server.parent is None
    assert server.context is not None and client.context is not None
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert client.context.trace_id == server.context.trace_id != TRACE_ID
    assert client.name == "text_completion pythia12b"


async def test_two_requests_are_two_traces(gw: Gateway, otel: Telemetry) -> None:
    caller = gw.openai()
    async with anyio.create_task_group() as group:
        for _ in range(2):
            group.start_soon(lambda: caller.embeddings.create(model="bge", input=["a", "b"]))
    spans = await ended(otel, 4)
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len({s.context.trace_id for s in servers if s.context}) == 2
    for client in (s for s in spans if s.kind is SpanKind.CLIENT):
        assert client.parent is not None
        assert client.parent.span_id in {s.context.span_id for s in servers if s.context}


async def test_a_stream_span_ends_when_the_stream_ends(gw: Gateway, otel: Telemetry) -> None:
    caller = gw.openai(default_headers={"traceparent": TRACEPARENT})
    stream = await caller.chat.completions.create(
        model="ernie",
        messages=QUESTION,  # type: ignore[arg-type]
        stream=True,
    )
    assert isinstance(stream, openai.AsyncStream)
    pieces = [chunk async for chunk in stream]
    assert len(pieces) > 2
    server, client = by_kind(await ended(otel, 2))
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.request.model"] == "ernie"
    assert server.context is not None and server.context.trace_id == TRACE_ID
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert client.attributes is not None
    assert "gen_ai.response.time_to_first_chunk" in client.attributes
    assert server.end_time is not None and client.end_time is not None
    assert client.end_time <= server.end_time


async def test_a_caller_leaving_a_stream_ends_the_server_span(gw: Gateway, otel: Telemetry) -> None:
    gw.emu.configure(tokens_per_second=15)  # about 0.5 s a sentence: it would last seconds
    async with gw.http() as http:
        body = {"model": "ernie", "messages": QUESTION, "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=body) as answer:
            async for line in answer.aiter_lines():
                if '"content":"' in line and '"role"' not in line:
                    break  # one sentence arrived; leaving the block drops the connection
    server, client = by_kind(await ended(otel, 2))
    assert gw.emu.stats()["streams_completed"] == 0
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert "error.type" not in server.attributes
    assert client.parent is not None and server.context is not None
    assert client.parent.span_id == server.context.span_id


async def test_a_4xx_answer_is_recorded_but_not_an_error(gw: Gateway, otel: Telemetry) -> None:
    with pytest.raises(openai.NotFoundError):
        await gw.openai().chat.completions.create(model="nope", messages=QUESTION)  # type: ignore[arg-type]
    (server,) = await ended(otel, 1)  # no upstream call, no client span
    assert server.kind is SpanKind.SERVER
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 404
    assert server.attributes["gen_ai.request.model"] == "nope"
    # the conventions: a server's 4xx is the caller's error, not the server's
    assert "error.type" not in server.attributes
    assert server.status.status_code is StatusCode.UNSET


async def test_a_refused_key_records_no_key(gw: Gateway, otel: Telemetry) -> None:
    with pytest.raises(openai.AuthenticationError):
        await gw.openai(api_key="sk-wrong-key-xyz").models.list()
    (server,) = await ended(otel, 1)
    assert server.name == "GET /v1/models"
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 401
    assert "sk-wrong-key-xyz" not in everything_recorded([server])


async def test_an_upstream_failure_is_a_5xx_error_span(gw: Gateway, otel: Telemetry) -> None:
    gw.emu.configure(faults={"http_500": 1.0})
    with pytest.raises(openai.InternalServerError):
        await gw.openai().chat.completions.create(model="ernie", messages=QUESTION)  # type: ignore[arg-type]
    server, client = by_kind(await ended(otel, 2))
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 502
    assert server.attributes["error.type"] == "502"
    assert server.status.status_code is StatusCode.ERROR
    assert client.status.status_code is StatusCode.ERROR
    assert client.parent is not None and server.context is not None
    assert client.parent.span_id == server.context.span_id


async def test_a_stream_failing_after_its_200_is_an_error_span(
    gw: Gateway, otel: Telemetry
) -> None:
    gw.emu.configure(faults={"midstream_error": 1.0})
    async with gw.http() as http:
        body = {"model": "ernie", "messages": QUESTION, "stream": True}
        answer = await http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200
    assert '"error"' in answer.text
    server, _ = by_kind(await ended(otel, 2))
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["error.type"] == "502"  # the status of its error event
    assert server.status.status_code is StatusCode.ERROR


async def test_an_unknown_url_has_no_route(gw: Gateway, otel: Telemetry) -> None:
    async with gw.http() as http:
        assert (await http.get("/v2/whatever")).status_code == 404
        assert (await http.get("/v1/models/ernie")).status_code == 200
    unknown, model = await ended(otel, 2)
    assert unknown.name == "GET"
    assert unknown.attributes is not None and "http.route" not in unknown.attributes
    assert unknown.attributes["url.path"] == "/v2/whatever"
    assert model.name == "GET /v1/models/{model}"
    assert model.attributes is not None
    assert model.attributes["http.route"] == "/v1/models/{model}"
    assert model.attributes["url.path"] == "/v1/models/ernie"


async def test_server_address_and_port_come_from_the_host_header(
    gw: Gateway, otel: Telemetry
) -> None:
    async with gw.http() as http:
        # b"\xb2" is a digit to str.isdigit, not to int()
        for host in (b"[::1]:8080", b"gw.example", b"gw.example:\xb2"):
            assert (await http.get("/healthz", headers={b"Host": host})).status_code == 200
    spans = await ended(otel, 3)
    found = [
        (s.attributes["server.address"], s.attributes["server.port"]) for s in spans if s.attributes
    ]
    # no port in the header (or no number): the port the server listens on
    socket_port = port_of(gw.url)
    assert found == [("::1", 8080), ("gw.example", socket_port), ("gw.example", socket_port)]


async def test_telemetry_false_makes_no_server_span(otel: Telemetry) -> None:
    async with running_gateway(client_options={"telemetry": False}) as gateway:
        assert gateway.app._tracing is None
        caller = gateway.openai(default_headers={"traceparent": TRACEPARENT})
        await caller.chat.completions.create(model="ernie", messages=QUESTION)  # type: ignore[arg-type]
        await anyio.sleep(0.05)  # a span, had one been made, would have ended by now
    assert otel.spans() == []


def test_without_opentelemetry_the_gateway_imports_none_of_it() -> None:
    code = """
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Blocker())
        import baiduwx_async as wx
        from baiduwx_async.gateway import create_app

        client = wx.AsyncClient(credentials=wx.StaticToken("t"), base_url="https://wx.test")
        app = create_app(client, {"ernie": "chat:completions"})
        print(app._tracing, sorted(m for m in sys.modules if m.startswith("opentelemetry")))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["None", "[]"]
