"""Bytes on the wire: compact JSON, error texts, and small raw-ASGI senders."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import attrs
import httpx

__all__ = [
    "ERROR_MESSAGES",
    "ASGIApp",
    "ConnectionDropped",
    "Failure",
    "Headers",
    "Receive",
    "Scope",
    "Send",
    "drop_connection",
    "dumps",
    "error_message",
    "read_body",
    "send_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: `error_msg` texts: docs/protocol.md §6 (documented where known, the project's choice elsewhere).
ERROR_MESSAGES: dict[int, str] = {
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
    336004: "No permission",
    336005: "API name not exist",
    336006: "Invalid message format",
    336007: "the total length of messages is too long",
    336100: "high load",
    336101: "Invalid HTTP method",
    336501: "Rate limit reached for RPM",
    336502: "Rate limit reached for TPM",
}


@attrs.frozen
class Failure:
    """An `error_code` answer."""

    code: int
    message: str


def error_message(code: int) -> str:
    return ERROR_MESSAGES.get(code, f"error {code}")


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: object) -> bytes:
    """Compact one-line JSON, non-ASCII sent raw."""
    return _encoder.encode(value).encode("utf-8")


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def send_response(send: Send, status: int, headers: Headers, body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised by the app for a dropped connection when the server offers no way to drop one.

    Under uvicorn the emulator closes the socket instead, and a client sees a transport error;
    under `httpx.ASGITransport` this exception reaches the client, which is the same thing.
    """


async def drop_connection(receive: Receive) -> None:
    """Close the client's connection without finishing the answer.

    Uses the transport of uvicorn's request cycle (`receive` is its bound method); waits for
    the server to notice, so that it neither logs nor sends a 500. Raises `ConnectionDropped`
    on servers without one.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    close = getattr(transport, "close", None)
    if close is None:
        raise ConnectionDropped("Server disconnected without sending a response.")
    close()
    while (await receive())["type"] != "http.disconnect":
        pass
