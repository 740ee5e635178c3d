"""The documentation site's code is code, as the README's is: every Python block of the
home page, the getting-started page and the guide compiles, and each one runs against the
emulator as written, unless it needs what a test here cannot have (a Ray cluster, a Redis
host, a running gateway) and is listed below with the reason.

How a block runs depends on its shape:
- a whole program calling `run_emulator()`: run as is, in a fresh interpreter;
- a whole program with the placeholder keys `"api-key"`, `"secret-key"`: run with
  `QIANFAN_BASE_URL` pointing at an emulator that knows those keys;
- a pytest module (it defines `test_` functions): run by pytest in a directory of its own;
- lines from inside a coroutine (`await` outside any `async def`): indented into one, with
  the names such snippets use (`client`, `messages`, `conversations`, `prompts`, `texts`)
  bound to an emulator's client and sample inputs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PLACEHOLDER_KEYS = 'OAuthCredentials("api-key", "secret-key")'

#: Blocks that only compile, by their first line, each with the reason it cannot run here.
COMPILE_ONLY = {
    "client = wx.AsyncClient(token_store=wx.FileTokenStore(": (
        "one statement making a client; tests/test_tokens.py covers the file store"
    ),
    "from baiduwx_async.redis import RedisRateLimiter, RedisTokenStore": (
        "a placeholder Redis host; tests/test_redis.py covers the shared store and limiter"
    ),
    "import openai": "needs a running `baiduwx serve`; the gateway's tests drive it with openai",
    "import os": "LangChain against a running gateway; the gateway's tests run it",
    "import baiduwx_async as wx\nfrom baiduwx_async.gateway import create_app": (
        "a Starlette app or an app factory, served by uvicorn; the gateway's tests serve one"
    ),
    "import ray": "needs a Ray cluster and Redis; tests/test_ray.py runs the mappers locally",
}


def pages() -> list[Path]:
    return [DOCS / "index.md", DOCS / "getting-started.md", *sorted(DOCS.glob("guide/*.md"))]


def blocks() -> list[tuple[str, str]]:
    """(`page#n`, source) for every Python block of the pages."""
    found = []
    for page in pages():
        for n, source in enumerate(BLOCK.findall(page.read_text(encoding="utf-8"))):
            found.append((f"{page.relative_to(DOCS)}#{n}", source))
    return found


BLOCKS = blocks()
IDS = [name for name, _ in BLOCKS]


def kind(source: str) -> str:
    for first_line, _reason in COMPILE_ONLY.items():
        if source.startswith(first_line):
            return "compile-only"
    if "anyio.run(" in source and "run_emulator(" in source:
        return "emulator program"
    if "anyio.run(" in source and PLACEHOLDER_KEYS in source:
        return "placeholder program"
    if re.search(r"^(async )?def test_", source, re.MULTILINE):
        return "pytest module"
    if "await " in source and "async def" not in source:
        return "snippet"
    return "unknown"


def as_coroutine(source: str) -> str:
    return "async def _snippet():\n" + "".join(f"    {line}\n" for line in source.splitlines())


def test_the_guide_has_python_examples() -> None:
    assert len(BLOCKS) >= 20
    assert {kind(source) for _, source in BLOCKS} >= {
        "emulator program",
        "placeholder program",
        "pytest module",
        "snippet",
    }


@pytest.mark.parametrize(("name", "source"), BLOCKS, ids=IDS)
def test_every_python_block_compiles(name: str, source: str) -> None:
    if "await " in source and "async def" not in source:
        source = as_coroutine(source)
    compile(source, name, "exec")


@pytest.mark.parametrize(("name", "source"), BLOCKS, ids=IDS)
def test_every_python_block_runs_or_says_why_not(name: str, source: str) -> None:
    assert kind(source) != "unknown", (
        f"{name}: make it a whole program against run_emulator(), or add it to COMPILE_ONLY "
        "with the reason it cannot run"
    )


def test_the_compile_only_list_has_no_stale_entry() -> None:
    used = {line for line in COMPILE_ONLY if any(s.startswith(line) for _, s in BLOCKS)}
    assert used == set(COMPILE_ONLY)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("QIANFAN_", "OTEL_"))}


def run_python(args: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def of_kind(wanted: str) -> list[tuple[str, str]]:
    return [(name, source) for name, source in BLOCKS if kind(source) == wanted]


@pytest.mark.parametrize(
    ("name", "source"), of_kind("emulator program"), ids=[n for n, _ in of_kind("emulator program")]
)
def test_emulator_programs_run_as_written(name: str, source: str) -> None:
    assert run_python(["-c", source], clean_env()).strip()


@pytest.fixture
def emulator_url(tmp_path: Path) -> Iterator[str]:
    """An emulator in a process of its own that knows the placeholder keys."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "emulator.json"
    config.write_text(json.dumps({"credentials": {"api-key": "secret-key"}}))
    command = [sys.executable, "-m", "baiduwx_async.emulator", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/_emulator/stats", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize(
    ("name", "source"),
    of_kind("placeholder program"),
    ids=[n for n, _ in of_kind("placeholder program")],
)
def test_placeholder_programs_run_against_the_emulator(
    name: str, source: str, emulator_url: str
) -> None:
    env = clean_env() | {"QIANFAN_BASE_URL": emulator_url}
    assert run_python(["-c", source], env).strip()
    stats = httpx.get(f"{emulator_url}/_emulator/stats").json()
    assert stats["calls"] >= 1 and stats["token_requests"] == 1


@pytest.mark.parametrize(
    ("name", "source"), of_kind("pytest module"), ids=[n for n, _ in of_kind("pytest module")]
)
def test_pytest_examples_pass(name: str, source: str, tmp_path: Path) -> None:
    (tmp_path / "test_example.py").write_text(source, encoding="utf-8")
    out = run_python(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "test_example.py"],
        clean_env(),
        cwd=tmp_path,
    )
    tests = len(re.findall(r"^(?:async )?def test_", source, re.MULTILINE))
    assert f"{tests} passed" in out, out[-2000:]


#: Lines from inside a coroutine run here as written, indented into one, with the names
#: they use bound to an emulator's client and sample inputs.
SNIPPET_HARNESS = """
import anyio
import baiduwx_async as wx
from baiduwx_async.testing import run_emulator


async def snippet(client, messages, conversations, prompts, texts):
{body}
    return locals()


async def main():
    async with run_emulator() as emu, emu.client() as client:
        messages = [wx.user("Please introduce The Great Wall")]
        conversations = [[wx.user(f"question {{i}}")] for i in range(3)]
        texts = [f"text {{i}}" for i in range(20)]

        def prompts():
            for i in range(4):
                yield f"prompt {{i}}"

        seen = await snippet(client, messages, conversations, prompts, texts)
        calls = emu.stats()["calls"]
    print("SNIPPET", len(seen), calls)


anyio.run(main)
"""


@pytest.mark.parametrize(
    ("name", "source"), of_kind("snippet"), ids=[n for n, _ in of_kind("snippet")]
)
def test_snippets_run_inside_a_coroutine(name: str, source: str) -> None:
    body = "".join(f"    {line}\n" for line in source.splitlines())
    out = run_python(["-c", SNIPPET_HARNESS.format(body=body)], clean_env())
    last = out.strip().splitlines()[-1]
    assert last.startswith("SNIPPET "), out[-2000:]
    assert int(last.split()[-1]) >= 1, "the snippet made no call"
