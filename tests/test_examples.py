"""Every example runs against the emulator, so a change that breaks one fails the build."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest

from baiduwx_async.testing import run_emulator

from .processes import run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))  # the examples import each other as scripts do

from service import create_app  # noqa: E402


def run_example(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    return run([sys.executable, *args], cwd=EXAMPLES, env=env, timeout=timeout)


def test_trio_chat() -> None:
    done = run_example("trio_chat.py")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) >= 3 and lines[-1].endswith("tokens)")
    assert "Traceback" not in done.stderr


def test_batch_file_answers_and_resumes(tmp_path: Path) -> None:
    source, output = tmp_path / "prompts.jsonl", tmp_path / "answers.jsonl"
    source.write_text(
        "".join(json.dumps({"id": i, "prompt": f"city {i}"}) + "\n" for i in range(40))
    )
    first = run_example("batch_file.py", str(source), str(output))
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == list(range(40))
    assert all(line.get("result") for line in lines)
    with output.open("a") as out:
        out.write('{"id": 41, "resu')  # a line torn by a crash
    again = run_example("batch_file.py", str(source), str(output))
    assert again.returncode == 0, again.stderr
    assert "0 answered, 40 already there" in again.stdout


def test_the_users_own_tests_pass() -> None:
    done = run_example(
        "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "test_my_service.py", timeout=120
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "4 passed" in done.stdout


@asynccontextmanager
async def serve_app(app: object) -> AsyncIterator[str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # port 0: the system picks a free one, and it stays ours
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(server.serve, sockets=[sock]))
        while not server.started:  # uvicorn offers no event to wait on
            await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_service_streams_and_cancels_upstream_when_the_browser_leaves(
    anyio_backend: str,
) -> None:
    async with run_emulator(tokens_per_second=20, sentences_min=8, sentences_max=8) as emulator:
        async with (
            serve_app(create_app(emulator.client)) as service,
            httpx.AsyncClient(timeout=30) as browser,
        ):
            body = {"messages": [{"role": "user", "content": "Tell me about rivers"}]}
            # a whole answer, over real HTTP
            response = await browser.post(f"{service}/chat", json=body)
            assert response.text.rstrip().endswith("data: [DONE]")
            assert response.text.count("data: {") == 8
            # a browser that goes away after the first sentence
            async with browser.stream("POST", f"{service}/chat", json=body) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: {"):
                        break
            with anyio.fail_after(10):
                while emulator.stats()["streams_abandoned"] < 1:  # the emulator's own count
                    await anyio.sleep(0.05)
            stats = emulator.stats()
    assert stats["streams_abandoned"] == 1, "the upstream stream was cancelled, not read to its end"
    assert stats["streams_completed"] == 1
