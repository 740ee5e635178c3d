"""The model routes (chat, completions, embeddings) as raw ASGI apps: auth, checks, limits,
faults, answers.

Order of checks for one request: method (336101), authentication (110/111 or 14), endpoint
name (336005), permission (6), body (336002/336001/336003/336007), limits and quotas
(19, 17, 18, 336501, 336502), `fail_prompts`, then one fault roll, then the answer.
`config.latency` is waited for before any answer, errors included.
"""

from __future__ import annotations

import functools
from json.encoder import encode_basestring as _json_str
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import anyio

from .. import _signing
from ._config import STREAM_FAULTS
from ._embeddings import EmbeddingRequest, embedding_body, parse_embedding_request
from ._ernie import ernie_body, shape_answer
from ._stream import StreamWriter
from ._text import Answer, generate
from ._validate import ParsedRequest, parse_request
from ._wire import (
    ASGIApp,
    Failure,
    Headers,
    Receive,
    Scope,
    Send,
    drop_connection,
    dumps,
    error_message,
    read_body,
    send_response,
)

if TYPE_CHECKING:
    from ._core import EmulatorState

__all__ = ["ModelRoute", "UnknownRoute"]

_JSON = b"application/json"
_SSE = b"text/event-stream"
#: The §4 answer in its key order, as `dumps` would write it: formatting it directly is
#: several times faster than encoding a dict, on the path every benchmark request takes.
_ANSWER = (
    '{"id":%s,"object":%s,"created":%d,"result":%s,"is_truncated":false,'
    '"need_clear_history":false,'
    '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}'
)
_HTTP_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                 503: "Service Unavailable"}  # fmt: skip


@functools.lru_cache(maxsize=1024)
def _parse_query(raw: bytes) -> tuple[tuple[str, str], ...]:
    """The query's pairs; cached, as a client sends the same `access_token` query each time."""
    return tuple(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


class _Call:
    """One model request in progress."""

    __slots__ = ("outcome", "question", "request_id", "started")

    def __init__(self, scope: Scope, emulator: EmulatorState) -> None:
        self.outcome = "cancelled"
        self.question: str | None = None  # known once the body is parsed
        self.started = False  # the answer's http.response.start was (being) sent
        request_id = None
        for name, value in scope["headers"]:
            if name == b"request_id":
                request_id = value
                break
        self.request_id: bytes = request_id or emulator._dice.hex(32).encode()


class _Base:
    def __init__(self, emulator: EmulatorState) -> None:
        self._emu = emulator

    def _headers(self, call: _Call, content_type: bytes, *, limits: bool = True) -> Headers:
        headers = [(b"content-type", content_type), (b"x-baidu-request-id", call.request_id)]
        if limits:
            emu = self._emu
            headers += emu._limiter.headers(emu.clock(), emu.config)
        return headers

    async def _respond(
        self, call: _Call, send: Send, status: int, headers: Headers, body: bytes
    ) -> None:
        call.started = True
        await send_response(send, status, headers, body)

    async def _fail(self, call: _Call, send: Send, code: int, message: str | None = None) -> None:
        call.outcome = f"error_{code}"
        body = dumps(
            {
                "error_code": code,
                "error_msg": error_message(code) if message is None else message,
                "id": self._emu._dice.response_id(),
            }
        )
        await self._respond(call, send, 200, self._headers(call, _JSON), body)


class UnknownRoute(_Base):
    """Every path that is not a known route: error 3."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self._emu._stats
        call = _Call(scope, self._emu)
        stats.begin()
        try:
            await read_body(receive)
            await self._fail(call, send, 3)
        finally:
            stats.end("(unknown)", call.outcome)


class ModelRoute(_Base):
    """POST /rpc/2.0/ai_custom/v1/wenxinworkshop/{kind}/{endpoint}; `kind` is "chat",
    "completions" or "embeddings"."""

    def __init__(self, emulator: EmulatorState, kind: str) -> None:
        super().__init__(emulator)
        self._kind = kind
        self._object = "chat.completion" if kind == "chat" else "completion"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send, scope["path_params"]["endpoint"])

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: str,
        *,
        server_error: ASGIApp | None = None,
    ) -> None:
        """Answer one call to `endpoint` (the path's last segment).

        `server_error`, if given, answers an exception raised before the answer started, which
        is then re-raised: what an error middleware around the route would do.
        """
        stats = self._emu._stats
        call = _Call(scope, self._emu)
        stats.begin()
        try:
            try:
                await self._handle(call, endpoint, scope, receive, send)
            finally:
                stats.end(f"{self._kind}/{endpoint}", call.outcome)
                if self._emu.call_log is not None:
                    self._emu.call_log.append((call.question, call.outcome))
        except Exception:
            if server_error is not None and not call.started:
                await server_error(scope, receive, send)
            raise

    def _authenticate(self, scope: Scope) -> int | None:
        emu = self._emu
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        query = _parse_query(scope["query_string"])
        if authorization is not None and authorization.startswith("bce-auth-v1/"):
            config = emu.config
            reason = _signing.verify(
                authorization,
                secret_for=config.iam_credentials.get,
                method=scope["method"],
                path=scope["path"],
                query=query,
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
                now=emu.clock(),
                skew=config.iam_skew,
            )
            return None if reason is None else 14
        token = None
        for key, value in query:
            if key == "access_token":
                token = value
        return emu._tokens.check(token, emu.clock(), emu.config.static_tokens)

    async def _handle(
        self, call: _Call, endpoint: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        emu = self._emu
        config = emu.config
        raw = await read_body(receive)
        if config.latency:
            await anyio.sleep(config.latency)
        if scope["method"] != "POST":
            return await self._fail(call, send, 336101)
        code = self._authenticate(scope)
        if code is not None:
            return await self._fail(call, send, code)
        if config.endpoints is not None and endpoint not in config.endpoints:
            return await self._fail(call, send, 336005)
        forbidden = config.forbidden_endpoints
        if forbidden and (endpoint in forbidden or f"{self._kind}/{endpoint}" in forbidden):
            return await self._fail(call, send, 6)
        if self._kind == "embeddings":
            return await self._embed(call, endpoint, raw, receive, send)
        parsed = parse_request(
            self._kind,
            raw,
            max_question_chars=config.max_question_chars,
            max_total_chars=config.max_total_chars,
            max_system_chars=config.max_system_chars,
            max_output_tokens_limit=config.max_output_tokens_limit,
        )
        if isinstance(parsed, Failure):
            return await self._fail(call, send, parsed.code, parsed.message)
        call.question = parsed.question
        answer = generate(
            f"{self._kind}/{endpoint}\x1d{parsed.seed_text}",
            config.sentences_min,
            config.sentences_max,
        )
        if parsed.ernie is not None:
            answer = shape_answer(answer, parsed.ernie)
        failure = emu._limiter.admit(emu.clock(), parsed.prompt_tokens + answer.tokens, config)
        if failure is not None:
            return await self._fail(call, send, failure.code, failure.message)
        code = _poisoned(config.fail_prompts, parsed.question)
        if code is not None:
            return await self._fail(call, send, code)

        fault = self._roll_fault(stream=parsed.stream)
        if fault is not None and await self._answer_fault(call, receive, send, fault):
            return None
        if parsed.stream:
            await self._stream(call, receive, send, parsed, answer, fault)
        else:
            await self._complete(call, send, parsed, answer)

    def _roll_fault(self, *, stream: bool) -> str | None:
        """The fault this request falls on (counted), or None."""
        emu = self._emu
        fault = emu._dice.fault(emu.config.faults) if emu.config.faults else None
        if fault is not None and fault in STREAM_FAULTS and not stream:
            fault = None
        if fault is not None:
            emu._stats.faults[fault] += 1
        return fault

    async def _answer_fault(self, call: _Call, receive: Receive, send: Send, fault: str) -> bool:
        """Answer with `fault` if it replaces the answer (True); a delay, or a stream fault
        for the stream writer, returns False."""
        if fault.startswith("http_"):
            await self._http_fault(call, send, int(fault[5:]))
        elif fault.startswith("error_"):
            await self._fail(call, send, int(fault[6:]))
        elif fault == "drop":
            call.outcome = "drop"
            await drop_connection(receive)
        else:
            if fault == "slow_first_byte":
                await anyio.sleep(self._emu.config.slow_seconds)
            return False
        return True

    async def _embed(
        self, call: _Call, endpoint: str, raw: bytes, receive: Receive, send: Send
    ) -> None:
        """The rest of an embeddings call: body, limits, `fail_prompts` (any text), faults."""
        emu = self._emu
        config = emu.config
        model = config.embedding_endpoints.get(endpoint, config.custom_embedding)
        parsed = parse_embedding_request(raw, model)
        if isinstance(parsed, Failure):
            return await self._fail(call, send, parsed.code, parsed.message)
        failure = emu._limiter.admit(emu.clock(), parsed.prompt_tokens, config)
        if failure is not None:
            return await self._fail(call, send, failure.code, failure.message)
        for text in parsed.texts:
            code = _poisoned(config.fail_prompts, text)
            if code is not None:
                return await self._fail(call, send, code)
        fault = self._roll_fault(stream=False)
        if fault is not None and await self._answer_fault(call, receive, send, fault):
            return None
        await self._embeddings_answer(call, send, endpoint, parsed, model.dimension)

    async def _embeddings_answer(
        self, call: _Call, send: Send, endpoint: str, parsed: EmbeddingRequest, dimension: int
    ) -> None:
        emu = self._emu
        if emu.config.first_token_latency:
            await anyio.sleep(emu.config.first_token_latency)
        body = embedding_body(
            endpoint,
            parsed,
            dimension,
            response_id=emu._dice.response_id(),
            created=int(emu.clock()),
        )
        call.outcome = "ok"
        emu._stats.prompt_tokens += parsed.prompt_tokens
        await self._respond(call, send, 200, self._headers(call, _JSON), body)

    async def _http_fault(self, call: _Call, send: Send, status: int) -> None:
        call.outcome = f"http_{status}"
        headers = self._headers(call, b"text/plain; charset=utf-8")
        if status == 429:
            headers.append((b"retry-after", b"%d" % self._emu.config.retry_after))
        await self._respond(call, send, status, headers, _HTTP_REASONS[status].encode())

    def _count(self, parsed: ParsedRequest, completion_tokens: int) -> None:
        stats = self._emu._stats
        stats.prompt_tokens += parsed.prompt_tokens
        stats.completion_tokens += completion_tokens

    async def _complete(
        self, call: _Call, send: Send, parsed: ParsedRequest, answer: Answer
    ) -> None:
        emu = self._emu
        config = emu.config
        delay = config.first_token_latency
        if config.tokens_per_second:
            delay += answer.tokens / config.tokens_per_second
        if delay:
            await anyio.sleep(delay)
        if parsed.ernie is None:
            body = (
                _ANSWER
                % (
                    _json_str(emu._dice.response_id()),
                    _json_str(self._object),
                    int(emu.clock()),
                    _json_str(answer.text),
                    parsed.prompt_tokens,
                    answer.tokens,
                    parsed.prompt_tokens + answer.tokens,
                )
            ).encode()
        else:
            body = dumps(
                ernie_body(
                    answer,
                    response_id=emu._dice.response_id(),
                    object_name=self._object,
                    created=int(emu.clock()),
                    prompt_tokens=parsed.prompt_tokens,
                )
            )
        call.outcome = "ok"
        self._count(parsed, answer.tokens)
        await self._respond(call, send, 200, self._headers(call, _JSON), body)

    async def _stream(
        self,
        call: _Call,
        receive: Receive,
        send: Send,
        parsed: ParsedRequest,
        answer: Answer,
        fault: str | None,
    ) -> None:
        writer = StreamWriter(self._emu, receive, send, self._object, parsed, answer, fault)
        self._emu._stats.streams_started += 1
        headers = self._headers(call, _SSE)
        headers.append((b"cache-control", b"no-cache"))
        call.started = True  # run() starts with the answer's http.response.start
        call.outcome = await writer.run(headers)
        if call.outcome == "reset_stream":
            await drop_connection(receive)  # raises ConnectionDropped without uvicorn
        if call.outcome == "ok":
            self._emu._stats.streams_completed += 1
            self._count(parsed, answer.tokens)


def _poisoned(fail_prompts: dict[str, int], question: str) -> int | None:
    """The code of the first `fail_prompts` key found anywhere in the question."""
    for text, code in fail_prompts.items():
        if text in question:
            return code
    return None
