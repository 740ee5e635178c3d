"""
What the requests of one call share (`CallTemplate`: its route, auth, timeout and retry
policy) and how each one's `PreparedCall` is made; and the client's address rules.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable
from typing import Any

import httpx

from . import _protocol as protocol
from ._auth import RequestAuth
from ._extras import Extras
from ._retry import RetryPolicy
from ._sender import PreparedCall

__all__ = ["CallTemplate", "base_url_setting", "is_loopback"]


def base_url_setting(base_url: object) -> str:
    """Which setting gave the client its address, for the hint of a connection failure."""
    if base_url:
        return "base_url="
    if os.environ.get("QIANFAN_BASE_URL"):
        return "QIANFAN_BASE_URL"
    return "the default base_url (set base_url= or QIANFAN_BASE_URL to change it)"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")  # RFC 6761: loopback


class CallTemplate:
    """What the requests of one call share; `call()` makes each one's `PreparedCall`."""

    __slots__ = ("auth", "policy", "timeout", "tokens_for", "url")

    def __init__(
        self,
        auth: RequestAuth,
        url: httpx.URL,
        timeout: httpx.Timeout,
        policy: RetryPolicy,
        tokens_for: Callable[[dict[str, Any]], int] | None = None,
    ) -> None:
        self.auth = auth
        self.url = url
        self.timeout = timeout
        self.policy = policy
        self.tokens_for = tokens_for  # the token estimate, with a token budget

    def call(
        self, body: dict[str, Any], extras: Extras, request_id: str | None = None
    ) -> PreparedCall:
        if extras.body:
            body.update(extras.body)
        headers = {
            "Content-Type": "application/json",
            protocol.REQUEST_ID_HEADER: request_id
            or extras.request_id
            or protocol.new_request_id(),
        }
        if extras.headers:
            for name, value in extras.headers.items():
                for same in [key for key in headers if key.lower() == name.lower()]:
                    del headers[same]  # the caller's replaces ours, whatever its case
                headers[name] = value
        return PreparedCall(
            auth=self.auth,
            url=self.url,
            content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
            headers=headers,
            timeout=self.timeout,
            policy=self.policy,
            tokens=None if self.tokens_for is None else self.tokens_for(body),
        )
