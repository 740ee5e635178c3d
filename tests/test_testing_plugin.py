"""The testing kit: `baiduwx_async.testing` as users meet it.

Small test files are run with `pytester` under pytest-asyncio's strict and auto modes and
under anyio's plugin (with and without pytest-asyncio installed), each with a deliberately
failing test to prove a failure inside the fixtures is seen. The helpers are also tested
directly: `run_emulator` and `mock_wenxin`, whose bodies must be protocol-shaped.
"""

from __future__ import annotations

import json
import sys

import anyio
import httpx
import pytest
import respx

import baiduwx_async as wx
from baiduwx_async import testing

from . import processes

pytest_plugins = ["pytester"]

INI_STRICT = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
"""
INI_AUTO = INI_STRICT.replace("strict", "auto")

STRICT_TESTS = """
import pytest
import baiduwx_async as wx

MESSAGES = [wx.user("Please introduce The Great Wall")]

@pytest.mark.asyncio
async def test_client(wenxin_client, wenxin_emulator):
    reply = await wenxin_client.chat("mpt30b", MESSAGES)
    async with wenxin_client.chat_stream("mpt30b", MESSAGES) as stream:
        text = "".join([chunk.result async for chunk in stream])
    assert text == reply.result
    assert wenxin_emulator.base_url.startswith("http://127.0.0.1:")
    assert wenxin_emulator.stats()["endpoints"] == {"chat/mpt30b": {"ok": 2}}

@pytest.mark.asyncio
@pytest.mark.wenxin_emulator(qps=5, faults={"error_2": 0.5}, seed=3)
async def test_marker(wenxin_emulator, wenxin_client):
    assert wenxin_emulator.config.qps == 5
    assert wenxin_emulator.config.faults == {"error_2": 0.5}

@pytest.mark.asyncio
@pytest.mark.parametrize("wenxin_emulator", [{"rpm": 7}], indirect=True)
async def test_indirect(wenxin_emulator, wenxin_client):
    reply = await wenxin_client.complete("pythia12b", "Beijing")
    assert reply.ratelimit.limit_requests == 7

@pytest.mark.asyncio
@pytest.mark.wenxin_emulator(faults={"error_2": 1.0})
@pytest.mark.parametrize("wenxin_client", [{"max_retries": 0}], indirect=True)
async def test_client_settings(wenxin_emulator, wenxin_client):
    with pytest.raises(wx.ServerError):
        await wenxin_client.chat("mpt30b", MESSAGES)
    assert wenxin_emulator.stats()["endpoints"] == {"chat/mpt30b": {"error_2": 1}}

@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop(wenxin_client):
    assert (await wenxin_client.chat("mpt30b", MESSAGES)).result

@pytest.mark.asyncio
async def test_fails(wenxin_client):
    reply = await wenxin_client.chat("mpt30b", MESSAGES)
    assert reply.result == "deliberately wrong"
"""

AUTO_TESTS = """
import pytest
import baiduwx_async as wx

async def test_client(wenxin_client, wenxin_emulator):
    reply = await wenxin_client.chat("mpt30b", [wx.user("hi")])
    assert reply.result
    wenxin_emulator.revoke_tokens()
    assert (await wenxin_client.chat("mpt30b", [wx.user("hi")])).result
    assert wenxin_emulator.stats()["token_requests"] == 2

@pytest.mark.wenxin_emulator(asgi=True)
async def test_asgi(wenxin_client, wenxin_emulator):
    assert wenxin_emulator.base_url == "http://emulator.localhost"
    assert (await wenxin_client.complete("pythia12b", "hi")).result

async def test_fails(wenxin_client):
    await wenxin_client.chat("mpt30b", [wx.user("hi")])
    assert False, "deliberately"
"""

ANYIO_TESTS = """
import pytest
import baiduwx_async as wx

pytestmark = pytest.mark.anyio

@pytest.fixture
def anyio_backend():
    return "asyncio"

async def test_client(wenxin_client, wenxin_emulator):
    reply = await wenxin_client.chat("mpt30b", [wx.user("hi")])
    assert reply.result
    assert wenxin_emulator.stats()["endpoints"] == {"chat/mpt30b": {"ok": 1}}

@pytest.mark.wenxin_emulator(asgi=True)
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_asgi_both_loops(wenxin_client, anyio_backend):
    assert (await wenxin_client.chat("mpt30b", [wx.user("hi")])).result

@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_socket_under_trio_says_what_to_do(wenxin_emulator):
    pass

async def test_fails(wenxin_emulator):
    assert wenxin_emulator.stats()["calls"] == 99
"""

SYNC_TESTS = """
def test_sync(wenxin_client):
    pass
"""

MOCK_TESTS = """
import pytest
import baiduwx_async as wx
from baiduwx_async import testing

pytestmark = pytest.mark.anyio

@pytest.fixture
def anyio_backend():
    return "asyncio"

async def test_with_block():
    with testing.mock_wenxin(base_url="https://wx.test") as mock:
        mock.chat("mpt30b", result="Hello!")
        async with wx.AsyncClient(credentials=wx.OAuthCredentials("a", "b"),
                                  base_url="https://wx.test") as client:
            assert (await client.chat("mpt30b", [wx.user("hi")])).result == "Hello!"
    assert mock.token_route.call_count == 1

async def test_respx_fixture(respx_mock, monkeypatch):
    monkeypatch.setenv("QIANFAN_BASE_URL", "https://env.test")
    mock = testing.mock_wenxin(respx_mock)
    mock.stream("mpt30b", ["a", "b"])
    async with wx.AsyncClient(credentials=wx.OAuthCredentials("a", "b")) as client:
        assert (await client.chat_stream("mpt30b", [wx.user("hi")]).collect()).result == "ab"

async def test_fails():
    with testing.mock_wenxin() as mock:
        mock.error("mpt30b", 336003)
        async with wx.AsyncClient(credentials=wx.OAuthCredentials("a", "b")) as client:
            await client.chat("mpt30b", [wx.user("hi")])
"""


#: In-process runs; hypothesis's plugin alone would cost a second each.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def run(pytester: pytest.Pytester, ini: str, tests: str, *args: str) -> pytest.RunResult:
    pytester.makeini(ini)
    pytester.makepyfile(test_user=tests)
    return pytester.runpytest(*QUIET, "-W", "error", *args)


# --- the fixtures, under each plugin


def test_fixtures_in_pytest_asyncio_strict_mode(pytester: pytest.Pytester) -> None:
    result = run(pytester, INI_STRICT, STRICT_TESTS)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*test_fails*", "*deliberately wrong*"])
    assert "PytestDeprecationWarning" not in result.stdout.str()


def test_fixtures_in_pytest_asyncio_auto_mode(pytester: pytest.Pytester) -> None:
    result = run(pytester, INI_AUTO, AUTO_TESTS)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: deliberately*"])


def test_fixtures_with_anyio_plugin(pytester: pytest.Pytester) -> None:
    result = run(pytester, INI_STRICT, ANYIO_TESTS)
    result.assert_outcomes(passed=3, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*test_socket_under_trio_says_what_to_do*", "*wenxin_emulator(asgi=True)*"]
    )


def test_fixtures_with_anyio_plugin_and_no_pytest_asyncio(pytester: pytest.Pytester) -> None:
    result = run(pytester, "[pytest]\n", ANYIO_TESTS, "-p", "no:asyncio")
    result.assert_outcomes(passed=3, failed=1, errors=1)


def test_fixture_in_a_sync_test_says_what_to_do(pytester: pytest.Pytester) -> None:
    result = run(pytester, INI_STRICT, SYNC_TESTS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs an async test run by pytest-asyncio*"])


def test_mock_in_user_tests(pytester: pytest.Pytester) -> None:
    result = run(pytester, INI_STRICT, MOCK_TESTS)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*InvalidRequestError*336003*"])


def test_marker_and_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI_STRICT)
    markers = pytester.runpytest(*QUIET, "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.wenxin_emulator(*"])
    fixtures = pytester.runpytest(*QUIET, "--fixtures")
    fixtures.stdout.fnmatch_lines(["wenxin_client*", "*AsyncClient*bound*"])
    fixtures.stdout.fnmatch_lines(["wenxin_emulator*", "*running emulator*"])


def test_importing_the_kit_is_cheap() -> None:
    code = (
        "import sys, json, baiduwx_async.testing;"
        "print(json.dumps([m for m in ('starlette', 'uvicorn', 'respx', 'qianfan', "
        "'baiduwx_async.emulator') if m in sys.modules]))"
    )
    done = processes.run([sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr
    loaded = done.stdout
    assert json.loads(loaded) == []


# --- run_emulator, directly


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_run_emulator_closes_its_clients() -> None:
    async with testing.run_emulator(qps=50, seed=2) as emu:
        assert emu.config.qps == 50
        assert emu.credentials == wx.OAuthCredentials("test-api-key", "test-secret-key")
        assert emu.iam_credentials.access_key == "test-access-key"
        client = emu.client()
        iam_client = emu.client(credentials=emu.iam_credentials)
        http = emu.http_client()
        await client.chat("m", [wx.user("hi")])
        await iam_client.chat("m", [wx.user("hi")])
        assert (await http.get("/_emulator/stats")).json()["calls"] == 2
        emu.configure(qps=1)
        assert emu.emulator.config.qps == 1
        with pytest.raises(TypeError, match="unknown emulator setting"):
            emu.configure(nonsense=1)
    assert client.is_closed and iam_client.is_closed and http.is_closed
    with pytest.raises(RuntimeError, match="stopped"):
        emu.client()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_run_emulator_on_a_socket_under_trio_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match=r"asgi=True"):
        async with testing.run_emulator():
            pass


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_run_emulator_asgi_mode(anyio_backend: str) -> None:
    from baiduwx_async.emulator import EmulatorConfig

    async with testing.run_emulator(EmulatorConfig(seed=4), asgi=True, sentences_max=2) as emu:
        assert emu.asgi and emu.config.seed == 4 and emu.config.sentences_max == 2
        client = emu.client()
        reply = await client.chat("m", [wx.user("hi")])
        assert reply.result
        response = await emu.http_client().post("/_emulator/revoke")
        assert response.json() == {"ok": True}
    assert client.is_closed


def test_bad_settings_fail_before_anything_runs() -> None:
    async def main() -> None:
        async with testing.run_emulator(faults={"no_such_fault": 0.5}):
            pass

    with pytest.raises(ValueError, match="unknown fault"):
        anyio.run(main)


# --- mock_wenxin, directly: the bodies must be exactly protocol-shaped

CHAT_KEYS = ["id", "object", "created", "result", "is_truncated", "need_clear_history", "usage"]
CHUNK_KEYS = [
    "id",
    "object",
    "created",
    "sentence_id",
    "is_end",
    "is_truncated",
    "result",
    "need_clear_history",
    "finish_reason",
    "usage",
]
URL = "https://aip.baidubce.com/rpc/2.0/ai_custom/v1/wenxinworkshop"


def test_mock_bodies_are_protocol_shaped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QIANFAN_BASE_URL", raising=False)
    with testing.mock_wenxin() as mock, httpx.Client() as http:
        mock.chat("mpt30b", result="你好！")
        mock.complete("pythia12b", result="Beijing.")
        token = http.post(
            "https://aip.baidubce.com/oauth/2.0/token",
            params={"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"},
        ).json()
        chat = http.post(
            f"{URL}/chat/mpt30b",
            json={"messages": [{"role": "user", "content": "你好 there"}]},
            headers={"Request_id": "r-1"},
        )
        done = http.post(f"{URL}/completions/pythia12b", json={"prompt": "Beijing is"})
    assert list(token) == [
        "refresh_token",
        "expires_in",
        "scope",
        "session_key",
        "access_token",
        "session_secret",
    ]
    assert token["access_token"] == mock.access_token and token["expires_in"] == 2592000
    body = chat.json()
    assert list(body) == CHAT_KEYS
    assert body["object"] == "chat.completion" and body["result"] == "你好！"
    assert body["id"].startswith("as-") and len(body["id"]) == 13
    # tokens as the emulator counts them: a CJK character each, else a run of non-spaces
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert chat.headers["content-type"] == "application/json"
    assert chat.headers["x-baidu-request-id"] == "r-1"
    assert chat.headers["x-ratelimit-limit-requests"] == "300"
    assert b"\n" not in chat.content and "你好".encode() in chat.content  # one line, raw UTF-8
    assert done.json()["object"] == "completion"
    assert list(done.json()) == CHAT_KEYS
    assert mock.requests("mpt30b") == [{"messages": [{"role": "user", "content": "你好 there"}]}]


def test_mock_stream_is_sse_framed() -> None:
    with testing.mock_wenxin(base_url="https://wx.test") as mock, httpx.Client() as http:
        mock.stream("pythia12b", ["One two.", " Three."], kind="completions")
        response = http.post(
            "https://wx.test/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/pythia12b",
            json={"prompt": "count", "stream": True},
        )
        plain = http.post(
            "https://wx.test/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/pythia12b",
            json={"prompt": "count"},
        ).json()
    assert response.headers["content-type"] == "text/event-stream"
    events = response.text.split("\n\n")
    assert events[-1] == ""
    chunks = []
    for event in events[:-1]:
        assert event.startswith("data: {") and "\n" not in event
        chunks.append(json.loads(event[len("data: ") :]))
    assert [list(chunk) for chunk in chunks] == [CHUNK_KEYS, CHUNK_KEYS]
    assert [c["sentence_id"] for c in chunks] == [0, 1]
    assert [c["is_end"] for c in chunks] == [False, True]
    assert [c["result"] for c in chunks] == ["One two.", " Three."]
    assert chunks[0]["id"] == chunks[1]["id"]
    assert chunks[0]["object"] == "completion"
    assert chunks[0]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert chunks[1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    assert plain["result"] == "One two. Three."
    assert plain["usage"] == chunks[1]["usage"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_mock_drives_the_client(anyio_backend: str) -> None:
    async with testing.mock_wenxin(base_url="https://wx.test") as mock:
        mock.chat("mpt30b", result="Hi!", usage={"prompt_tokens": 3, "completion_tokens": 2})
        mock.error("mpt30b", 2, times=2)  # two failures first, then the lasting answer
        mock.stream("streamer", ["Hel", "lo"], usage=wx.Usage(1, 2, 3))
        mock.stream("broken", ["Hel"], error_code=336100)
        mock.stream("cut", ["Hel"], end=False)
        mock.http_error("busy", 503, retry_after=0)
        mock.error("denied", 6)
        policy = wx.RetryPolicy(max_retries=2, initial_backoff=0.001, max_backoff=0.002)
        async with wx.AsyncClient(
            credentials=wx.OAuthCredentials("a", "b"),
            base_url="https://wx.test",
            retry_policy=policy,
            rate_limiter=wx.NoLimit(),
        ) as client:
            reply = await client.chat("mpt30b", [wx.user("hi")], request_id="abc")
            collected = await client.chat_stream("streamer", [wx.user("hi")]).collect()
            with pytest.raises(wx.ServerError) as broken:
                await client.chat_stream("broken", [wx.user("hi")]).collect()
            with pytest.raises(wx.StreamError):
                await client.chat_stream("cut", [wx.user("hi")]).collect()
            with pytest.raises(wx.ServerError):
                await client.chat("busy", [wx.user("hi")])
            with pytest.raises(wx.PermissionDeniedError):
                await client.chat("denied", [wx.user("hi")])
    assert reply.result == "Hi!"
    assert reply.usage == wx.Usage(3, 2, 5)
    assert reply.request_id == "abc"
    assert reply.ratelimit.limit_requests == 300
    assert mock.route("mpt30b").call_count == 3
    assert (collected.result, collected.usage) == ("Hello", wx.Usage(1, 2, 3))
    assert broken.value.code == 336100
    assert mock.route("busy").call_count == 3
    assert mock.token_route.call_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_mock_token_errors_and_iam() -> None:
    with respx.mock(assert_all_called=False) as router:
        mock = testing.mock_wenxin(router, base_url="https://wx.test")
        mock.chat("m")
        mock.token(error="invalid_client")
        async with wx.AsyncClient(
            credentials=wx.OAuthCredentials("a", "b"), base_url="https://wx.test"
        ) as client:
            with pytest.raises(wx.AuthenticationError):
                await client.chat("m", [wx.user("hi")])
        async with wx.AsyncClient(
            credentials=wx.IAMCredentials("ak", "sk"), base_url="https://wx.test"
        ) as client:
            assert (await client.chat("m", [wx.user("hi")])).result
    assert mock.route("m").call_count == 1
    assert "authorization" in mock.route("m").calls.last.request.headers


def test_mock_rejects_bad_arguments() -> None:
    mock = testing.mock_wenxin()
    with pytest.raises(ValueError, match="kind"):
        mock.error("m", 2, kind="images")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        mock.chat("m", times=0)
    with pytest.raises(ValueError, match="at least one chunk"):
        mock.stream("m", [])
