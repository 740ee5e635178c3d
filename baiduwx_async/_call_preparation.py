"""
How `AsyncClient` turns a call into its `PreparedCall`: the inputs checked, the body built,
the route parsed once per endpoint, and the token estimate of a budgeted client charged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import httpx

from . import _protocol as protocol
from ._auth import RequestAuth
from ._calls import CallTemplate
from ._errors import ValidationError
from ._extras import Extras
from ._models import (
    ChatParams,
    CompletionParams,
    MessageLike,
    check_endpoint,
    check_messages,
    check_prompt,
)
from ._params import CHAT_KEYS, COMPLETION_KEYS, split_params
from ._retry import RetryPolicy
from ._sender import PreparedCall, Sender
from ._token_budget import TokenEstimator

__all__ = ["CallPreparation"]


class CallPreparation:
    """The request-building half of `AsyncClient` (which sets these attributes)."""

    _auth: RequestAuth
    _base_url: httpx.URL
    _estimate: TokenEstimator | None
    _max_input_chars: int | None
    _retry: RetryPolicy
    _sender: Sender
    _timeout: httpx.Timeout
    _urls: dict[tuple[str, str], httpx.URL]

    def _prepare_chat(
        self,
        name: str,
        endpoint: str,
        messages: Sequence[MessageLike],
        params: Mapping[str, Any],
        stream: bool,
    ) -> PreparedCall:
        fields, extras = split_params(name, params, ChatParams, CHAT_KEYS)
        body = {
            "messages": check_messages(messages, max_chars=self._max_input_chars),
            **fields,
            "stream": stream,
        }
        return self._template("chat", endpoint, extras).call(body, extras)

    def _prepare_completion(
        self, name: str, endpoint: str, prompt: str, params: Mapping[str, Any], stream: bool
    ) -> PreparedCall:
        fields, extras = split_params(name, params, CompletionParams, COMPLETION_KEYS)
        body = {"prompt": check_prompt(prompt), **fields, "stream": stream}
        return self._template("completions", endpoint, extras).call(body, extras)

    def _template(self, kind: protocol.Kind, endpoint: str, extras: Extras) -> CallTemplate:
        """What every request of a call shares: checked before the first one is sent."""
        url = self._model_url(kind, endpoint)
        if extras.query:
            url = url.copy_merge_params(extras.query)
        policy = self._retry
        if extras.max_retries is not None:
            policy = attrs.evolve(policy, max_retries=extras.max_retries)
        timeout = self._timeout if extras.timeout is None else extras.timeout
        tokens_for = None if self._estimate is None else self._tokens_for
        return CallTemplate(self._auth, url, timeout, policy, tokens_for)

    def _tokens_for(self, body: dict[str, Any]) -> int:
        """The estimated tokens of a request, refused if it could never fit the budget."""
        assert self._estimate is not None and self._sender.budget is not None
        tokens = self._estimate(body)
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValidationError("token_estimator", "must return a whole number >= 0", tokens)
        field = "messages" if "messages" in body else "prompt" if "prompt" in body else "input"
        self._sender.budget.check_tokens(tokens, field)
        return tokens

    def _model_url(self, kind: protocol.Kind, endpoint: str) -> httpx.URL:
        # Parsing a URL is the dearest step of building a request: parse each route once.
        url = self._urls.get((kind, endpoint))
        if url is None:
            if len(self._urls) >= 256:
                self._urls.clear()
            path = protocol.model_path(kind, check_endpoint(endpoint))
            url = self._urls[kind, endpoint] = httpx.URL(f"{self._base_url}{path}")
        return url
