"""The Starlette application: OAuth, the model routes, the `/_emulator/*` control routes."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ._model import ModelRoute, UnknownRoute
from ._wire import Receive, Scope, Send, dumps

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["MODEL_PREFIX", "EmulatorApp", "build_app"]

MODEL_PREFIX = "/rpc/2.0/ai_custom/v1/wenxinworkshop"
_MODEL_PATH = MODEL_PREFIX + "/"


async def _server_error(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer of Starlette's ServerErrorMiddleware (debug off, no handler) to an exception."""
    await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)


class EmulatorApp(Starlette):
    """The emulator's Starlette app, which hands model calls straight to their route.

    Starlette's middleware and router cost a benchmark's emulator more CPU than the model
    answer itself, and all they do for these routes is answer 500 to an exception (the
    routes raise no HTTPException), which `ModelRoute.serve` then does the same way.
    Everything else takes Starlette's way, and so does every call under a `root_path` (the
    router matches those differently) or once the app has middleware, exception handlers
    or debug added.
    """

    def __init__(self, routes: Sequence[BaseRoute], model_routes: dict[str, ModelRoute]) -> None:
        super().__init__(routes=routes)
        self._model_routes = model_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if (
            path.startswith(_MODEL_PATH)
            and scope["type"] == "http"
            and not scope.get("root_path")
            and not (self.user_middleware or self.exception_handlers or self.debug)
        ):
            # "{kind}/{endpoint}", one non-empty segment each, as the routes' patterns want
            kind, _, endpoint = path[len(_MODEL_PATH) :].partition("/")
            route = self._model_routes.get(kind)
            if route is not None and endpoint and "/" not in endpoint:
                scope["app"] = self
                scope["path_params"] = {"endpoint": endpoint}
                await route.serve(scope, receive, send, endpoint, server_error=_server_error)
                return
        await super().__call__(scope, receive, send)


def _json(value: object, status: int = 200) -> Response:
    return Response(dumps(value), status_code=status, media_type="application/json")


def build_app(emulator: Emulator) -> EmulatorApp:
    """The ASGI app serving `emulator`."""

    async def token(request: Request) -> Response:
        emu = emulator
        config = emu.config
        emu._stats.token_requests += 1
        params = dict(request.query_params)
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and content_type.startswith(
            "application/x-www-form-urlencoded"
        ):
            body = (await request.body()).decode("utf-8", "replace")
            for key, value in parse_qsl(body, keep_blank_values=True):
                params.setdefault(key, value)

        def refuse(error: str, description: str) -> Response:
            emu._stats.token_outcomes[error] += 1
            body = {"error_description": description, "error": error}
            return _json(body, config.oauth_error_status)

        if params.get("grant_type") != "client_credentials":
            return refuse("unsupported_grant_type", "The authorization grant type is not supported")
        api_key = params.get("client_id", "")
        secret = config.credentials.get(api_key)
        if secret is None:
            return refuse("invalid_client", "unknown client id")
        if params.get("client_secret") != secret:
            return refuse("invalid_client", "Client authentication failed")
        emu._stats.token_outcomes["ok"] += 1
        return _json(emu._token_body(api_key))

    async def stats(request: Request) -> Response:
        return _json(emulator.stats())

    async def config(request: Request) -> Response:
        if request.method == "POST":
            try:
                changes: Any = await request.json()
                if not isinstance(changes, dict):
                    raise TypeError("the body must be a JSON object of config fields")
                emulator.configure(**changes)
            except (ValueError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
        return _json(emulator.config.to_dict())

    async def revoke(request: Request) -> Response:
        emulator.revoke_tokens()
        return _json({"ok": True})

    async def reset_stats(request: Request) -> Response:
        emulator.reset_stats()
        return _json({"ok": True})

    async def reset_limits(request: Request) -> Response:
        emulator.reset_limits()
        return _json({"ok": True})

    model_routes = {
        kind: ModelRoute(emulator, kind) for kind in ("chat", "completions", "embeddings")
    }
    # The model routes stay listed: EmulatorApp bypasses them only while nothing else differs.
    routes = [
        Route("/oauth/2.0/token", token, methods=["GET", "POST"]),
        Route(f"{MODEL_PREFIX}/chat/{{endpoint}}", model_routes["chat"]),
        Route(f"{MODEL_PREFIX}/completions/{{endpoint}}", model_routes["completions"]),
        Route(f"{MODEL_PREFIX}/embeddings/{{endpoint}}", model_routes["embeddings"]),
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route("/_emulator/config", config, methods=["GET", "POST"]),
        Route("/_emulator/revoke", revoke, methods=["POST"]),
        Route("/_emulator/reset_stats", reset_stats, methods=["POST"]),
        Route("/_emulator/reset_limits", reset_limits, methods=["POST"]),
        Route("/{path:path}", UnknownRoute(emulator)),
    ]
    return EmulatorApp(routes, model_routes)


def session_key(raw: bytes) -> str:
    """A session_key-looking string (base64 text) for the token answer."""
    return base64.b64encode(raw).decode().rstrip("=")
