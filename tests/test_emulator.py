"""The emulator over httpx.ASGITransport (no sockets): OAuth, auth, routing, checks, answers."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from baiduwx_async import _signing
from baiduwx_async.emulator import Emulator, EmulatorConfig

from .emulator_fixtures import asgi_client
from .support import FakeClock

# These tests speak the wire protocol with bare httpx: see `quiet_raw_httpx`.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("quiet_raw_httpx")]

PREFIX = "/rpc/2.0/ai_custom/v1/wenxinworkshop"
CHAT = f"{PREFIX}/chat/mpt30b"
COMPLETIONS = f"{PREFIX}/completions/pythia12b"
MESSAGES = [{"role": "user", "content": "Please introduce The Great Wall"}]
ID_RE = re.compile(r"as-[a-z0-9]{10}")
TOKEN_RE = re.compile(r"24\.[0-9a-f]{32}\.(\d+)\.(\d+)\.\d+-\d+")
GOOD_CLIENT = {
    "grant_type": "client_credentials",
    "client_id": "test-api-key",
    "client_secret": "test-secret-key",
}


def assert_error(response: httpx.Response, code: int, message: str | None = None) -> None:
    """An error_code answer: HTTP 200, JSON, one line, exactly the three keys."""
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert b"\n" not in response.content
    body = response.json()
    assert list(body) == ["error_code", "error_msg", "id"], body
    assert body["error_code"] == code, body
    assert ID_RE.fullmatch(body["id"])
    if message is not None:
        assert body["error_msg"] == message


def assert_ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert "error_code" not in body, body
    return body


async def call(
    client: httpx.AsyncClient, token: str | None, body: Any, path: str = CHAT, **kw: Any
) -> httpx.Response:
    """POST `body` (JSON, or raw bytes) to a model route."""
    params = {"access_token": token} if token is not None else {}
    if isinstance(body, bytes):
        return await client.post(path, params=params, content=body, **kw)
    return await client.post(path, params=params, json=body, **kw)


@pytest.fixture
def emu(clock: FakeClock) -> Emulator:
    return Emulator(EmulatorConfig(seed=7), clock=clock)


# --- OAuth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_token_success_body(
    client: httpx.AsyncClient, emu: Emulator, clock: FakeClock, method: str
) -> None:
    response = await client.request(method, "/oauth/2.0/token", params=GOOD_CLIENT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == [
        "refresh_token",
        "expires_in",
        "scope",
        "session_key",
        "access_token",
        "session_secret",
    ]
    assert body["expires_in"] == 2592000
    match = TOKEN_RE.fullmatch(body["access_token"])
    assert match is not None
    assert match.group(1) == "2592000"
    assert int(match.group(2)) == int(clock.now)
    assert body["refresh_token"].startswith("25.")
    assert_ok(await call(client, body["access_token"], {"messages": MESSAGES}))
    assert emu.stats()["token_requests"] == 1


async def test_token_form_body_is_tolerated(client: httpx.AsyncClient) -> None:
    response = await client.post("/oauth/2.0/token", data=GOOD_CLIENT)
    assert response.status_code == 200
    assert TOKEN_RE.fullmatch(response.json()["access_token"])


@pytest.mark.parametrize(
    ("client_id", "secret", "description"),
    [
        ("nobody", "test-secret-key", "unknown client id"),
        ("test-api-key", "wrong", "Client authentication failed"),
        ("test-api-key", None, "Client authentication failed"),
    ],
)
async def test_token_invalid_client(
    client: httpx.AsyncClient, emu: Emulator, client_id: str, secret: str | None, description: str
) -> None:
    params = {"grant_type": "client_credentials", "client_id": client_id}
    if secret is not None:
        params["client_secret"] = secret
    response = await client.post("/oauth/2.0/token", params=params)
    assert response.status_code == 401
    expected = {"error_description": description, "error": "invalid_client"}
    assert response.content == json.dumps(expected, separators=(",", ":")).encode()
    emu.configure(oauth_error_status=200)
    response = await client.get("/oauth/2.0/token", params=params)
    assert response.status_code == 200
    assert response.json() == expected
    assert emu.stats()["token_outcomes"] == {"invalid_client": 2}


async def test_token_custom_credentials_and_lifetime(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    emu.configure(credentials={"ak": "sk"}, token_lifetime=60)
    params = {"grant_type": "client_credentials", "client_id": "ak", "client_secret": "sk"}
    body = (await client.post("/oauth/2.0/token", params=params)).json()
    assert body["expires_in"] == 60
    assert ".60." in body["access_token"]
    response = await client.post("/oauth/2.0/token", params={**params, "grant_type": "x"})
    assert response.json()["error"] == "unsupported_grant_type"


# --- access tokens ---------------------------------------------------------------------------


async def test_missing_and_unknown_tokens_are_110(client: httpx.AsyncClient) -> None:
    message = "Access token invalid or no longer valid"
    assert_error(await call(client, None, {"messages": MESSAGES}), 110, message)
    assert_error(await call(client, "24.nope", {"messages": MESSAGES}), 110, message)


async def test_expired_token_is_111(
    client: httpx.AsyncClient, clock: FakeClock, token: str
) -> None:
    clock.now += 2592000 - 1
    assert_ok(await call(client, token, {"messages": MESSAGES}))
    clock.now += 1
    assert_error(await call(client, token, {"messages": MESSAGES}), 111, "Access token expired")


async def test_revoke_tokens(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    emu.configure(static_tokens={"static-token"})
    emu.revoke_tokens()
    assert_error(await call(client, token, {"messages": MESSAGES}), 110)
    assert_ok(await call(client, "static-token", {"messages": MESSAGES}))
    fresh = emu.issue_token()
    assert_ok(await call(client, fresh, {"messages": MESSAGES}))
    assert (await client.post("/_emulator/revoke")).json() == {"ok": True}
    assert_error(await call(client, fresh, {"messages": MESSAGES}), 110)


# --- bce-auth-v1 -----------------------------------------------------------------------------


def signed_headers(
    now: float,
    *,
    access_key: str = "test-access-key",
    secret_key: str = "test-secret-access-key",
    path: str = CHAT,
    timestamp: float | None = None,
) -> dict[str, str]:
    ts = now if timestamp is None else timestamp
    headers = {
        "content-type": "application/json",
        "host": "emulator",
        "x-bce-date": _signing.format_timestamp(ts),
    }
    headers["authorization"] = _signing.sign(
        access_key=access_key,
        secret_key=secret_key,
        method="POST",
        path=path,
        query=[],
        headers=list(headers.items()),
        timestamp=ts,
        headers_to_sign={"content-type", "host", "x-bce-date"},
    )
    return headers


async def test_iam_signature(client: httpx.AsyncClient, emu: Emulator, clock: FakeClock) -> None:
    body = {"messages": MESSAGES}
    assert_ok(await call(client, None, body, headers=signed_headers(clock.now)))
    # revoking access tokens does not touch signatures
    emu.revoke_tokens()
    assert_ok(await call(client, None, body, headers=signed_headers(clock.now)))
    completion = signed_headers(clock.now, path=COMPLETIONS)
    assert_ok(await call(client, None, {"prompt": "hi"}, path=COMPLETIONS, headers=completion))

    bad = [
        signed_headers(clock.now, secret_key="wrong"),
        signed_headers(clock.now, access_key="unknown"),
        signed_headers(clock.now, timestamp=clock.now - 301),  # expired (expiration 300)
        signed_headers(clock.now, timestamp=clock.now + 301),  # beyond the skew
        signed_headers(clock.now, path=COMPLETIONS),  # signed for another path
    ]
    for headers in bad:
        response = await call(client, None, body, headers=headers)
        assert_error(response, 14, "IAM Certification failed")
    tampered = signed_headers(clock.now)
    tampered["x-bce-date"] = _signing.format_timestamp(clock.now + 1)
    assert_error(await call(client, None, body, headers=tampered), 14)
    emu.configure(iam_credentials={"other": "key"})
    assert_error(await call(client, None, body, headers=signed_headers(clock.now)), 14)


# --- routing ---------------------------------------------------------------------------------


async def test_routing_errors(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    body = {"messages": MESSAGES}
    for path in ("/nothing", "/", f"{PREFIX}/chat/", f"{PREFIX}/text2image/x", f"{CHAT}/x"):
        assert_error(await call(client, token, body, path=path), 3, "Unsupported openapi method")
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, CHAT, params={"access_token": token})
        assert_error(response, 336101, "Invalid HTTP method")
    assert_ok(await call(client, token, body, path=f"{PREFIX}/chat/any_name-1"))

    emu.configure(endpoints={"mpt30b", "pythia12b"})
    assert_ok(await call(client, token, body))
    response = await call(client, token, body, path=f"{PREFIX}/chat/other")
    assert_error(response, 336005, "API name not exist")

    emu.configure(forbidden_endpoints={"mpt30b", "completions/pythia12b"})
    assert_error(await call(client, token, body), 6, "No permission to access data")
    response = await call(client, token, {"prompt": "x"}, path=COMPLETIONS)
    assert_error(response, 6)


# --- validation ------------------------------------------------------------------------------

LONG = "x" * 4801

# (body, error_code, text the error_msg contains)
INVALID_CHAT: list[tuple[Any, int, str]] = [
    (b"{not json", 336002, "Invalid JSON"),
    (b"", 336002, "Invalid JSON"),
    (b"\xff\xfe\x00", 336002, "Invalid JSON"),
    (b'{"messages": [], "temperature": NaN}', 336002, "Invalid JSON"),
    (b"[1, 2]", 336001, "Invalid Argument"),
    ({}, 336001, "Invalid Argument"),
    ({"messages": "hi"}, 336001, "Invalid Argument"),
    ({"messages": [{"role": "user"}]}, 336001, "Invalid Argument"),
    ({"messages": [{"role": "user", "content": 5}]}, 336001, "Invalid Argument"),
    ({"messages": ["hi"]}, 336001, "Invalid Argument"),
    ({"messages": MESSAGES, "temperature": True}, 336001, "Invalid Argument"),
    ({"messages": MESSAGES, "temperature": "0.5"}, 336001, "Invalid Argument"),
    ({"messages": MESSAGES, "top_k": 1.5}, 336001, "Invalid Argument"),
    ({"messages": MESSAGES, "top_k": True}, 336001, "Invalid Argument"),
    ({"messages": MESSAGES, "stream": "yes"}, 336001, "Invalid Argument"),
    ({"messages": MESSAGES, "stop": "x"}, 336001, "Invalid Argument"),
    ({"messages": MESSAGES, "stop": [1]}, 336001, "Invalid Argument"),
    ({"messages": MESSAGES, "user_id": 3}, 336001, "Invalid Argument"),
    ({"messages": MESSAGES, "metadata": []}, 336001, "Invalid Argument"),
    ({"messages": []}, 336003, "messages must not be empty"),
    (
        {"messages": [*MESSAGES, {"role": "assistant", "content": "a"}]},
        336003,
        "the length of messages must be an odd number",
    ),
    (
        {"messages": [{"role": "assistant", "content": "a"}]},
        336003,
        "the role of messages[0] must be user",
    ),
    (
        {"messages": [*MESSAGES, {"role": "user", "content": "a"}, *MESSAGES]},
        336003,
        "the role of messages[1] must be assistant",
    ),
    ({"messages": [{"role": "user", "content": " \n"}]}, 336003, "content of messages[0]"),
    ({"messages": MESSAGES, "temperature": 0}, 336003, "temperature must be in (0, 1.0]"),
    ({"messages": MESSAGES, "temperature": 1.01}, 336003, "temperature"),
    ({"messages": MESSAGES, "top_p": -0.1}, 336003, "top_p must be in [0, 1.0]"),
    ({"messages": MESSAGES, "top_p": 1.5}, 336003, "top_p"),
    ({"messages": MESSAGES, "penalty_score": 0.9}, 336003, "penalty_score must be in [1.0, 2.0]"),
    ({"messages": MESSAGES, "penalty_score": 2.1}, 336003, "penalty_score"),
    ({"messages": MESSAGES, "top_k": 0}, 336003, "top_k must be a positive integer"),
    ({"messages": MESSAGES, "stop": ["a"] * 5}, 336003, "stop must have at most 4 items"),
    ({"messages": MESSAGES, "stop": ["a" * 21]}, 336003, "stop item"),
    ({"messages": MESSAGES, "metadata": {"a": 1}}, 336003, "metadata"),
    ({"messages": MESSAGES, "metadata": {str(i): "v" for i in range(17)}}, 336003, "metadata"),
    (
        {"messages": [{"role": "user", "content": LONG}]},
        336003,
        "the max length of current question is 4800",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "a" * 3000},
                {"role": "assistant", "content": "b" * 1000},
                {"role": "user", "content": "c" * 1000},
            ]
        },
        336007,
        "the total length of messages exceeds 4800",
    ),
]


@pytest.mark.parametrize(("body", "code", "text"), INVALID_CHAT)
async def test_chat_validation(
    client: httpx.AsyncClient, token: str, body: Any, code: int, text: str
) -> None:
    response = await call(client, token, body)
    assert_error(response, code)
    assert text in response.json()["error_msg"]


VALID_CHAT: list[dict[str, Any]] = [
    {"messages": MESSAGES, "unknown": {"x": 1}, "extra_parameters": {"request_source": "sdk"}},
    {
        "messages": MESSAGES,
        "temperature": 1,
        "top_p": 0,
        "penalty_score": 2.0,
        "top_k": 1,
        "stop": ["a" * 20] * 4,
        "user_id": "u",
        "metadata": {str(i): "v" for i in range(16)},
        "stream": False,
    },
    {
        "messages": [
            {"role": "user", "content": "a" * 2000},
            {"role": "assistant", "content": "b" * 2000},
            {"role": "user", "content": "c" * 800},
        ]
    },
    {"messages": [{"role": "user", "content": "x" * 4800}], "system": "ignored"},
]


@pytest.mark.parametrize("body", VALID_CHAT)
async def test_chat_accepts(client: httpx.AsyncClient, token: str, body: Any) -> None:
    assert_ok(await call(client, token, body))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, 336001),
        ({"prompt": 1}, 336001),
        ({"prompt": "x", "temperature": False}, 336001),
        ({"prompt": "x", "top_k": -1}, 336003),
        ({"prompt": "x", "stop": ["a"] * 5}, 336003),
        ({"messages": MESSAGES}, 336001),
    ],
)
async def test_completions_validation(
    client: httpx.AsyncClient, token: str, body: Any, code: int
) -> None:
    assert_error(await call(client, token, body, path=COMPLETIONS), code)


async def test_completions_accepts_long_prompt_and_unknown_fields(
    client: httpx.AsyncClient, token: str
) -> None:
    body = {"prompt": "y " * 6000, "metadata": 5, "user_id": "u", "stop": ["\n\n"]}
    assert_ok(await call(client, token, body, path=COMPLETIONS))


async def test_max_lengths_are_configurable(
    client: httpx.AsyncClient, emu: Emulator, token: str
) -> None:
    emu.configure(max_question_chars=10, max_total_chars=20)
    one = {"messages": [{"role": "user", "content": "x" * 11}]}
    assert_error(await call(client, token, one), 336003, "the max length of current question is 10")
    three = {
        "messages": [
            {"role": "user", "content": "x" * 10},
            {"role": "assistant", "content": "x" * 10},
            {"role": "user", "content": "x"},
        ]
    }
    assert_error(await call(client, token, three), 336007)


# --- answers ---------------------------------------------------------------------------------


async def test_non_stream_body(client: httpx.AsyncClient, token: str, clock: FakeClock) -> None:
    response = await call(client, token, {"messages": MESSAGES})
    assert response.headers["content-type"] == "application/json"
    assert b"\n" not in response.content
    body = response.json()
    assert list(body) == [
        "id",
        "object",
        "created",
        "result",
        "is_truncated",
        "need_clear_history",
        "usage",
    ]
    assert ID_RE.fullmatch(body["id"])
    assert body["object"] == "chat.completion"
    assert body["created"] == int(clock.now)
    assert isinstance(body["result"], str)
    assert body["result"]
    assert body["is_truncated"] is False
    assert body["need_clear_history"] is False
    usage = body["usage"]
    assert list(usage) == ["prompt_tokens", "completion_tokens", "total_tokens"]
    assert usage["prompt_tokens"] == 5  # "Please introduce The Great Wall"
    assert usage["completion_tokens"] == len(body["result"].split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    completion = (await call(client, token, {"prompt": "你好 world"}, path=COMPLETIONS)).json()
    assert completion["object"] == "completion"
    assert completion["usage"]["prompt_tokens"] == 3  # two ideographs and a word


async def test_answers_are_deterministic(client: httpx.AsyncClient, token: str) -> None:
    other = Emulator(EmulatorConfig(seed=99))
    async with asgi_client(other) as second:
        one = (await call(client, token, {"messages": MESSAGES})).json()
        two = (await call(second, other.issue_token(), {"messages": MESSAGES})).json()
    assert one["result"] == two["result"]
    assert one["usage"] == two["usage"]
    assert one["id"] != two["id"]
    results = {one["result"]}
    for content in ("a", "b", "c", "d"):
        messages = [{"role": "user", "content": content}]
        results.add((await call(client, token, {"messages": messages})).json()["result"])
    other_endpoint = await call(client, token, {"messages": MESSAGES}, path=f"{PREFIX}/chat/x")
    results.add(other_endpoint.json()["result"])
    assert len(results) == 6
    sentences = [s for r in results for s in r.split(". ")]
    assert all(s[0].isupper() and s[-1] != " " for s in sentences)


async def test_sentence_count_is_configurable(
    client: httpx.AsyncClient, emu: Emulator, token: str
) -> None:
    emu.configure(sentences_min=1, sentences_max=1)
    for content in ("a", "b", "c"):
        body = {"messages": [{"role": "user", "content": content}]}
        result = (await call(client, token, body)).json()["result"]
        assert result.count(".") == 1
        assert result.endswith(".")


async def test_seeded_ids_repeat(clock: FakeClock) -> None:
    seen = []
    for _ in range(2):
        emulator = Emulator(EmulatorConfig(seed=3), clock=clock)
        async with asgi_client(emulator) as http:
            answer = await http.get("/oauth/2.0/token", params=GOOD_CLIENT)
            token = answer.json()["access_token"]
            body = (await call(http, token, {"messages": MESSAGES})).json()
            seen.append((token, body["id"]))
    assert seen[0] == seen[1]


async def test_request_id_echo(client: httpx.AsyncClient, token: str) -> None:
    response = await call(client, token, {"messages": MESSAGES}, headers={"Request_id": "req-42"})
    assert response.headers["x-baidu-request-id"] == "req-42"
    response = await call(client, None, {"messages": MESSAGES}, headers={"Request_id": "req-43"})
    assert response.headers["x-baidu-request-id"] == "req-43"
    generated = (await call(client, token, {"messages": MESSAGES})).headers["x-baidu-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


async def test_fail_prompts(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    emu.configure(fail_prompts={"poison": 336100, "bad chat": 2})
    assert_error(await call(client, token, {"prompt": "poison"}, path=COMPLETIONS), 336100)
    assert_ok(await call(client, token, {"prompt": "fine"}, path=COMPLETIONS))
    conversation = [
        {"role": "user", "content": "bad chat"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "fine"},
    ]
    assert_ok(await call(client, token, {"messages": conversation}))
    conversation[2]["content"] = "bad chat"
    assert_error(await call(client, token, {"messages": conversation}), 2)
