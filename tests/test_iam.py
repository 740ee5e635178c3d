"""IAM credentials: each attempt signed afresh with bce-auth-v1, refusals explained."""

from __future__ import annotations

import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async import _signing

from .support import CHAT_URL, chat_body, error_body, make_client

pytestmark = pytest.mark.anyio

ACCESS_KEY = "ak-iam-0123456789"
SECRET = "sk-iam-do-not-print"


class StepClock:
    """A wall clock that moves 7 s every time it is read."""

    def __init__(self, start: float = 1_704_067_200.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 7
        return self.now


def verified(request: httpx.Request, now: float) -> str | None:
    return _signing.verify(
        request.headers["authorization"],
        secret_for={ACCESS_KEY: SECRET}.get,
        method=request.method,
        path=request.url.path,
        query=request.url.params.multi_items(),
        headers=request.headers.items(),
        now=now,
    )


async def test_signed_call_carries_a_valid_signature_and_no_token(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    clock = StepClock()
    async with make_client(
        credentials=wx.IAMCredentials(ACCESS_KEY, SECRET), clock=clock
    ) as client:
        await client.chat("mpt30b", [wx.user("hi")])
    request = route.calls.last.request
    assert "access_token" not in request.url.params
    authorization = request.headers["authorization"]
    assert authorization.startswith(f"bce-auth-v1/{ACCESS_KEY}/")
    assert "/300/content-type;host;x-bce-date/" in authorization
    issued = _signing.parse_authorization(authorization).issued_at()
    assert request.headers["x-bce-date"] == _signing.format_timestamp(issued)
    assert verified(request, issued) is None


async def test_each_retry_is_signed_afresh(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(200, json=error_body(2)),
            httpx.Response(200, json=chat_body()),
        ]
    )
    clock = StepClock()
    async with make_client(
        credentials=wx.IAMCredentials(ACCESS_KEY, SECRET), clock=clock
    ) as client:
        await client.chat("mpt30b", [wx.user("hi")])
    requests = [call.request for call in route.calls]
    dates = [r.headers["x-bce-date"] for r in requests]
    assert len(set(dates)) == 3, "every attempt has its own x-bce-date"
    for request in requests:
        issued = _signing.parse_authorization(request.headers["authorization"]).issued_at()
        assert _signing.format_timestamp(issued) == request.headers["x-bce-date"]
        assert verified(request, issued) is None


async def test_extra_bce_headers_are_signed(router: respx.MockRouter) -> None:
    route = router.post(CHAT_URL).mock(return_value=httpx.Response(200, json=chat_body()))
    auth = wx.BceSigningAuth(wx.IAMCredentials(ACCESS_KEY, SECRET), clock=lambda: 1_704_067_200.0)
    async with httpx.AsyncClient(auth=auth) as http:
        await http.post(CHAT_URL, json={"x": 1}, headers={"x-bce-meta": "m", "x-custom": "c"})
    request = route.calls.last.request
    signed = _signing.parse_authorization(request.headers["authorization"]).signed_headers
    assert "x-bce-meta" in signed and "x-custom" not in signed
    assert verified(request, 1_704_067_200.0) is None


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json=error_body(14, "IAM Certification failed")),
        httpx.Response(401, json={"requestId": "r", "code": "InvalidAccessKeyId", "message": "no"}),
        httpx.Response(403, text="SignatureDoesNotMatch"),
    ],
)
async def test_refusal_is_an_authentication_error_with_a_hint(
    router: respx.MockRouter, answer: httpx.Response
) -> None:
    route = router.post(CHAT_URL).mock(return_value=answer)
    async with make_client(credentials=wx.IAMCredentials(ACCESS_KEY, SECRET)) as client:
        with pytest.raises(wx.AuthenticationError) as caught:
            await client.chat("mpt30b", [wx.user("hi")])
    text = str(caught.value)
    assert "clock" in text and "Secret Key" in text
    assert SECRET not in text and SECRET not in repr(caught.value)
    assert route.call_count == 1


def test_iam_repr_shows_the_access_key_at_most() -> None:
    text = repr(wx.IAMCredentials(ACCESS_KEY, SECRET))
    assert SECRET not in text
    assert ACCESS_KEY in text


def test_iam_credentials_from_environment() -> None:
    env = {"QIANFAN_ACCESS_KEY": "a", "QIANFAN_SECRET_KEY": "s"}
    assert wx.credentials_from_env(env) == wx.IAMCredentials("a", "s")
    both = {**env, "QIANFAN_AK": "oa", "QIANFAN_SK": "os"}
    assert wx.credentials_from_env(both) == wx.OAuthCredentials("oa", "os"), "the OAuth pair wins"
    with pytest.raises(wx.AuthenticationError, match="QIANFAN_ACCESS_KEY"):
        wx.credentials_from_env({"QIANFAN_SECRET_KEY": "s"})


def test_expiration_must_be_positive() -> None:
    with pytest.raises(wx.ValidationError, match="expiration"):
        wx.IAMCredentials("a", "s", expiration=0)


@pytest.mark.parametrize("access_key", ["ak\x01", "ak\x7f", "a k", "ak\n", "ключ"])
def test_an_access_key_unfit_for_a_header_is_refused_by_name(access_key: str) -> None:
    with pytest.raises(wx.ValidationError, match="access_key: must be printable ASCII"):
        wx.IAMCredentials(access_key, "s")
