"""OpenTelemetry: the spans and metrics of each public call, read back with the SDK's
in-memory exporter and metric reader, against the emulator (in-process under asyncio and
trio, on a socket for the aiohttp backend) and respx."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import anyio
import httpx
import pytest
import respx
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import baiduwx_async as wx
from baiduwx_async.emulator import Emulator, EmulatorConfig
from baiduwx_async.testing import run_emulator

from .otel_support import Telemetry, collecting
from .support import API_KEY, COMPLETIONS_URL, SECRET_KEY, TOKEN, completion_body, error_body
from .support import make_client as make_respx_client

pytestmark = pytest.mark.anyio

CHAT = "mpt30b"
COMPLETIONS = "pythia12b"
EMULATOR_URL = "http://emulator.localhost"
EMULATOR_KEY, EMULATOR_SECRET = "test-api-key", "test-secret-key"
DURATION_BOUNDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48]
DURATION_BOUNDS += [40.96, 81.92]
TOKEN_BOUNDS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]
TOKEN_BOUNDS += [16777216, 67108864]
CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with collecting() as telemetry:
        yield telemetry


def emulator_client(emulator: Emulator, **kwargs: Any) -> wx.AsyncClient:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app))
    kwargs.setdefault("retry_policy", wx.RetryPolicy(initial_backoff=0.001, max_backoff=0.01))
    return wx.AsyncClient(
        credentials=wx.OAuthCredentials(EMULATOR_KEY, EMULATOR_SECRET),
        base_url=EMULATOR_URL,
        http_client=http,
        **kwargs,
    )


def points(metric: Any) -> list[Any]:
    return list(metric.data.data_points)


def token_sums(metric: Any) -> dict[str, int]:
    sums: dict[str, int] = {}
    for point in points(metric):
        kind = point.attributes["gen_ai.token.type"]
        sums[kind] = sums.get(kind, 0) + point.sum
    return sums


def everything_recorded(spans: Sequence[ReadableSpan]) -> str:
    """Every attribute, event and status of `spans`, as one string to search."""
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


COMMON = {
    "gen_ai.provider.name": "baidu.qianfan",
    "server.address": "emulator.localhost",
    "server.port": 80,
}


# --- calls


async def test_chat_makes_one_client_span_with_the_conventions_attributes(
    otel: Telemetry,
) -> None:
    emulator = Emulator(EmulatorConfig(seed=1))
    async with emulator_client(emulator) as client:
        reply = await client.chat(
            CHAT,
            [wx.user("Please introduce The Great Wall")],
            temperature=0.7,
            top_p=0.9,
            top_k=5,
            penalty_score=1.2,
            stop=["\n\n", "END"],
        )
    span = otel.span()
    assert span.name == f"chat {CHAT}"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        **COMMON,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": CHAT,
        "gen_ai.request.temperature": 0.7,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.top_k": 5,
        "baidu.qianfan.request.penalty_score": 1.2,
        "gen_ai.request.stop_sequences": ("\n\n", "END"),
        "gen_ai.response.id": reply.id,
        "gen_ai.usage.input_tokens": reply.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": reply.usage.completion_tokens,
    }
    assert reply.usage.completion_tokens > 0
    assert not span.events


async def test_parameters_left_unset_are_not_recorded(otel: Telemetry) -> None:
    emulator = Emulator(EmulatorConfig(seed=2))
    async with emulator_client(emulator) as client:
        await client.complete(COMPLETIONS, "Introduce the city Beijing")
    span = otel.span()
    assert span.name == f"text_completion {COMPLETIONS}"
    assert span.attributes is not None
    assert span.attributes["gen_ai.operation.name"] == "text_completion"
    assert {key for key in span.attributes if key.startswith("gen_ai.request.")} == {
        "gen_ai.request.model"
    }


async def test_metrics_have_the_conventions_names_units_buckets_and_sums(
    otel: Telemetry,
) -> None:
    emulator = Emulator(EmulatorConfig(seed=3))
    async with emulator_client(emulator) as client:
        replies = [await client.complete(COMPLETIONS, f"prompt {i}") for i in range(5)]
        chat = await client.chat(CHAT, [wx.user("hello")])
    found = otel.metrics()
    assert set(found) == {"gen_ai.client.operation.duration", "gen_ai.client.token.usage"}
    duration = found["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    by_operation = {p.attributes["gen_ai.operation.name"]: p for p in points(duration)}
    assert by_operation["text_completion"].count == 5
    assert by_operation["chat"].count == 1
    assert list(by_operation["chat"].explicit_bounds) == DURATION_BOUNDS
    assert dict(by_operation["chat"].attributes) == {
        **COMMON,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": CHAT,
    }
    usage = found["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    assert all(list(p.explicit_bounds) == TOKEN_BOUNDS for p in points(usage))
    assert token_sums(usage) == {
        "input": sum(r.usage.prompt_tokens for r in [*replies, chat]),
        "output": sum(r.usage.completion_tokens for r in [*replies, chat]),
    }


async def test_a_failed_call_sets_error_type_and_status(otel: Telemetry) -> None:
    emulator = Emulator(EmulatorConfig(fail_prompts={"poison": 336003}))
    async with emulator_client(emulator) as client:
        with pytest.raises(wx.InvalidRequestError):
            await client.complete(COMPLETIONS, "poison")
    span = otel.span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "InvalidRequestError"
    assert "gen_ai.usage.input_tokens" not in span.attributes
    found = otel.metrics()
    (point,) = points(found["gen_ai.client.operation.duration"])
    assert point.attributes["error.type"] == "InvalidRequestError"
    assert "gen_ai.client.token.usage" not in found


async def test_each_retry_is_a_span_event(otel: Telemetry, router: respx.MockRouter) -> None:
    router.post(url__startswith=COMPLETIONS_URL).mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(200, json=error_body(18, "qps limit")),
            httpx.Response(200, json=completion_body()),
        ]
    )
    async with make_respx_client(credentials=wx.StaticToken(TOKEN)) as client:
        reply = await client.complete(COMPLETIONS, "hello")
    span = otel.span()
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert span.attributes["server.address"] == "wx.test"
    assert span.attributes["server.port"] == 443
    assert span.attributes["gen_ai.response.id"] == reply.id
    retries = [e for e in span.events if e.name == "baiduwx.retry"]
    assert [e.attributes["baiduwx.retry.attempt"] for e in retries] == [1, 2]  # type: ignore[index]
    assert [e.attributes["error.type"] for e in retries] == [  # type: ignore[index]
        "ServerError",
        "RateLimitError",
    ]
    assert all(0 <= e.attributes["baiduwx.retry.wait"] <= 0.002 for e in retries)  # type: ignore[index,operator]
    assert TOKEN not in everything_recorded([span])


async def test_retries_spent_end_in_an_error_span(
    otel: Telemetry, router: respx.MockRouter
) -> None:
    router.post(url__startswith=COMPLETIONS_URL).mock(return_value=httpx.Response(502))
    async with make_respx_client(credentials=wx.StaticToken(TOKEN), max_retries=2) as client:
        with pytest.raises(wx.ServerError):
            await client.complete(COMPLETIONS, "hello")
    span = otel.span()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["baiduwx.retry"] * 2


async def test_ernie_fields_become_the_conventions_request_attributes(otel: Telemetry) -> None:
    emulator = Emulator(EmulatorConfig(seed=14))
    async with emulator_client(emulator) as client:
        reply = await client.chat(
            "ernie-4.0-8k",
            [wx.user("answer in JSON")],
            max_output_tokens=40,
            response_format="json_object",
            system="You are terse.",
        )
    attributes = dict(otel.span().attributes or {})
    assert attributes["gen_ai.request.max_tokens"] == 40
    assert attributes["gen_ai.output.type"] == "json"
    assert "You are terse." not in everything_recorded(otel.spans()), "content is off"
    expected = (reply.finish_reason,) if reply.finish_reason else None
    assert attributes.get("gen_ai.response.finish_reasons") == expected


async def test_embed_makes_one_span_for_all_its_requests(otel: Telemetry) -> None:
    emulator = Emulator(EmulatorConfig(seed=15))
    texts = [f"text number {i}" for i in range(20)]
    async with emulator_client(emulator) as client:
        reply = await client.embed("embedding-v1", texts, texts_per_request=8)
    assert emulator.stats()["calls"] == 3, "three requests..."
    span = otel.span()  # ...one operation
    assert span.name == "embeddings embedding-v1"
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        **COMMON,
        "gen_ai.operation.name": "embeddings",
        "gen_ai.request.model": "embedding-v1",
        "gen_ai.response.id": reply.id,
        "gen_ai.usage.input_tokens": reply.usage.prompt_tokens,
        "gen_ai.embeddings.dimension.count": len(reply.vectors[0]),
    }
    found = otel.metrics()
    assert token_sums(found["gen_ai.client.token.usage"]) == {"input": reply.usage.prompt_tokens}
    assert reply.usage.prompt_tokens > 0
    (point,) = points(found["gen_ai.client.operation.duration"])
    assert point.count == 1 and point.attributes["gen_ai.operation.name"] == "embeddings"


async def test_batch_embed_makes_a_span_per_request_under_the_callers_span(
    otel: Telemetry,
) -> None:
    emulator = Emulator(EmulatorConfig(seed=16))
    tracer = trace.get_tracer("tests")
    async with emulator_client(emulator) as client:
        with tracer.start_as_current_span("embedding job") as parent:
            results = await client.batch_embed(
                "embedding-v1", [f"t{i}" for i in range(10)], texts_per_request=4
            )
    assert all(r.ok for r in results)
    calls = [s for s in otel.spans() if s.name != "embedding job"]
    assert [s.name for s in calls] == ["embeddings embedding-v1"] * 3
    ours = parent.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == ours for s in calls)


# --- streams


async def test_a_stream_span_ends_when_the_stream_ends_and_records_the_first_chunk(
    otel: Telemetry,
) -> None:
    emulator = Emulator(EmulatorConfig(seed=4, sentences_min=4, sentences_max=4))
    async with emulator_client(emulator) as client:
        stream = client.chat_stream(CHAT, [wx.user("tell me a story")], temperature=0.5)
        assert otel.spans() == [], "nothing happens before the stream is opened"
        async with stream:
            chunks = 0
            async for _ in stream:
                chunks += 1
                if chunks == 1:
                    assert otel.spans() == [], "the span lasts as long as the stream"
    assert chunks == 4
    span = otel.span()
    assert span.name == f"chat {CHAT}"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert stream.usage is not None
    assert attributes["gen_ai.response.id"] == stream.id
    assert attributes["gen_ai.usage.output_tokens"] == stream.usage.completion_tokens
    assert attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.response.finish_reasons"] == ("normal",)
    assert span.end_time is not None and span.start_time is not None
    lasted = (span.end_time - span.start_time) / 1e9
    assert 0 < attributes["gen_ai.response.time_to_first_chunk"] <= lasted
    found = otel.metrics()
    (first,) = points(found["gen_ai.client.operation.time_to_first_chunk"])
    assert found["gen_ai.client.operation.time_to_first_chunk"].unit == "s"
    assert first.count == 1 and first.sum == attributes["gen_ai.response.time_to_first_chunk"]
    assert list(first.explicit_bounds) == DURATION_BOUNDS
    assert token_sums(found["gen_ai.client.token.usage"]) == {
        "input": stream.usage.prompt_tokens,
        "output": stream.usage.completion_tokens,
    }


async def test_a_stream_left_early_ends_its_span_at_once(otel: Telemetry) -> None:
    emulator = Emulator(EmulatorConfig(seed=5, sentences_min=6, sentences_max=6))
    async with emulator_client(emulator) as client:
        async with client.complete_stream(COMPLETIONS, "a long story") as stream:
            async for _ in stream:
                break
        (span,) = otel.spans()
        assert not stream.finished
    assert span.name == f"text_completion {COMPLETIONS}"
    assert span.status.status_code is StatusCode.UNSET
    assert "gen_ai.response.time_to_first_chunk" in (span.attributes or {})
    assert "gen_ai.client.operation.duration" in otel.metrics()


class HangingStream(httpx.AsyncByteStream):
    """One chunk of an SSE answer, then silence."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = {
            "id": "as-hang",
            "object": "completion",
            "created": 1,
            "sentence_id": 0,
            "is_end": False,
            "result": "Once upon a time",
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }
        yield f"data: {json.dumps(chunk)}\n\n".encode()
        await anyio.sleep_forever()


async def test_a_stream_cancelled_midway_ends_its_span_with_the_cancellation(
    otel: Telemetry, router: respx.MockRouter
) -> None:
    router.post(url__startswith=COMPLETIONS_URL).mock(
        return_value=httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=HangingStream()
        )
    )
    async with make_respx_client(credentials=wx.StaticToken(TOKEN)) as client:
        async with client.complete_stream(COMPLETIONS, "a long story") as stream:
            with anyio.move_on_after(0.05) as scope:
                async for _ in stream:
                    pass
            assert scope.cancelled_caught and not stream.finished
            assert len(otel.spans()) == 1, "cancelled while reading: the stream closed"
    span = otel.span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] in ("CancelledError", "Cancelled")
    assert span.attributes["gen_ai.response.time_to_first_chunk"] < 0.05
    assert span.attributes["gen_ai.response.id"] == "as-hang"


async def test_a_stream_that_breaks_midway_ends_its_span_with_the_error(otel: Telemetry) -> None:
    emulator = Emulator(EmulatorConfig(seed=7, faults={"midstream_error": 1.0}))
    async with emulator_client(emulator) as client:
        with pytest.raises(wx.APIError):
            async with client.chat_stream(CHAT, [wx.user("hi")]) as stream:
                async for _ in stream:
                    pass
    span = otel.span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ServerError"
    assert "gen_ai.response.time_to_first_chunk" in span.attributes


async def test_a_stream_that_never_opens_has_no_first_chunk(otel: Telemetry) -> None:
    emulator = Emulator(EmulatorConfig(fail_prompts={"poison": 336003}))
    async with emulator_client(emulator) as client:
        with pytest.raises(wx.InvalidRequestError):
            async with client.complete_stream(COMPLETIONS, "poison"):
                pass
    span = otel.span()
    assert span.status.status_code is StatusCode.ERROR
    assert "gen_ai.response.time_to_first_chunk" not in (span.attributes or {})
    assert "gen_ai.client.operation.time_to_first_chunk" not in otel.metrics()


# --- concurrency and parents


async def test_fifty_concurrent_calls_make_fifty_spans_under_the_callers_span(
    otel: Telemetry,
) -> None:
    emulator = Emulator(EmulatorConfig(seed=8, latency=0.005))
    tracer = trace.get_tracer("tests")
    async with emulator_client(emulator) as client:
        with tracer.start_as_current_span("request") as parent:
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(client.complete, COMPLETIONS, f"prompt {i}")
    assert emulator.stats()["max_in_flight"] > 1, "the calls overlapped"
    calls = [s for s in otel.spans() if s.name != "request"]
    assert len(calls) == 50
    assert len({s.context.span_id for s in calls}) == 50
    ours = parent.get_span_context()
    assert all(s.parent is not None and s.parent.span_id == ours.span_id for s in calls)
    assert {s.context.trace_id for s in calls} == {ours.trace_id}
    assert points(otel.metrics()["gen_ai.client.operation.duration"])[0].count == 50


async def test_batch_items_are_children_of_the_callers_span(otel: Telemetry) -> None:
    emulator = Emulator(EmulatorConfig(seed=9, fail_prompts={"p7": 336003}))
    tracer = trace.get_tracer("tests")
    async with emulator_client(emulator) as client:
        with tracer.start_as_current_span("batch") as parent:
            results = await client.batch_complete(
                COMPLETIONS, [f"p{i}" for i in range(20)], concurrency=4
            )
            conversations = [[wx.user(f"q{i}")] for i in range(5)]
            async for _ in client.iter_batch_chat(CHAT, conversations, concurrency=2):
                pass
    assert [r.ok for r in results].count(False) == 1
    calls = [s for s in otel.spans() if s.name != "batch"]
    assert len(calls) == 25
    assert len({s.context.span_id for s in calls}) == 25
    ours = parent.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == ours for s in calls)
    failed = [s for s in calls if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_calls_and_streams_on_the_aiohttp_backend(otel: Telemetry) -> None:
    async with run_emulator(seed=13) as emu:
        async with emu.client(http_backend="aiohttp") as client:
            reply = await client.chat(CHAT, [wx.user("hello")])
            async with client.chat_stream(CHAT, [wx.user("hello")]) as stream:
                await stream.collect()
            port = client.base_url.port
    plain, streamed = otel.spans()
    assert (plain.name, streamed.name) == (f"chat {CHAT}", f"chat {CHAT}")
    assert plain.attributes is not None and streamed.attributes is not None
    assert plain.attributes["gen_ai.response.id"] == reply.id
    assert streamed.attributes["gen_ai.response.id"] == stream.id
    assert plain.attributes["server.address"] == "127.0.0.1"
    assert plain.attributes["server.port"] == port
    assert "gen_ai.response.time_to_first_chunk" in streamed.attributes


# --- content


async def test_no_content_is_recorded_by_default(
    otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CAPTURE, raising=False)
    emulator = Emulator(EmulatorConfig(seed=10))
    async with emulator_client(emulator) as client:
        reply = await client.chat(CHAT, [wx.user("a secret question")])
        async with client.complete_stream(COMPLETIONS, "another private prompt") as stream:
            await stream.collect()
    recorded = everything_recorded(otel.spans())
    assert len(otel.spans()) == 2
    for private in ("a secret question", "another private prompt", reply.result, stream.text):
        assert private not in recorded
    assert "gen_ai.client.inference.operation.details" not in recorded


async def test_content_capture_records_the_conventions_message_shape(
    otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE, "true")
    emulator = Emulator(EmulatorConfig(seed=11))
    async with emulator_client(emulator) as client:
        monkeypatch.delenv(CAPTURE)  # read when the client was made, not per call
        conversation = [
            wx.user("first"),
            wx.assistant("an answer"),
            {"role": "user", "content": "second"},
        ]
        reply = await client.chat(CHAT, conversation)
        async with client.complete_stream(COMPLETIONS, "write a poem") as stream:
            async for _ in stream:
                pass
    chat_span, stream_span = otel.spans()
    (details,) = chat_span.events
    assert details.name == "gen_ai.client.inference.operation.details"
    assert details.attributes is not None
    assert json.loads(str(details.attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "first"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "an answer"}]},
        {"role": "user", "parts": [{"type": "text", "content": "second"}]},
    ]
    assert json.loads(str(details.attributes["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": reply.result}]}
    ]
    (details,) = stream_span.events
    assert details.attributes is not None
    assert json.loads(str(details.attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "write a poem"}]}
    ]
    assert json.loads(str(details.attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": stream.text}],
            "finish_reason": "normal",
        }
    ]
    recorded = everything_recorded(otel.spans())
    for secret in (EMULATOR_KEY, EMULATOR_SECRET, emulator.issue_token()[:12], "access_token"):
        assert secret not in recorded


async def test_content_capture_of_a_function_call_round(
    otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE, "true")
    weather = wx.Function(
        "get_weather",
        "The weather in a city",
        {"type": "object", "properties": {"city": {"type": "string"}}},
    )
    emulator = Emulator(EmulatorConfig(seed=17))
    async with emulator_client(emulator) as client:
        question = [wx.user("What is the weather in get_weather Beijing?")]
        asked = await client.chat("ernie-4.0-8k", question, functions=[weather], system="Be brief.")
        assert asked.function_call is not None
        answer = [
            *question,
            asked.message,
            wx.function_result("get_weather", '{"temperature": 25}'),
        ]
        await client.chat("ernie-4.0-8k", answer, functions=[weather])
    first, second = (span.events[0].attributes or {} for span in otel.spans())
    assert json.loads(str(first["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "Be brief."}
    ]
    (out,) = json.loads(str(first["gen_ai.output.messages"]))
    assert out["role"] == "assistant" and out["finish_reason"] == "function_call"
    (call,) = [p for p in out["parts"] if p["type"] == "tool_call"]
    assert call["name"] == "get_weather"
    assert call["arguments"] == json.loads(asked.function_call.arguments)
    sent = json.loads(str(second["gen_ai.input.messages"]))
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["parts"][-1]["type"] == "tool_call"
    assert sent[2]["parts"] == [
        {"type": "tool_call_response", "id": None, "response": '{"temperature": 25}'}
    ]


async def test_no_secret_is_recorded_even_with_content_capture(
    otel: Telemetry, monkeypatch: pytest.MonkeyPatch, router: respx.MockRouter
) -> None:
    monkeypatch.setenv(CAPTURE, "true")
    router.post(url__startswith=COMPLETIONS_URL).mock(
        side_effect=[
            httpx.Response(200, json=error_body(110, "Access token invalid or no longer valid")),
            httpx.Response(500),
            httpx.Response(200, json=completion_body()),
        ]
    )
    router.post(url__startswith="https://wx.test/oauth/2.0/token").mock(
        return_value=httpx.Response(200, json={"access_token": TOKEN, "expires_in": 3600})
    )
    async with make_respx_client() as client:
        await client.complete(COMPLETIONS, "hello")
    recorded = everything_recorded(otel.spans())
    assert "hello" in recorded, "content capture is on"
    for secret in (API_KEY, SECRET_KEY, TOKEN, "access_token", "client_secret"):
        assert secret not in recorded


async def test_no_signature_is_recorded_with_iam_credentials(
    otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE, "true")
    emulator = Emulator(EmulatorConfig(seed=18))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app))
    credentials = wx.IAMCredentials("test-access-key", "test-secret-access-key")
    async with wx.AsyncClient(
        credentials=credentials, base_url=EMULATOR_URL, http_client=http
    ) as c:
        await c.chat(CHAT, [wx.user("signed question")])
    recorded = everything_recorded(otel.spans())
    assert "signed question" in recorded, "content capture is on"
    for secret in ("test-access-key", "test-secret-access-key", "bce-auth-v1", "authorization"):
        assert secret not in recorded.lower()


# --- switched off, or not installed


async def test_telemetry_false_emits_nothing(otel: Telemetry) -> None:
    emulator = Emulator(EmulatorConfig(seed=12))
    async with emulator_client(emulator, telemetry=False) as client:
        await client.chat(CHAT, [wx.user("hello")])
        async with client.chat_stream(CHAT, [wx.user("hello")]) as stream:
            await stream.collect()
        await client.batch_complete(COMPLETIONS, ["a", "b"])
    assert otel.spans() == []
    assert otel.metrics() == {}


def run_python(source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_opentelemetry_nothing_is_imported_and_calls_work() -> None:
    done = run_python(
        """
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Blocker())
        import anyio, httpx, respx
        import baiduwx_async as wx

        async def main():
            url = "https://wx.test/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/pythia12b"
            answer = {"id": "as-1", "object": "completion", "created": 1, "result": "ok",
                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
            with respx.mock:
                respx.post(url__startswith=url).mock(return_value=httpx.Response(200, json=answer))
                client = wx.AsyncClient(credentials=wx.StaticToken("t"), base_url="https://wx.test")
                async with client:
                    assert client._telemetry is None
                    print((await client.complete("pythia12b", "hi")).result)

        anyio.run(main)
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print(loaded)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ok", "[]"]


def test_importing_the_package_does_not_load_opentelemetry() -> None:
    done = run_python(
        """
        import sys
        import baiduwx_async
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        baiduwx_async.AsyncClient(credentials=baiduwx_async.StaticToken("t"))
        print("opentelemetry.trace" in sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "True"]


def test_a_client_made_before_the_sdk_records_once_it_is_installed() -> None:
    done = run_python(
        """
        import anyio, httpx, respx
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import baiduwx_async as wx

        async def main():
            url = "https://wx.test/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/pythia12b"
            answer = {"id": "as-1", "object": "completion", "created": 1, "result": "ok",
                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
            exporter = InMemorySpanExporter()
            with respx.mock:
                respx.post(url__startswith=url).mock(return_value=httpx.Response(200, json=answer))
                client = wx.AsyncClient(credentials=wx.StaticToken("t"), base_url="https://wx.test")
                async with client:
                    await client.complete("pythia12b", "before")
                    provider = TracerProvider()
                    provider.add_span_processor(SimpleSpanProcessor(exporter))
                    trace.set_tracer_provider(provider)
                    await client.complete("pythia12b", "after")
            print([span.name for span in exporter.get_finished_spans()])

        anyio.run(main)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['text_completion pythia12b']"


def test_the_readme_telemetry_example_prints_its_spans() -> None:
    from .test_readme import python_blocks

    (block,) = [b for b in python_blocks() if "ConsoleSpanExporter" in b]
    done = run_python(block)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"name": "chat mpt30b"' in done.stdout
    assert '"name": "text_completion pythia12b"' in done.stdout
    assert '"kind": "SpanKind.CLIENT"' in done.stdout
    assert '"gen_ai.response.time_to_first_chunk"' in done.stdout


async def test_bad_parameters_still_raise_validation_error_under_telemetry(
    anyio_backend: str, otel: Telemetry
) -> None:
    """Telemetry reads the parameters before the call checks them: a value of the wrong
    type must reach the call's own check, not break inside the span's attributes."""
    bad: list[dict[str, Any]] = [
        {"response_format": {"type": "json_object"}},
        {"stop": 3},
        {"stop": ["ok", 3]},
        {"temperature": "hot"},
    ]
    client = wx.AsyncClient(credentials=wx.StaticToken("t"), base_url="http://127.0.0.1:9")
    async with client:
        for keywords in bad:
            with pytest.raises(wx.ValidationError):
                await client.chat("mpt30b", [wx.user("hi")], **keywords)
    assert all(span.status.status_code is StatusCode.ERROR for span in otel.spans())
