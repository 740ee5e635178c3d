"""Every code of the error table raises its class, retried exactly when the table says."""

from __future__ import annotations

import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async._errors import ERROR_TABLE, TOKEN_REFRESH_CODES, rule_for_code

from .support import CHAT_URL, TOKEN, chat_body, error_body, make_client

pytestmark = pytest.mark.anyio

EXPECTED_CLASS: dict[int | str, type[wx.APIError]] = {
    1: wx.ServerError,
    2: wx.ServerError,
    3: wx.InvalidRequestError,
    4: wx.RateLimitError,
    6: wx.PermissionDeniedError,
    13: wx.AuthenticationError,
    14: wx.AuthenticationError,
    15: wx.ServerError,
    17: wx.QuotaExceededError,
    18: wx.RateLimitError,
    19: wx.QuotaExceededError,
    100: wx.InvalidRequestError,
    110: wx.AuthenticationError,
    111: wx.AuthenticationError,
    336000: wx.ServerError,
    336001: wx.InvalidRequestError,
    336002: wx.InvalidRequestError,
    336003: wx.InvalidRequestError,
    336004: wx.PermissionDeniedError,
    336005: wx.InvalidRequestError,
    336006: wx.InvalidRequestError,
    336007: wx.InvalidRequestError,
    336100: wx.ServerError,
    336101: wx.InvalidRequestError,
    336102: wx.InvalidRequestError,
    336103: wx.InvalidRequestError,
    336104: wx.InvalidRequestError,
    336105: wx.InvalidRequestError,
    336501: wx.RateLimitError,
    336502: wx.RateLimitError,
    500000: wx.ServerError,
    "invalid_client": wx.AuthenticationError,
}
RETRYABLE = {1, 2, 4, 15, 18, 336000, 336100, 336501, 336502, 500000}


def test_table_covers_every_documented_code() -> None:
    assert set(ERROR_TABLE) == set(EXPECTED_CLASS)
    for code, cls in EXPECTED_CLASS.items():
        assert rule_for_code(code).error_class is cls, code
        assert rule_for_code(code).retryable is (code in RETRYABLE), code


def test_the_tree() -> None:
    assert issubclass(wx.QuotaExceededError, wx.RateLimitError)
    assert issubclass(wx.RequestTimeoutError, wx.TransportError)
    assert issubclass(wx.RequestTimeoutError, TimeoutError)
    assert issubclass(wx.ValidationError, ValueError)
    assert issubclass(wx.StreamError, wx.WenxinError)
    for cls in set(EXPECTED_CLASS.values()):
        assert issubclass(cls, wx.APIError)


# Token-refresh codes are exercised with a static token (nothing to refresh) here,
# and with refresh in test_tokens.py.
CODES = sorted((c for c in EXPECTED_CLASS if isinstance(c, int)), key=int)


@pytest.mark.parametrize("code", CODES)
async def test_each_code_raises_its_class(router: respx.MockRouter, code: int) -> None:
    route = router.post(CHAT_URL).mock(
        return_value=httpx.Response(200, json=error_body(code, f"message {code}"))
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.APIError) as caught:
            await client.chat("mpt30b", [wx.user("hi")])
    error = caught.value
    assert type(error) is EXPECTED_CLASS[code]
    assert error.code == code
    assert error.message == f"message {code}"
    assert error.status_code == 200
    assert error.response_id == "as-fxhfe8n53r"
    assert error.request_id is not None and error.request_id.startswith("baiduwx_async-")
    assert error.retryable is (code in RETRYABLE)
    expected_attempts = 1
    if code in RETRYABLE:
        expected_attempts = 2 if code == 336000 else 4  # 336000 is retried once only
    assert route.call_count == expected_attempts
    assert TOKEN not in str(error)


async def test_unknown_code_is_a_plain_api_error_not_retried(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=error_body(999999)))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.APIError) as caught:
            await client.chat("mpt30b", [wx.user("hi")])
    assert type(caught.value) is wx.APIError and caught.value.code == 999999
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("status", "cls", "attempts"),
    [
        (429, wx.RateLimitError, 4),
        (500, wx.ServerError, 4),
        (502, wx.ServerError, 4),
        (503, wx.ServerError, 4),
        (401, wx.AuthenticationError, 1),
        (403, wx.AuthenticationError, 1),
        (404, wx.InvalidRequestError, 1),
        (400, wx.InvalidRequestError, 1),
    ],
)
async def test_http_status_without_error_body(
    router: respx.MockRouter, status: int, cls: type[wx.APIError], attempts: int
) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(status, text="<html>no</html>"))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(cls) as caught:
            await client.chat("mpt30b", [wx.user("hi")])
    assert caught.value.status_code == status and caught.value.code is None
    assert route.call_count == attempts


async def test_error_code_wins_over_http_status(router: respx.MockRouter) -> None:
    router.post(CHAT_URL).mock(return_value=httpx.Response(500, json=error_body(336003, "bad")))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.InvalidRequestError):
            await client.chat("mpt30b", [wx.user("hi")])


async def test_ok_status_that_is_not_json_is_a_protocol_error(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, text="not json"))
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        with pytest.raises(wx.ProtocolError, match="not JSON"):
            await client.chat("mpt30b", [wx.user("hi")])
    assert route.call_count == 1


async def test_retryable_code_then_success(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(
        side_effect=[
            httpx.Response(200, json=error_body(18)),
            httpx.Response(200, json=error_body(336100)),
            httpx.Response(200, json=chat_body("finally")),
        ]
    )
    async with make_client(credentials=wx.StaticToken(TOKEN)) as client:
        reply = await client.chat("mpt30b", [wx.user("hi")])
    assert reply.result == "finally"
    assert route.call_count == 3


def test_refresh_codes() -> None:
    assert frozenset({110, 111}) == TOKEN_REFRESH_CODES


def test_message_shows_code_and_request_id() -> None:
    error = wx.RateLimitError("Open api qps request limit reached", code=18, request_id="r-1")
    assert str(error) == "[18] Open api qps request limit reached (request_id=r-1)"
