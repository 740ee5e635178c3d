"""The testing kit: a pytest plugin with emulator fixtures, `run_emulator()` and `mock_wenxin()`.

Not imported by `import baiduwx_async`; use `from baiduwx_async import testing`. Installed
as a pytest plugin (entry point `baiduwx_async`), so its fixtures need no `conftest.py`.
Importing it is cheap: the emulator (starlette, uvicorn) and respx are imported only by
the functions and fixtures that use them.

A real emulator, served on a free loopback port inside the running event loop::

    async with testing.run_emulator(qps=20, seed=1) as emu:
        async with emu.client() as client:          # base_url and credentials set
            reply = await client.chat("mpt30b", [wx.user("hi")])
        assert emu.stats()["endpoints"]["chat/mpt30b"] == {"ok": 1}

`run_emulator(asgi=True)` serves nothing: `emu.client()` then talks to the app through
`httpx.ASGITransport`, without sockets, under asyncio and trio alike (stream faults that
drop the connection become `ConnectionDropped`, and the whole answer is buffered).

Mocks, one line per answer, with protocol-shaped bodies (PROTOCOL §4 and §5)::

    with testing.mock_wenxin() as mock:
        mock.chat("mpt30b", result="Hello!")
        mock.stream("mpt30b", ["Hel", "lo!"])      # the last one registered wins
        mock.error("pythia12b", 336003, kind="completions", times=1)   # then ...
        mock.complete("pythia12b", result="Beijing is ...")

Fixtures
--------
`wenxin_emulator` yields a `RunningEmulator` served on a real loopback socket; settings
come from a marker, `@pytest.mark.wenxin_emulator(qps=5, faults={"error_2": 0.3})`, or an
indirect parametrization, `@pytest.mark.parametrize("wenxin_emulator", [{"qps": 5}],
indirect=True)` (the parameter wins). `asgi=True` in either gives the socket-free mode.
`wenxin_client` is an `AsyncClient` bound to it (indirectly parametrize it with a dict of
`AsyncClient` keywords); it is closed when the emulator stops.

How the async fixtures work under each plugin
---------------------------------------------
An async fixture must be run by whichever plugin runs the test, in the test's event loop:
the server is a task of that loop. pytest-asyncio in strict mode runs only fixtures marked
as its own, anyio's plugin runs async fixtures only for tests that use `anyio_backend`, and
either one running the other's fixture would serve the emulator from a loop that is idle
while the test runs. So `wenxin_emulator` is registered as an async generator fixture that
pytest-asyncio recognises as its own, and this module's `pytest_fixture_setup` hook (run
before either plugin's) picks the runner for each test:

- a test that uses `anyio_backend` (`@pytest.mark.anyio`): the fixture body runs in anyio's
  test runner, in the task that runs the test (our hook does what anyio's own does);
- a pytest-asyncio test (`@pytest.mark.asyncio` in strict mode, any async test in auto
  mode): pytest-asyncio runs it in the loop of the test's `loop_scope`. pytest-asyncio
  runs a fixture's setup and teardown as two separate tasks, and the emulator's task group
  must be entered and left by one task, so the fixture hosts the emulator in an asyncio
  task of its own for the test's duration;
- any other test (a sync test, another plugin): the fixture fails with what to do.

`wenxin_client` is a plain synchronous fixture (building an `AsyncClient` needs no loop),
so it works wherever `wenxin_emulator` does.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import secrets
import string
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import attrs
import httpx
import pytest

from ._auth import TOKEN_PATH, IAMCredentials, OAuthCredentials
from ._client import DEFAULT_BASE_URL, AsyncClient
from ._models import Usage
from ._protocol import model_path

if TYPE_CHECKING:
    import respx

    from .emulator import Emulator, EmulatorConfig

__all__ = [
    "ASGI_BASE_URL",
    "RunningEmulator",
    "WenxinMock",
    "mock_wenxin",
    "run_emulator",
    "wenxin_client",
    "wenxin_emulator",
]

#: The base URL of clients of an emulator in ASGI mode (`run_emulator(asgi=True)`).
ASGI_BASE_URL = "http://emulator.localhost"

#: The two kinds of model route: chat and completions.
Kind = Literal["chat", "completions"]


# --- a running emulator


class RunningEmulator:
    """An emulator being served, with what a test needs to talk to it.

    Made by `run_emulator()` and the `wenxin_emulator` fixture. `base_url` is where it
    answers (`ASGI_BASE_URL` in ASGI mode), `emulator` the `Emulator` itself; `client()`
    makes `AsyncClient`s pointed at it, all closed when the emulator stops.
    """

    def __init__(self, emulator: Emulator, base_url: str, *, asgi: bool = False) -> None:
        self.emulator = emulator
        self.base_url = base_url
        #: True when served through `httpx.ASGITransport` instead of a socket.
        self.asgi = asgi
        self._clients: list[AsyncClient] = []
        self._http_clients: list[httpx.AsyncClient] = []
        self._closed = False

    def __repr__(self) -> str:
        mode = "asgi" if self.asgi else "socket"
        return f"<RunningEmulator {self.base_url} ({mode})>"

    @property
    def config(self) -> EmulatorConfig:
        """The emulator's settings (mutable; see `configure`)."""
        return self.emulator.config

    @property
    def credentials(self) -> OAuthCredentials:
        """An API Key / Secret Key pair the emulator accepts (the first configured one)."""
        for api_key, secret_key in self.emulator.config.credentials.items():
            return OAuthCredentials(api_key, secret_key)
        raise LookupError("the emulator has no OAuth credentials configured")

    @property
    def iam_credentials(self) -> IAMCredentials:
        """An IAM Access Key / Secret Key pair the emulator accepts (the first configured)."""
        for access_key, secret_key in self.emulator.config.iam_credentials.items():
            return IAMCredentials(access_key, secret_key)
        raise LookupError("the emulator has no IAM credentials configured")

    def stats(self) -> dict[str, Any]:
        """The emulator's counters (`Emulator.stats`): calls, outcomes per endpoint, faults…"""
        return self.emulator.stats()

    def configure(self, **changes: Any) -> None:
        """Change emulator settings now (`Emulator.configure`), e.g. `configure(qps=5)`."""
        self.emulator.configure(**changes)

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far: the next call with one gets 110."""
        self.emulator.revoke_tokens()

    def reset_stats(self) -> None:
        """Zero the counters."""
        self.emulator.reset_stats()

    def reset_limits(self) -> None:
        """Empty the rate windows and quota counts."""
        self.emulator.reset_limits()

    def http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A bare `httpx.AsyncClient` with `base_url` set to the emulator (through the ASGI
        app in ASGI mode); closed when the emulator stops."""
        self._check_open()
        kwargs.setdefault("base_url", self.base_url)
        if self.asgi:
            kwargs.setdefault("transport", httpx.ASGITransport(app=self.emulator.app))
        http = httpx.AsyncClient(**kwargs)
        self._http_clients.append(http)
        return http

    def client(self, **kwargs: Any) -> AsyncClient:
        """An `AsyncClient` pointed at the emulator with its credentials.

        Keywords go to `AsyncClient` and win over those defaults (pass
        `credentials=emu.iam_credentials` to sign requests instead). In ASGI mode the
        client gets an `http_client` on the emulator's app unless you pass your own.
        Closed when the emulator stops, if you did not close it before.
        """
        self._check_open()
        kwargs.setdefault("credentials", self.credentials)
        kwargs.setdefault("base_url", self.base_url)
        if self.asgi and kwargs.get("http_client") is None:
            kwargs["http_client"] = self.http_client(base_url=ASGI_BASE_URL)
        client = AsyncClient(**kwargs)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        """Close every client made by `client()` and `http_client()`."""
        self._closed = True
        clients, self._clients = self._clients, []
        https, self._http_clients = self._http_clients, []
        for client in clients:
            await client.aclose()
        for http in https:
            await http.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this emulator has stopped")


def _require_asyncio() -> None:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "run_emulator() serves the emulator on a socket with uvicorn, which runs on "
            "asyncio only; under trio use run_emulator(asgi=True) (for the wenxin_emulator "
            "fixture: @pytest.mark.wenxin_emulator(asgi=True)), which needs no socket"
        ) from None


@contextlib.asynccontextmanager
async def run_emulator(
    config: EmulatorConfig | None = None,
    *,
    asgi: bool = False,
    clock: Callable[[], float] | None = None,
    **config_fields: Any,
) -> AsyncIterator[RunningEmulator]:
    """Run an emulator for the duration of an `async with` block.

    `config` and/or `EmulatorConfig` fields as keywords (`qps=20`, `seed=1`,
    `faults={"http_503": 0.2}`; keywords win over `config`'s values). `clock` replaces the
    emulator's clock (unix seconds; token expiry, signature times, rate windows).

    By default the emulator is served by uvicorn on a free 127.0.0.1 port in the running
    event loop (asyncio only: under trio this raises `RuntimeError`). With `asgi=True`
    nothing is served: clients from `emu.client()` reach the app through
    `httpx.ASGITransport`, under asyncio or trio. Clients made by `emu.client()` are closed
    on exit.
    """
    from .emulator import Emulator, EmulatorConfig

    if config is None:
        config = EmulatorConfig(**config_fields)
    elif config_fields:
        config = attrs.evolve(config, **config_fields)
    emulator = Emulator(config) if clock is None else Emulator(config, clock=clock)
    if asgi:
        running = RunningEmulator(emulator, ASGI_BASE_URL, asgi=True)
        try:
            yield running
        finally:
            await running.aclose()
        return

    _require_asyncio()
    from .emulator import serve

    async with serve(emulator) as base_url:
        running = RunningEmulator(emulator, base_url)
        try:
            yield running
        finally:
            await running.aclose()


# --- respx mocks


_ERROR_TEXTS: dict[int, str] = {
    1: "Unknown error",
    2: "Service temporarily unavailable",
    3: "Unsupported openapi method",
    4: "Open api request limit reached",
    6: "No permission to access data",
    13: "Get service token failed",
    14: "IAM Certification failed",
    15: "app not exists or create failed",
    17: "Open api daily request limit reached",
    18: "Open api qps request limit reached",
    19: "Open api total request limit reached",
    100: "Invalid parameter",
    110: "Access token invalid or no longer valid",
    111: "Access token expired",
    336000: "Internal error",
    336001: "Invalid Argument",
    336002: "Invalid JSON",
    336003: "Invalid parameter",
    336100: "high load",
    336501: "Rate limit reached for RPM",
    336502: "Rate limit reached for TPM",
}
_HTTP_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                 503: "Service Unavailable"}  # fmt: skip
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_ID_ALPHABET = string.ascii_lowercase + string.digits


def _count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def _response_id() -> str:
    return "as-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def _compact(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


#: Token usage given to a mock answer: a `Usage`, or a mapping with its three keys.
UsageLike = Usage | Mapping[str, int]


def _usage_dict(usage: UsageLike) -> dict[str, int]:
    if isinstance(usage, Usage):
        return attrs.asdict(usage)
    prompt = int(usage.get("prompt_tokens", 0))
    completion = int(usage.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens", prompt + completion)),
    }


@attrs.frozen
class _Request:
    """What an answer needs to know of the request it answers."""

    kind: Kind
    stream: bool
    prompt_tokens: int
    request_id: str


@attrs.frozen
class _Text:
    """A successful answer: the pieces a stream sends (one for a plain answer)."""

    pieces: tuple[str, ...]
    usage: UsageLike | None
    error_code: int | None = None  # a mid-stream error after the pieces
    end: bool = True  # send is_end (False: the stream stops without it)

    def respond(self, request: _Request, headers: dict[str, str]) -> httpx.Response:
        text = "".join(self.pieces)
        completion = _count_tokens(text)
        usage = _usage_dict(
            self.usage
            if self.usage is not None
            else {"prompt_tokens": request.prompt_tokens, "completion_tokens": completion}
        )
        answer_id = _response_id()
        obj = "chat.completion" if request.kind == "chat" else "completion"
        created = int(time.time())
        if not request.stream:
            body = {
                "id": answer_id,
                "object": obj,
                "created": created,
                "result": text,
                "is_truncated": False,
                "need_clear_history": False,
                "usage": usage,
            }
            headers["content-type"] = "application/json"
            return httpx.Response(200, headers=headers, content=_compact(body))
        events: list[bytes] = []
        done = 0
        last = len(self.pieces) - 1
        for index, piece in enumerate(self.pieces):
            done += _count_tokens(piece)
            is_end = self.end and self.error_code is None and index == last
            partial = min(done, usage["completion_tokens"])
            chunk_usage = (
                usage
                if is_end
                else {
                    "prompt_tokens": usage["prompt_tokens"],
                    "completion_tokens": partial,
                    "total_tokens": usage["prompt_tokens"] + partial,
                }
            )
            chunk = {
                "id": answer_id,
                "object": obj,
                "created": created,
                "sentence_id": index,
                "is_end": is_end,
                "is_truncated": False,
                "result": piece,
                "need_clear_history": False,
                "finish_reason": "normal",
                "usage": chunk_usage,
            }
            events.append(b"data: " + _compact(chunk) + b"\n\n")
        if self.error_code is not None:
            error = {
                "error_code": self.error_code,
                "error_msg": _ERROR_TEXTS.get(self.error_code, f"error {self.error_code}"),
                "id": answer_id,
            }
            events.append(b"data: " + _compact(error) + b"\n\n")
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        return httpx.Response(200, headers=headers, content=b"".join(events))


@attrs.frozen
class _Error:
    """An `error_code` answer: HTTP 200, one line of JSON, stream or not (PROTOCOL §6)."""

    code: int
    message: str | None

    def respond(self, request: _Request, headers: dict[str, str]) -> httpx.Response:
        body = {
            "error_code": self.code,
            "error_msg": self.message or _ERROR_TEXTS.get(self.code, f"error {self.code}"),
            "id": _response_id(),
        }
        headers["content-type"] = "application/json"
        return httpx.Response(200, headers=headers, content=_compact(body))


@attrs.frozen
class _HTTPError:
    """A bare HTTP failure (429, 5xx…), optionally with `Retry-After`."""

    status: int
    retry_after: float | None

    def respond(self, request: _Request, headers: dict[str, str]) -> httpx.Response:
        headers["content-type"] = "text/plain; charset=utf-8"
        if self.retry_after is not None:
            headers["retry-after"] = f"{self.retry_after:g}"
        reason = _HTTP_REASONS.get(self.status, f"HTTP {self.status}")
        return httpx.Response(self.status, headers=headers, content=reason.encode())


_Answer = _Text | _Error | _HTTPError


class _Script:
    """The answers of one route: counted ones first, in order, then the latest lasting one."""

    def __init__(self) -> None:
        self.counted: deque[list[Any]] = deque()  # [answer, remaining]
        self.lasting: _Answer | None = None

    def add(self, answer: _Answer, times: int | None) -> None:
        if times is None:
            self.lasting = answer
        else:
            if isinstance(times, bool) or not isinstance(times, int) or times < 1:
                raise ValueError(f"times must be a positive integer or None, got {times!r}")
            self.counted.append([answer, times])

    def next(self) -> _Answer | None:
        while self.counted:
            entry = self.counted[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self.counted.popleft()
            answer: _Answer = entry[0]
            return answer
        return self.lasting


class WenxinMock:
    """Wenxin Workshop answers on a respx router; made by `mock_wenxin()`.

    Each method registers the answer for one endpoint (`kind` "chat" or "completions")
    and returns the respx `Route`, whose `.calls` record the requests. An answer serves
    both plain and stream requests: a plain answer streams as one chunk, a stream's
    chunks joined are its plain answer; errors come at stream start, as JSON. The
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
        self._token_error: str | None = None
        self._routes: dict[tuple[str, str], tuple[respx.Route, _Script]] = {}
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
        """Answer chat requests to `endpoint` with `result` (PROTOCOL §4 body)."""
        return self._add("chat", endpoint, _Text((result,), usage), times)

    def complete(
        self,
        endpoint: str,
        result: str = "This is a generated completion.",
        *,
        usage: UsageLike | None = None,
        times: int | None = None,
    ) -> respx.Route:
        """Answer completion requests to `endpoint` with `result`."""
        return self._add("completions", endpoint, _Text((result,), usage), times)

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
        and `is_end` on the last (PROTOCOL §5). `error_code` adds a mid-stream error
        event after them (then there is no `is_end`); `end=False` leaves `is_end` out."""
        pieces = tuple(chunks)
        if not pieces:
            raise ValueError("a stream needs at least one chunk")
        return self._add(kind, endpoint, _Text(pieces, usage, error_code, end), times)

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
        return self._add(kind, endpoint, _Error(code, message), times)

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
        return self._add(kind, endpoint, _HTTPError(status, retry_after), times)

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

    def _add(self, kind: Kind, endpoint: str, answer: _Answer, times: int | None) -> respx.Route:
        if kind not in ("chat", "completions"):
            raise ValueError(f'kind must be "chat" or "completions", got {kind!r}')
        key = (kind, endpoint)
        entry = self._routes.get(key)
        if entry is None:
            script = _Script()
            route = self.router.post(url=f"{self.base_url}{model_path(kind, endpoint)}")
            route.mock(side_effect=lambda request: self._model_answer(request, kind, script))
            entry = self._routes[key] = (route, script)
        entry[1].add(answer, times)
        return entry[0]

    def _model_answer(self, request: httpx.Request, kind: Kind, script: _Script) -> httpx.Response:
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
        prompt_tokens = sum(_count_tokens(t) for t in texts if isinstance(t, str))
        request_id = request.headers.get("request_id") or secrets.token_hex(16)
        info = _Request(kind, body.get("stream") is True, prompt_tokens, request_id)
        headers = {"x-baidu-request-id": request_id, **self.ratelimit_headers}
        answer = script.next()
        if answer is None:  # only counted answers were registered, and they are spent
            answer = _Error(336005, "API name not exist")
        return answer.respond(info, headers)

    def _token_answer(self, request: httpx.Request) -> httpx.Response:
        if self._token_error is not None:
            body = {"error_description": "Client authentication failed", "error": self._token_error}
            return httpx.Response(401, json=body)
        return httpx.Response(
            200,
            json={
                "refresh_token": "25." + secrets.token_hex(16) + ".315360000.1700000000.1-1",
                "expires_in": self.expires_in,
                "scope": "public wise_adapt",
                "session_key": secrets.token_hex(32),
                "access_token": self.access_token,
                "session_secret": secrets.token_hex(16),
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


# --- the pytest plugin


def pytest_configure(config: pytest.Config) -> None:
    """Register the `wenxin_emulator` marker."""
    config.addinivalue_line(
        "markers",
        "wenxin_emulator(config=None, *, asgi=False, clock=None, **fields): settings of the "
        "wenxin_emulator fixture, as for baiduwx_async.testing.run_emulator()",
    )


def _fixture_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`run_emulator` keywords from the markers (the closest wins) and the parameter."""
    settings: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("wenxin_emulator"))):
        if len(marker.args) > 1:
            raise TypeError("@pytest.mark.wenxin_emulator takes one positional EmulatorConfig")
        if marker.args:
            settings["config"] = marker.args[0]
        settings.update(marker.kwargs)
    param = getattr(request, "param", None)
    if param is not None:
        if isinstance(param, Mapping):
            settings.update(param)
        else:
            settings["config"] = param
    return settings


async def _wenxin_emulator(
    request: pytest.FixtureRequest,
) -> AsyncGenerator[RunningEmulator, None]:
    """A running emulator (`RunningEmulator`) on a free 127.0.0.1 port.

    Configure it with `@pytest.mark.wenxin_emulator(qps=5, ...)` or an indirect
    parametrization; `asgi=True` serves it without a socket (needed under trio).
    Async: use it from tests run by pytest-asyncio or anyio.
    """
    async with run_emulator(**_fixture_settings(request)) as running:
        yield running


# Ours to route (see pytest_fixture_setup); marked so that pytest-asyncio in strict mode
# accepts it in its tests without a deprecation warning.
_wenxin_emulator._force_asyncio_fixture = True  # type: ignore[attr-defined]
wenxin_emulator = pytest.fixture(name="wenxin_emulator")(_wenxin_emulator)


@pytest.fixture(name="wenxin_client")
def wenxin_client(wenxin_emulator: RunningEmulator, request: pytest.FixtureRequest) -> AsyncClient:
    """An `AsyncClient` bound to `wenxin_emulator`, closed when the emulator stops.

    Indirectly parametrize it with a dict of `AsyncClient` keywords to change them.
    """
    param = getattr(request, "param", None)
    return wenxin_emulator.client(**dict(param or {}))


def _anyio_runner_fixture(request: pytest.FixtureRequest) -> Iterator[RunningEmulator]:
    """Runs the fixture in anyio's test runner (the task that runs the test)."""
    from anyio.pytest_plugin import extract_backend_and_options, get_runner

    backend, options = extract_backend_and_options(request.getfixturevalue("anyio_backend"))
    with get_runner(backend, options) as runner:
        yield from runner.run_asyncgen_fixture(_wenxin_emulator, {"request": request})


async def _asyncio_hosted_fixture(
    request: pytest.FixtureRequest,
) -> AsyncIterator[RunningEmulator]:
    """For pytest-asyncio: the emulator lives in a task of its own from setup to teardown."""
    import asyncio

    loop = asyncio.get_running_loop()
    started: asyncio.Future[RunningEmulator] = loop.create_future()
    stop = asyncio.Event()

    async def host() -> None:
        try:
            async with run_emulator(**_fixture_settings(request)) as running:
                started.set_result(running)
                await stop.wait()
        except Exception as exc:
            if started.done():
                raise
            started.set_exception(exc)
        except BaseException:
            if not started.done():
                started.cancel()
            raise

    task = loop.create_task(host(), name="wenxin_emulator")
    try:
        running = await started
    except BaseException:
        stop.set()
        with contextlib.suppress(BaseException):
            await task
        raise
    try:
        yield running
    finally:
        stop.set()
        await task


def _asyncio_fixture_in(loop_scope: str) -> Callable[..., AsyncIterator[RunningEmulator]]:
    fixture = _ASYNCIO_FIXTURES.get(loop_scope)
    if fixture is None:

        async def fixture(request: pytest.FixtureRequest) -> AsyncIterator[RunningEmulator]:
            async for running in _asyncio_hosted_fixture(request):
                yield running

        fixture._force_asyncio_fixture = True  # type: ignore[attr-defined]
        fixture._loop_scope = loop_scope  # type: ignore[attr-defined]
        _ASYNCIO_FIXTURES[loop_scope] = fixture
    return fixture


_ASYNCIO_FIXTURES: dict[str, Callable[..., AsyncIterator[RunningEmulator]]] = {}


def _unsupported_fixture(request: pytest.FixtureRequest) -> RunningEmulator:
    pytest.fail(
        f"{request.node.name}: the wenxin_emulator fixture (and wenxin_client) serves the "
        "emulator in the test's event loop, so it needs an async test run by pytest-asyncio "
        "(@pytest.mark.asyncio, or asyncio_mode = auto) or by anyio (@pytest.mark.anyio); "
        "outside one, use `async with baiduwx_async.testing.run_emulator()` yourself",
        pytrace=False,
    )


def _pytest_asyncio_loop_scope(request: pytest.FixtureRequest) -> str | None:
    """The loop scope of the test if pytest-asyncio runs it, else None."""
    if not request.config.pluginmanager.has_plugin("asyncio"):
        return None
    item = request.node
    marker = item.get_closest_marker("asyncio")
    if marker is None or not isinstance(item, pytest.Function):
        return None
    try:
        from pytest_asyncio import is_async_test
    except ImportError:  # pragma: no cover - older pytest-asyncio
        if not inspect.iscoroutinefunction(item.obj):
            return None
    else:
        if not is_async_test(item):
            return None
    scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    if scope is None:
        try:
            scope = request.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # pragma: no cover - older pytest-asyncio
            scope = None
    return str(scope or "function")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """Run `wenxin_emulator` in the runner of the test's plugin (see the module docstring)."""
    if fixturedef.func is not _wenxin_emulator:
        return (yield)
    runner: Callable[..., Any]
    if "anyio_backend" in request.fixturenames:
        runner = _anyio_runner_fixture
    else:
        loop_scope = _pytest_asyncio_loop_scope(request)
        runner = _unsupported_fixture if loop_scope is None else _asyncio_fixture_in(loop_scope)
    original = fixturedef.func
    fixturedef.func = runner  # type: ignore[misc]
    try:
        return (yield)
    finally:
        fixturedef.func = original  # type: ignore[misc]
