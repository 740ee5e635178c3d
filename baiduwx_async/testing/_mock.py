"""`mock_wenxin()` and `WenxinMock`: Wenxin Workshop answers on a respx router."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from .._auth import TOKEN_PATH
from .._client import DEFAULT_BASE_URL
from .._protocol import MODEL_PREFIX
from ._answers import (
    Answer,
    EmbeddingAnswer,
    ErrorAnswer,
    HTTPErrorAnswer,
    Kind,
    RequestInfo,
    Script,
    TextAnswer,
    UsageLike,
    VectorsLike,
)

if TYPE_CHECKING:
    import respx

__all__ = ["WenxinMock", "mock_wenxin"]


class WenxinMock:
    """Wenxin Workshop answers on a respx router; made by `mock_wenxin()`.

    Each method registers the answer for one endpoint (`kind` "chat", "completions" or
    "embeddings") and returns the respx `Route`, whose `.calls` record the requests. An
    answer serves both plain and stream requests: a plain answer streams as one chunk, a
    stream's chunks joined are its plain answer; errors come at stream start, as JSON. The
    last answer registered for a route wins; with `times=n` an answer is used for the
    next n requests only, before the lasting one (`mock.error("m", 2, times=1)` then
    `mock.chat("m")`: one failure, then success). Usage is counted from the texts unless
    given. The token endpoint answers every API Key with `access_token`.
    """

    def __init__(
        self,
        router: respx.MockRouter,
        *,
        base_url: str,
        access_token: str,
        expires_in: int,
        owns_router: bool,
    ) -> None:
        from ..emulator._state import Dice

        self.router = router
        self.base_url = base_url.rstrip("/")
        #: The access token the mocked token endpoint hands out.
        self.access_token = access_token
        self.expires_in = expires_in
        #: `X-Ratelimit-*` headers sent with every model answer.
        self.ratelimit_headers: dict[str, str] = {
            "x-ratelimit-limit-requests": "300",
            "x-ratelimit-limit-tokens": "300000",
            "x-ratelimit-remaining-requests": "299",
            "x-ratelimit-remaining-tokens": "299000",
        }
        self._owns_router = owns_router
        self._dice = Dice(None)  # unseeded: ids as the emulator makes them
        self._token_error: str | None = None
        self._routes: dict[tuple[str, str], tuple[respx.Route, Script]] = {}
        #: The mocked `/oauth/2.0/token` route.
        self.token_route: respx.Route = router.route(
            method__in=["GET", "POST"], url=f"{self.base_url}{TOKEN_PATH}"
        ).mock(side_effect=self._token_answer)

    def __repr__(self) -> str:
        return f"<WenxinMock {self.base_url} routes={sorted(self._routes)}>"

    # --- registering answers

    def chat(
        self,
        endpoint: str,
        result: str = "Hello! How can I help you today?",
        *,
        usage: UsageLike | None = None,
        times: int | None = None,
    ) -> respx.Route:
        """Answer chat requests to `endpoint` with `result` (docs/protocol.md §4 body)."""
        return self._add("chat", endpoint, TextAnswer((result,), usage), times)

    def complete(
        self,
        endpoint: str,
        result: str = "This is a generated completion.",
        *,
        usage: UsageLike | None = None,
        times: int | None = None,
    ) -> respx.Route:
        """Answer completion requests to `endpoint` with `result`."""
        return self._add("completions", endpoint, TextAnswer((result,), usage), times)

    def stream(
        self,
        endpoint: str,
        chunks: Iterable[str],
        *,
        kind: Kind = "chat",
        usage: UsageLike | None = None,
        error_code: int | None = None,
        end: bool = True,
        times: int | None = None,
    ) -> respx.Route:
        """Answer with these sentence chunks: `data: {...}` events with `sentence_id` 0, 1, …
        and `is_end` on the last (docs/protocol.md §5). `error_code` adds a mid-stream error
        event after them (then there is no `is_end`); `end=False` leaves `is_end` out."""
        pieces = tuple(chunks)
        if not pieces:
            raise ValueError("a stream needs at least one chunk")
        return self._add(kind, endpoint, TextAnswer(pieces, usage, error_code, end), times)

    def function_call(
        self,
        endpoint: str,
        name: str,
        arguments: Mapping[str, object] | str | None = None,
        *,
        thoughts: str = "",
        usage: UsageLike | None = None,
        times: int | None = None,
    ) -> respx.Route:
        """Answer chat requests to `endpoint` with a call of function `name`: `result` "",
        `function_call` `{"name", "arguments", "thoughts"}` (a mapping of `arguments` is
        sent as JSON text, as the service sends it), `finish_reason` "function_call". A
        stream gets it in its one, last chunk."""
        if arguments is None:
            arguments = "{}"
        elif not isinstance(arguments, str):
            arguments = json.dumps(dict(arguments), ensure_ascii=False)
        call = {"name": name, "arguments": arguments, "thoughts": thoughts}
        return self._add("chat", endpoint, TextAnswer(("",), usage, function_call=call), times)

    def embed(
        self,
        endpoint: str,
        vectors: VectorsLike | None = None,
        *,
        dimension: int | None = None,
        usage: UsageLike | None = None,
        times: int | None = None,
    ) -> respx.Route:
        """Answer embeddings requests to `endpoint`: `data` holds one vector per input
        text, in order. `vectors` gives them, one per text of each request (a request
        with another number of texts gets error 336003), or as a function of the text;
        by default each text gets the emulator's vector for it: unit length, the same for
        the same text, `dimension` long (default: the endpoint's, 384 for unknown names).
        Usage counts the texts' tokens unless given."""
        if dimension is not None and (
            isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 2
            or dimension % 2
        ):  # fmt: skip
            raise ValueError(f"dimension must be an even integer >= 2, got {dimension!r}")
        return self._add("embeddings", endpoint, EmbeddingAnswer(vectors, dimension, usage), times)

    def error(
        self,
        endpoint: str,
        code: int,
        *,
        kind: Kind = "chat",
        message: str | None = None,
        times: int | None = None,
    ) -> respx.Route:
        """Answer with the `error_code` envelope (HTTP 200, as the service does);
        `message` defaults to the documented `error_msg` of `code`."""
        return self._add(kind, endpoint, ErrorAnswer(code, message), times)

    def http_error(
        self,
        endpoint: str,
        status: int,
        *,
        kind: Kind = "chat",
        retry_after: float | None = None,
        times: int | None = None,
    ) -> respx.Route:
        """Answer with a bare HTTP status (429, 500, 503…), optionally with `Retry-After`."""
        return self._add(kind, endpoint, HTTPErrorAnswer(status, retry_after), times)

    def token(
        self,
        access_token: str | None = None,
        *,
        expires_in: int | None = None,
        error: str | None = None,
    ) -> respx.Route:
        """Change the token endpoint's answer: another token or lifetime, or an OAuth
        `error` (e.g. "invalid_client", answered with HTTP 401)."""
        if access_token is not None:
            self.access_token = access_token
        if expires_in is not None:
            self.expires_in = expires_in
        self._token_error = error
        return self.token_route

    # --- inspecting requests

    def route(self, endpoint: str, kind: Kind = "chat") -> respx.Route:
        """The route of an endpoint that has answers."""
        return self._routes[(kind, endpoint)][0]

    def requests(self, endpoint: str, kind: Kind = "chat") -> list[dict[str, Any]]:
        """The JSON bodies the endpoint received, in order."""
        route = self._routes.get((kind, endpoint))
        if route is None:
            return []
        return [json.loads(call.request.content) for call in route[0].calls]

    # --- lifecycle

    def __enter__(self) -> WenxinMock:
        if self._owns_router:
            self.router.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owns_router:
            # Keep the routes and their calls: they may be inspected after the block.
            self.router.stop(clear=False, reset=False, quiet=exc_type is not None)

    async def __aenter__(self) -> WenxinMock:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # --- answering

    def _add(self, kind: Kind, endpoint: str, answer: Answer, times: int | None) -> respx.Route:
        if kind not in ("chat", "completions", "embeddings"):
            raise ValueError(f'kind must be "chat", "completions" or "embeddings", got {kind!r}')
        if isinstance(answer, TextAnswer) and kind == "embeddings":
            raise ValueError("an embeddings route answers with vectors: use embed()")
        key = (kind, endpoint)
        entry = self._routes.get(key)
        if entry is None:
            script = Script()
            route = self.router.post(url=f"{self.base_url}{MODEL_PREFIX}{kind}/{endpoint}")
            route.mock(
                side_effect=lambda request: self._model_answer(request, kind, endpoint, script)
            )
            entry = self._routes[key] = (route, script)
        entry[1].add(answer, times)
        return entry[0]

    def _model_answer(
        self, request: httpx.Request, kind: Kind, endpoint: str, script: Script
    ) -> httpx.Response:
        from ..emulator import count_tokens

        try:
            body = json.loads(request.content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        texts: list[object] = [body.get("prompt")]
        messages = body.get("messages")
        if kind == "chat" and isinstance(messages, list):
            texts = [m.get("content") for m in messages if isinstance(m, dict)]
            texts.append(body.get("system"))
        inputs = body.get("input")
        if kind == "embeddings":
            texts = list(inputs) if isinstance(inputs, list) else []
        strings = tuple(t for t in texts if isinstance(t, str))
        prompt_tokens = sum(count_tokens(t) for t in strings)
        stream = body.get("stream") is True
        info = RequestInfo(
            kind,
            stream,
            prompt_tokens,
            self._dice.response_id(),
            endpoint,
            strings if kind == "embeddings" else (),
        )
        request_id = request.headers.get("request_id") or self._dice.hex(32)
        headers = {"x-baidu-request-id": request_id, **self.ratelimit_headers}
        answer = script.next()
        if answer is None:  # only counted answers were registered, and they are spent
            answer = ErrorAnswer(336005, None)  # "API name not exist"
        return answer.respond(info, headers)

    def _token_answer(self, request: httpx.Request) -> httpx.Response:
        if self._token_error is not None:
            body = {"error_description": "Client authentication failed", "error": self._token_error}
            return httpx.Response(401, json=body)
        return httpx.Response(
            200,
            json={
                "refresh_token": "25." + self._dice.hex(32) + ".315360000.1700000000.1-1",
                "expires_in": self.expires_in,
                "scope": "public wise_adapt",
                "session_key": self._dice.hex(64),
                "access_token": self.access_token,
                "session_secret": self._dice.hex(32),
            },
        )


def mock_wenxin(
    router: respx.MockRouter | None = None,
    *,
    base_url: str | None = None,
    access_token: str = "24.0123456789abcdef0123456789abcdef.2592000.1700000000.282335-8574074",
    expires_in: int = 2592000,
) -> WenxinMock:
    """Mock Wenxin Workshop with respx: `with mock_wenxin() as mock: mock.chat("m", "Hi")`.

    Without `router` a new respx router is made, active inside the `with` (or `async with`)
    block; it lets no other request through, and its routes keep their `.calls` after the
    block. With your own router (respx's `respx_mock`
    fixture, or one you entered) the routes are added to it and the `with` block is
    optional. `base_url` defaults as the client's does: `QIANFAN_BASE_URL`, else
    `https://aip.baidubce.com`. See `WenxinMock` for the answers.
    """
    import respx

    owns = router is None
    if router is None:
        router = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    url = base_url or os.environ.get("QIANFAN_BASE_URL") or DEFAULT_BASE_URL
    return WenxinMock(
        router, base_url=url, access_token=access_token, expires_in=expires_in, owns_router=owns
    )
