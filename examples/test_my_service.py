"""How a user tests `service.py` with the pytest plugin that ships with baiduwx_async:
the `wenxin_emulator` fixture serves a local Wenxin Workshop, and its fault switches show
what the service does when the real one misbehaves.

    pytest examples/test_my_service.py
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from service import create_app

from baiduwx_async.testing import RunningEmulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the emulator's server (uvicorn) runs on asyncio


async def post_chat(emulator: RunningEmulator, messages: Any) -> httpx.Response:
    """POST /chat to the service, wired to the emulator, and read the whole answer."""
    app = create_app(emulator.client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            return await http.post("/chat", json={"messages": messages})


def events(response: httpx.Response) -> list[Any]:
    return [
        json.loads(line[len("data: ") :]) if line != "data: [DONE]" else "[DONE]"
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]


async def test_the_answer_is_streamed_sentence_by_sentence(
    wenxin_emulator: RunningEmulator,
) -> None:
    response = await post_chat(wenxin_emulator, [{"role": "user", "content": "Hello"}])
    assert response.headers["content-type"].startswith("text/event-stream")
    sent = events(response)
    assert sent[-1] == "[DONE]"
    assert len(sent) > 2 and all("text" in e for e in sent[:-1])


async def test_bad_input_is_a_400(wenxin_emulator: RunningEmulator) -> None:
    response = await post_chat(wenxin_emulator, [{"role": "assistant", "content": "x"}])
    assert response.status_code == 400
    assert "messages[0].role" in response.json()["error"]
    assert wenxin_emulator.stats()["calls"] == 0, "nothing reached the model"


# Instant retries: the client retries as it would in production, without the backoff waits.
@pytest.mark.wenxin_instant_retries
@pytest.mark.wenxin_emulator(faults={"http_429": 0.5}, seed=3, retry_after=0)
async def test_rate_limit_answers_are_retried(wenxin_emulator: RunningEmulator) -> None:
    for _ in range(3):
        response = await post_chat(wenxin_emulator, [{"role": "user", "content": "Hi"}])
        assert events(response)[-1] == "[DONE]"
    assert wenxin_emulator.stats()["outcomes"].get("http_429", 0) > 0


@pytest.mark.wenxin_emulator(faults={"midstream_error": 1.0})
async def test_a_stream_broken_after_it_started_is_reported(
    wenxin_emulator: RunningEmulator,
) -> None:
    response = await post_chat(wenxin_emulator, [{"role": "user", "content": "Hi"}])
    assert "event: error" in response.text
    assert "336100" in response.text
