"""The gateway's ASGI app: routes, keys, bodies, streams, the log line of each request."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from starlette.applications import Starlette
from starlette.routing import Route

from .._models import check_endpoint
from ._answers import (
    ChatChunks,
    CompletionChunks,
    chat_completion,
    embedding_list,
    model_card,
    model_list,
    text_completion,
)
from ._errors import GatewayError, error_body, error_for
from ._streams import relay_stream
from ._translate import chat_call, completion_call, embedding_call, model_name, not_found
from ._wire import Exchange, Receive, Scope, Send, dumps, printable, route_path, send_json

if TYPE_CHECKING:
    from .._client import AsyncClient
    from ._tracing import RequestSpan, ServerTracing

__all__ = ["DEFAULT_MAX_BODY_BYTES", "GatewayApp", "ModelRoute", "create_app", "parse_models"]

logger = logging.getLogger("baiduwx_async.gateway")

#: The largest request body accepted (a chat holds at most 4,800 characters upstream; tool
#: schemas and embedding inputs are larger, but not by this much).
DEFAULT_MAX_BODY_BYTES = 1 << 20
KINDS = ("chat", "completions", "embeddings")


@attrs.frozen
class ModelRoute:
    """Where an OpenAI model name goes: the kind of call and the Wenxin endpoint."""

    kind: str
    endpoint: str


def parse_models(models: Mapping[str, str]) -> dict[str, ModelRoute]:
    """`{"name": "chat:ENDPOINT", ...}` checked and parsed."""
    from .._errors import ValidationError

    if not isinstance(models, Mapping) or not models:
        raise ValidationError("models", "must map at least one model name to 'KIND:ENDPOINT'")
    routes = {}
    for name, target in models.items():
        field = f"models[{name!r}]"
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(field, "a model name must be a non-blank string")
        kind, sep, endpoint = target.partition(":") if isinstance(target, str) else ("", "", "")
        if not sep or kind not in KINDS:
            raise ValidationError(field, f"must be 'KIND:ENDPOINT', KIND one of {KINDS}", target)
        try:
            check_endpoint(endpoint)
        except ValidationError as exc:
            raise ValidationError(field, exc.rule, endpoint) from None
        routes[name] = ModelRoute(kind, endpoint)
    return routes


Handler = Callable[[Exchange, Scope, Receive, Send], Awaitable[None]]


@attrs.frozen
class _Route:
    method: str
    handler: Handler
    auth: bool = True


class _Endpoint:
    """The ASGI endpoint of every route when Starlette's router runs (middleware added)."""

    def __init__(self, app: GatewayApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app.handle(scope, receive, send)


class GatewayApp(Starlette):
    """OpenAI's API in front of one `AsyncClient`; made by `create_app`.

    Requests skip Starlette's router and middleware until middleware is added (then every
    route goes through them, to the same handlers).
    """

    def __init__(
        self,
        client: AsyncClient,
        models: Mapping[str, str],
        api_keys: Collection[str] | None = None,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        from .._errors import ValidationError

        self.client = client
        self.models = parse_models(models)
        if isinstance(api_keys, str):
            raise ValidationError("api_keys", "must be a list of keys, not one string")
        keys = list(api_keys or ())
        if any(not isinstance(key, str) or not key.strip() for key in keys):
            raise ValidationError("api_keys", "every key must be a non-blank string")
        # Digests of equal length, compared one by one in full: no timing says which matched.
        self._key_digests = [hashlib.sha256(key.encode()).digest() for key in keys]
        self.max_body_bytes = max_body_bytes
        self.created = int(time.time())
        # A SERVER span per request only where the client makes spans: nothing else is
        # imported, and each request pays one attribute check.
        self._tracing: ServerTracing | None = None
        telemetry = client._telemetry
        if telemetry is not None:
            from ._tracing import ServerTracing

            self._tracing = ServerTracing(telemetry.idle)
        self._routes = {
            "/v1/chat/completions": _Route("POST", self._chat),
            "/v1/completions": _Route("POST", self._completions),
            "/v1/embeddings": _Route("POST", self._embeddings),
            "/v1/models": _Route("GET", self._models),
            "/healthz": _Route("GET", self._healthz, auth=False),
        }
        self._model_route = _Route("GET", self._model)
        self._unknown = _Route("*", self._not_found, auth=False)
        endpoint = _Endpoint(self)
        routes = [Route(path, endpoint) for path in self._routes]
        routes += [Route("/v1/models/{model:path}", endpoint), Route("/{path:path}", endpoint)]
        super().__init__(routes=routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not (
            self.user_middleware or self.exception_handlers or self.debug
        ):
            scope["app"] = self
            await self.handle(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    @property
    def requires_keys(self) -> bool:
        return bool(self._key_digests)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request."""
        started = time.perf_counter()
        path = route_path(scope)
        route = self._routes.get(path)
        if route is None:
            route = self._model_route if path.startswith("/v1/models/") else self._unknown
        method: str = scope["method"]
        exchange = Exchange()
        span: RequestSpan | None = None
        tracing = self._tracing
        if tracing is not None and not tracing.idle():
            span = tracing.start(scope, method, self._template(route, path))
            send = span.watch(send)
        try:
            if route.method not in (method, "*"):
                raise GatewayError(
                    405,
                    f"{method} is not allowed here: use {route.method}",
                    code="method_not_allowed",
                )
            if route.auth and self._key_digests:
                self._authenticate(scope)
            await route.handler(exchange, scope, receive, send)
        except Exception as exc:
            error = error_for(exc, exchange.index)
            if error.status == 500:
                logger.error("gateway failure on %s %s", method, printable(path), exc_info=exc)
            exchange.status = error.status
            if not exchange.started:
                await send_json(send, error.status, error_body(error), error.headers)
        except BaseException as exc:  # cancelled
            if span is not None:
                span.end(exchange, exc)
                span = None
            raise
        finally:
            if span is not None:
                span.end(exchange)
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "%s %s model=%s status=%s %.1fms",
                    method,
                    printable(path),
                    printable(exchange.model) if exchange.model else "-",
                    499 if exchange.disconnected else exchange.status,
                    (time.perf_counter() - started) * 1000,
                )

    def _template(self, route: _Route, path: str) -> str | None:
        """The route a path matched, as the span's `http.route`."""
        if route is self._unknown:
            return None
        return "/v1/models/{model}" if route is self._model_route else path

    def _authenticate(self, scope: Scope) -> None:
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        scheme, _, key = given.partition(b" ")
        if scheme.lower() != b"bearer" or not key.strip():
            raise GatewayError(
                401,
                "Missing API key: send it as the header 'Authorization: Bearer KEY'",
                code="invalid_api_key",
            )
        digest = hashlib.sha256(key.strip()).digest()
        matched = False
        for expected in self._key_digests:
            matched |= hmac.compare_digest(digest, expected)
        if not matched:
            raise GatewayError(401, "Incorrect API key provided", code="invalid_api_key")

    async def _read_json(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        limit = self.max_body_bytes
        too_large = GatewayError(
            413, f"The request body is larger than {limit} bytes", code="request_too_large"
        )
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    raise too_large
                break
        message = await receive()
        body: bytes = message.get("body", b"")
        if message.get("more_body"):
            parts, size = [body], len(body)
            while message.get("more_body"):
                message = await receive()
                part = message.get("body", b"")
                size += len(part)
                if size > limit:
                    raise too_large
                parts.append(part)
            body = b"".join(parts)
        if len(body) > limit:
            raise too_large
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise GatewayError(
                400, "We could not parse the JSON body of your request", code="invalid_json"
            ) from None
        if not isinstance(data, dict):
            raise GatewayError(400, "The request body must be a JSON object", code="invalid_json")
        return data

    def _route_of(self, exchange: Exchange, body: Mapping[str, Any], kind: str) -> ModelRoute:
        name = model_name(body)
        exchange.model = name
        route = self.models.get(name)
        if route is None:
            raise not_found(name)
        if route.kind != kind:
            raise not_found(name, route.kind)
        return route

    # --- the routes

    async def _chat(self, exchange: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_json(scope, receive)
        route = self._route_of(exchange, body, "chat")
        call = chat_call(body)
        exchange.index = call.message_index
        client = self.client
        if call.stream:
            stream = client.chat_stream(route.endpoint, call.messages, **call.params)
            chunks = ChatChunks(call.model, call.include_usage)
            await relay_stream(exchange, receive, send, stream, chunks)
            return
        reply = await client.chat(route.endpoint, call.messages, **call.params)
        exchange.status = 200
        await send_json(send, 200, dumps(chat_completion(reply, call.model)))

    async def _completions(
        self, exchange: Exchange, scope: Scope, receive: Receive, send: Send
    ) -> None:
        body = await self._read_json(scope, receive)
        route = self._route_of(exchange, body, "completions")
        call = completion_call(body)
        client = self.client
        if call.stream:
            stream = client.complete_stream(route.endpoint, call.prompt, **call.params)
            chunks = CompletionChunks(call.model, call.include_usage)
            await relay_stream(exchange, receive, send, stream, chunks)
            return
        reply = await client.complete(route.endpoint, call.prompt, **call.params)
        exchange.status = 200
        await send_json(send, 200, dumps(text_completion(reply, call.model)))

    async def _embeddings(
        self, exchange: Exchange, scope: Scope, receive: Receive, send: Send
    ) -> None:
        body = await self._read_json(scope, receive)
        route = self._route_of(exchange, body, "embeddings")
        call = embedding_call(body)
        reply = await self.client.embed(route.endpoint, call.texts, **call.params)
        answer = embedding_list(reply.vectors, reply.usage, call.model, call.base64)
        exchange.status = 200
        await send_json(send, 200, dumps(answer))

    async def _models(self, exchange: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
        exchange.status = 200
        await send_json(send, 200, dumps(model_list(list(self.models), self.created)))

    async def _model(self, exchange: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
        name = route_path(scope)[len("/v1/models/") :]
        if name not in self.models:
            raise not_found(name)
        exchange.model, exchange.status = name, 200
        await send_json(send, 200, dumps(model_card(name, self.created)))

    async def _healthz(
        self, exchange: Exchange, scope: Scope, receive: Receive, send: Send
    ) -> None:
        closed = self.client.is_closed
        exchange.status = 503 if closed else 200
        await send_json(
            send, exchange.status, b'{"status":"closed"}' if closed else b'{"status":"ok"}'
        )

    async def _not_found(
        self, exchange: Exchange, scope: Scope, receive: Receive, send: Send
    ) -> None:
        path = printable(route_path(scope))
        raise GatewayError(
            404, f"Unknown request URL: {scope['method']} {path}", code="unknown_url"
        )


def create_app(
    client: AsyncClient,
    models: Mapping[str, str],
    api_keys: Collection[str] | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> GatewayApp:
    """An ASGI app that answers OpenAI's API with `client`'s Wenxin deployments.

    `models` maps the model names callers use to `"chat:ENDPOINT"`, `"completions:ENDPOINT"`
    or `"embeddings:ENDPOINT"`. With `api_keys`, every `/v1` request must carry one of them as
    `Authorization: Bearer KEY`. The client is shared by all requests and stays the caller's
    to close. The app is a Starlette app: serve it with uvicorn, or mount it in your own.
    """
    return GatewayApp(client, models, api_keys, max_body_bytes=max_body_bytes)
