"""The README's code is code, and so is the guide's it points to (`docs/`): every Python
block compiles, and the ones below run against the emulator as written: the quick starts
whole (their placeholder keys are the emulator's), the snippets inside a coroutine with the
names they use bound, the Redis one with a local redis-server for its placeholder host."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .processes import emulator_process, run
from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_blocks() -> list[str]:
    """The README's blocks, then the guide's (where the README's snippets moved)."""
    pages = [README, ROOT / "docs" / "getting-started.md", *sorted(ROOT.glob("docs/guide/*.md"))]
    return [block for page in pages for block in BLOCK.findall(page.read_text(encoding="utf-8"))]


def test_the_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 5


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_python_block_compiles(index: int) -> None:
    source = python_blocks()[index]
    if "await " in source and "async def" not in source:  # a snippet from inside a coroutine
        source = "async def _snippet():\n" + "".join(
            f"    {line}\n" for line in source.splitlines()
        )
    compile(source, f"README.md python block {index}", "exec")


@pytest.fixture
def emulator_url(tmp_path: Path) -> Iterator[str]:
    with emulator_process(tmp_path, {"credentials": {"api-key": "secret-key"}}) as url:
        yield url


def run_block(source: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", source], env=env)


def test_the_quick_start_runs_as_written(emulator_url: str) -> None:
    quick_start = next(
        b for b in python_blocks() if 'OAuthCredentials("api-key", "secret-key")' in b
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env["QIANFAN_BASE_URL"] = emulator_url
    done = run_block(quick_start, env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) >= 5
    assert lines[-2].startswith("0 ") and lines[-1].startswith("1 "), "the batch printed in order"
    stats = httpx.get(f"{emulator_url}/_emulator/stats").json()
    assert stats["calls"] == 5 and stats["token_requests"] == 1


def test_the_emulator_quick_start_runs() -> None:
    block = next(b for b in python_blocks() if "run_emulator()" in b)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    done = run_block(block, env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


#: The rest of the README's snippets are lines from inside a coroutine: each runs here as
#: written, indented into one, with the names it uses bound to an emulator's client.
SNIPPET_HARNESS = """
import anyio
import baiduwx_async as wx
from baiduwx_async.testing import run_emulator


async def snippet(client, messages, conversations, prompts):
{body}
    return locals()


async def main():
    async with run_emulator() as emu:
        async with emu.client() as client:
            messages = [wx.user("Please introduce The Great Wall")]
            conversations = [[wx.user(f"question {{i}}")] for i in range(3)]

            def prompts():
                for i in range(4):
                    yield f"prompt {{i}}"

            seen = await snippet(client, messages, conversations, prompts)
        stats = emu.stats()
    print("SNIPPET", sorted(k for k in seen if not k.startswith("_")), stats["calls"])


anyio.run(main)
"""


def run_snippet(first_line: str) -> tuple[list[str], int, str]:
    block = next(b for b in python_blocks() if b.startswith(first_line))
    body = "".join(f"    {line}\n" for line in block.splitlines())
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    done = run_block(SNIPPET_HARNESS.format(body=body), env)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("SNIPPET "), done.stdout[-2000:]
    names, calls = last[len("SNIPPET ") :].rsplit(" ", 1)
    return json.loads(names.replace("'", '"')), int(calls), done.stdout


def test_the_streaming_snippet_runs() -> None:
    names, calls, output = run_snippet("async with client.chat_stream(")
    assert {"stream", "reply", "chunk"} <= set(names)
    assert calls == 2  # one stream iterated, one collected
    assert "Usage(" in output


def test_the_batch_snippet_runs() -> None:
    names, calls, output = run_snippet("results = await client.batch_chat(")
    assert {"results", "r"} <= set(names)
    assert calls == 3 + 4  # three conversations, four prompts
    assert output.splitlines()[0].startswith("0 ")  # input order


def test_the_token_store_snippet_runs(tmp_path: Path, emulator_url: str) -> None:
    block = next(b for b in python_blocks() if "FileTokenStore(" in b)
    source = (
        "import anyio\nimport baiduwx_async as wx\n"
        f"{block}"
        "async def main():\n"
        "    async with client:\n"
        "        await client.complete('pythia12b', 'hello')\n"
        "anyio.run(main)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env.update({"HOME": str(tmp_path), "QIANFAN_BASE_URL": emulator_url})
    env.update({"QIANFAN_AK": "api-key", "QIANFAN_SK": "secret-key"})
    done = run_block(source, env)
    assert done.returncode == 0, done.stderr[-2000:]
    stored = list((tmp_path / ".cache" / "baiduwx" / "tokens").iterdir())
    assert len(stored) == 1, "the token was kept where the README says"


def test_the_pytest_snippet_passes_as_a_users_test(tmp_path: Path) -> None:
    block = next(b for b in python_blocks() if "@pytest.mark.wenxin_emulator" in b)
    (tmp_path / "test_user.py").write_text(block, encoding="utf-8")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"]
    command += ["-o", "asyncio_default_fixture_loop_scope=function"]
    done = run(command, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 passed" in done.stdout


def test_the_redis_snippet_runs(tmp_path: Path, emulator_url: str) -> None:
    block = next(
        b
        for b in python_blocks()
        if b.startswith("from baiduwx_async.redis import RedisRateLimiter, RedisTokenStore")
    )
    redis = RedisServer().start()
    try:
        # the README's host is a placeholder: the same lines, against a local redis-server
        lines = block.replace("redis://cache.internal:6379/0", redis.url)
        source = (
            "import anyio\nimport baiduwx_async as wx\n"
            f"{lines}"
            "async def main():\n"
            "    async with client:\n"
            "        await client.complete('pythia12b', 'hello')\n"
            "anyio.run(main)\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
        env.update({"QIANFAN_BASE_URL": emulator_url})
        env.update({"QIANFAN_AK": "api-key", "QIANFAN_SK": "secret-key"})
        done = run_block(source, env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert redis.command("DBSIZE") != ":0", "the token and the limiter state are in Redis"
    finally:
        redis.stop()
