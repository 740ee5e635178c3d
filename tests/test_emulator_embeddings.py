"""The emulator's embeddings route over httpx.ASGITransport: answers, vectors, checks, limits."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from baiduwx_async.emulator import PRESET_EMBEDDINGS, EmbeddingModel, Emulator, EmulatorConfig

from .test_emulator import (
    ID_RE,
    PREFIX,
    FakeClock,
    assert_error,
    assert_ok,
    call,
    signed_headers,
)
from .test_emulator_stream import RATE_HEADERS

# These tests speak the wire protocol with bare httpx: see `quiet_raw_httpx`.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("quiet_raw_httpx")]

EMBED = f"{PREFIX}/embeddings/embedding-v1"


def embed_path(endpoint: str) -> str:
    return f"{PREFIX}/embeddings/{endpoint}"


@pytest.fixture
def emu(clock: FakeClock) -> Emulator:
    return Emulator(EmulatorConfig(seed=11), clock=clock)


async def embed(
    client: httpx.AsyncClient, token: str | None, texts: Any, endpoint: str = "embedding-v1"
) -> httpx.Response:
    return await call(client, token, {"input": texts}, path=embed_path(endpoint))


async def test_answer_shape(client: httpx.AsyncClient, token: str, clock: FakeClock) -> None:
    response = await call(
        client,
        token,
        {"input": ["hello", "world", "你好"]},
        path=EMBED,
        headers={"Request_id": "e1"},
    )
    body = assert_ok(response)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-baidu-request-id"] == "e1"
    assert all(name in response.headers for name in RATE_HEADERS)
    assert list(body) == ["id", "object", "created", "data", "usage"]
    assert ID_RE.fullmatch(body["id"])
    assert body["object"] == "embedding_list"
    assert body["created"] == int(clock.now)
    assert [list(item) for item in body["data"]] == [["object", "embedding", "index"]] * 3
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert {item["object"] for item in body["data"]} == {"embedding"}
    # "hello" and "world" are a token each, "你好" two
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


@pytest.mark.parametrize(
    ("endpoint", "dimension"),
    [("embedding-v1", 384), ("bge_large_zh", 1024), ("bge_large_en", 1024), ("tao_8k", 1024),
     ("my_own_embedder", 384)],
)  # fmt: skip
async def test_dimensions_and_unit_length(
    client: httpx.AsyncClient, token: str, endpoint: str, dimension: int
) -> None:
    body = assert_ok(await embed(client, token, ["The Great Wall"], endpoint))
    vector = body["data"][0]["embedding"]
    assert len(vector) == dimension
    assert all(isinstance(v, float) for v in vector)
    assert math.isclose(math.hypot(*vector), 1.0, abs_tol=1e-8)


async def test_vectors_are_deterministic_per_text(client: httpx.AsyncClient, token: str) -> None:
    first = assert_ok(await embed(client, token, ["alpha", "beta", "alpha"]))["data"]
    again = assert_ok(await embed(client, token, ["beta"]))["data"]
    alpha, beta, alpha_again = (item["embedding"] for item in first)
    assert alpha == alpha_again
    assert beta == again[0]["embedding"]
    assert alpha != beta
    # unrelated texts are far from parallel
    assert abs(sum(a * b for a, b in zip(alpha, beta, strict=True))) < 0.5
    other_model = assert_ok(await embed(client, token, ["alpha"], "my_embedder"))["data"]
    assert other_model[0]["embedding"] != alpha


async def test_the_same_vectors_from_a_new_emulator(clock: FakeClock) -> None:
    from .emulator_fixtures import asgi_client

    vectors = []
    for seed in (1, 2):
        emulator = Emulator(EmulatorConfig(seed=seed), clock=clock)
        async with asgi_client(emulator) as http:
            body = assert_ok(await embed(http, emulator.issue_token(), ["stable"]))
            vectors.append(body["data"][0]["embedding"])
    assert vectors[0] == vectors[1]


@pytest.mark.parametrize(
    ("endpoint", "max_texts", "max_chars"),
    [("embedding-v1", 16, 1000), ("bge_large_zh", 16, 2000), ("tao_8k", 1, 28000)],
)
async def test_per_model_limits(
    client: httpx.AsyncClient, token: str, endpoint: str, max_texts: int, max_chars: int
) -> None:
    assert_ok(await embed(client, token, ["t"] * max_texts, endpoint))
    response = await embed(client, token, ["t"] * (max_texts + 1), endpoint)
    assert_error(response, 336003, f"the number of input texts must be at most {max_texts}")
    assert_ok(await embed(client, token, ["字" * 10 + "a" * (max_chars - 10)], endpoint))
    response = await embed(client, token, ["a" * (max_chars + 1)], endpoint)
    assert_error(response, 336003, f"the max length of input[0] is {max_chars}")


async def test_token_limit(client: httpx.AsyncClient, token: str) -> None:
    # 385 one-letter words: 769 characters, 385 tokens > 384
    response = await embed(client, token, ["ok", " ".join("a" * 385)])
    assert_error(response, 336003, "input[1] exceeds 384 tokens")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"input": []}, 336003),
        ({"input": ["fine", "  \n"]}, 336003),
        ({"input": [""]}, 336003),
        ({}, 336001),
        ({"input": "a string, not a list"}, 336001),
        ({"input": ["ok", 3]}, 336001),
        ({"input": ["ok"], "user_id": 7}, 336001),
        ([["ok"]], 336001),
        (b"{not json", 336002),
    ],
)
async def test_bad_bodies(client: httpx.AsyncClient, token: str, body: Any, code: int) -> None:
    assert_error(await call(client, token, body, path=EMBED), code)


async def test_user_id_and_unknown_fields_are_accepted(
    client: httpx.AsyncClient, token: str
) -> None:
    body = {"input": ["ok"], "user_id": "u1", "extra_parameters": {"request_source": "x"}}
    assert_ok(await call(client, token, body, path=EMBED))


async def test_authentication(client: httpx.AsyncClient, emu: Emulator, clock: FakeClock) -> None:
    body = {"input": ["signed"]}
    assert_ok(
        await call(client, None, body, path=EMBED, headers=signed_headers(clock.now, path=EMBED))
    )
    assert_error(await call(client, None, body, path=EMBED), 110)
    wrong = signed_headers(clock.now, path=EMBED, secret_key="wrong")
    assert_error(await call(client, None, body, path=EMBED, headers=wrong), 14)
    response = await client.get(EMBED, params={"access_token": emu.issue_token()})
    assert_error(response, 336101)


async def test_configured_embedding_endpoints(
    client: httpx.AsyncClient, emu: Emulator, token: str
) -> None:
    emu.configure(
        embedding_endpoints={"tiny": 8, "wide": {"dimension": 64, "max_texts": 2}},
        custom_embedding={"dimension": 16, "max_texts": 3},
    )
    assert len(assert_ok(await embed(client, token, ["x"], "tiny"))["data"][0]["embedding"]) == 8
    assert_ok(await embed(client, token, ["x", "y"], "wide"))
    assert_error(await embed(client, token, ["x", "y", "z"], "wide"), 336003)
    # the presets were replaced: embedding-v1 is now a custom deployment
    body = assert_ok(await embed(client, token, ["x", "y", "z"], "embedding-v1"))
    assert len(body["data"][0]["embedding"]) == 16
    assert_error(await embed(client, token, ["x"] * 4, "embedding-v1"), 336003)
    config = (await client.get("/_emulator/config")).json()
    assert config["embedding_endpoints"]["wide"] == {
        "dimension": 64, "max_texts": 2, "max_chars": 1000, "max_tokens": 384
    }  # fmt: skip
    answer = await client.post("/_emulator/config", json={"embedding_endpoints": {"odd": 7}})
    assert answer.status_code == 400
    assert "dimension must be an even integer" in answer.json()["error"]


async def test_endpoint_routing(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    emu.configure(endpoints={"embedding-v1"}, forbidden_endpoints={"embeddings/tao_8k"})
    assert_ok(await embed(client, token, ["x"]))
    assert_error(await embed(client, token, ["x"], "bge_large_en"), 336005)
    emu.configure(endpoints=None)
    assert_error(await embed(client, token, ["x"], "tao_8k"), 6)


async def test_limits_count_embedding_tokens(
    client: httpx.AsyncClient, emu: Emulator, token: str, clock: FakeClock
) -> None:
    emu.configure(tpm=10, rpm=3)
    response = assert_ok(await embed(client, token, ["one two three four five six"]))
    assert response["usage"]["prompt_tokens"] == 6
    answer = await embed(client, token, ["seven"])
    assert answer.headers["x-ratelimit-limit-tokens"] == "10"
    assert answer.headers["x-ratelimit-remaining-tokens"] == "3"  # 6 + 1 counted
    assert answer.headers["x-ratelimit-remaining-requests"] == "1"
    assert_error(await embed(client, token, ["a b c d"]), 336502)
    assert_ok(await embed(client, token, ["a b c"]))
    assert_error(await embed(client, token, ["x"]), 336501)
    clock.now += 61
    assert_ok(await embed(client, token, ["a b c d"]))


async def test_quotas_faults_and_fail_prompts(
    client: httpx.AsyncClient, emu: Emulator, token: str
) -> None:
    emu.configure(fail_prompts={"poison": 336100})
    assert_error(await embed(client, token, ["fine", "poison"]), 336100)
    emu.configure(fail_prompts={}, faults={"error_2": 1.0})
    assert_error(await embed(client, token, ["x"]), 2)
    # stream faults never fall on embeddings, which do not stream
    emu.configure(faults={"cut_stream": 1.0})
    assert_ok(await embed(client, token, ["x"]))
    emu.configure(faults={"http_429": 1.0}, retry_after=3)
    response = await embed(client, token, ["x"])
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    emu.configure(faults={}, total_quota=1)
    emu.reset_limits()
    assert_ok(await embed(client, token, ["x"]))
    assert_error(await embed(client, token, ["x"]), 19)


async def test_statistics(client: httpx.AsyncClient, emu: Emulator, token: str) -> None:
    emu.reset_stats()
    assert_ok(await embed(client, token, ["one two", "three"]))
    assert_error(await embed(client, token, []), 336003)
    stats = emu.stats()
    assert stats["endpoints"]["embeddings/embedding-v1"] == {"ok": 1, "error_336003": 1}
    assert stats["prompt_tokens"] == 3
    assert stats["completion_tokens"] == 0


def test_embedding_config_is_validated() -> None:
    config = EmulatorConfig(embedding_endpoints={"x": EmbeddingModel(dimension=4, max_texts=2)})
    assert config.embedding_endpoints == {"x": EmbeddingModel(dimension=4, max_texts=2)}
    assert EmulatorConfig().embedding_endpoints == PRESET_EMBEDDINGS
    assert PRESET_EMBEDDINGS["tao_8k"].max_texts == 1
    with pytest.raises(ValueError, match="dimension must be an even integer >= 2, got 7"):
        EmulatorConfig(embedding_endpoints={"x": 7})
    with pytest.raises(ValueError, match="max_texts must be an integer >= 1"):
        EmulatorConfig(custom_embedding={"max_texts": 0})
    with pytest.raises(TypeError, match="needs a dimension or a mapping"):
        EmulatorConfig(embedding_endpoints={"x": "big"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'size'"):
        EmulatorConfig(custom_embedding={"size": 8})
    emulator = Emulator()
    with pytest.raises(TypeError, match="needs a dimension or a mapping, got True"):
        emulator.configure(custom_embedding=True)
    assert emulator.config.custom_embedding == EmbeddingModel()
