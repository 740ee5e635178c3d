"""Raw ASGI for the gateway: message types, JSON bytes, one request's facts."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["Exchange", "Receive", "Scope", "Send", "dumps", "printable", "route_path", "send_json"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: object) -> bytes:
    """Compact JSON, non-ASCII sent as UTF-8."""
    return _encoder.encode(value).encode()


class Exchange:
    """One request's facts for its log line, and the stream state."""

    __slots__ = ("disconnected", "error", "finished", "index", "model", "started", "status")

    def __init__(self) -> None:
        self.model: str | None = None
        self.status = 500
        self.started = False  # the answer's status line was sent
        self.finished = False  # everything meant to be sent was sent
        self.disconnected = False
        self.error: Exception | None = None
        self.index: dict[int, int] | None = None


async def send_json(
    send: Send, status: int, body: bytes, extra: Mapping[str, str] | None = None
) -> None:
    headers = [_JSON, (b"content-length", b"%d" % len(body))]
    if extra:
        headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def route_path(scope: Scope) -> str:
    """The path below the app's mount point, as Starlette's router matches it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def printable(text: str, limit: int = 80) -> str:
    return text[:limit].encode("unicode_escape").decode("ascii")
