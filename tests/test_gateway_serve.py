"""`baiduwx serve` as a user runs it: a process in front of an emulator process, its banner,
its log lines, its refusals; two processes sharing one token through Redis; and the README's
gateway examples (the `openai` package and LangChain) run as written against it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import baiduwx_async as wx
from baiduwx_async.cli import EXIT_USAGE, main

from .redis_server import EmulatorProcess, RedisServer
from .secret_guard import leaks, saw

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide" / "gateway.md"
QUESTION = [{"role": "user", "content": "Please introduce The Great Wall"}]
MODELS = ["ernie=chat:completions", "pythia=completions:pythia12b", "bge=embeddings:bge_large_zh"]
ENV_KEY = "sk-gateway-env-key"


class ServeProcess:
    """`baiduwx serve` on a free port; `stop()` interrupts it and keeps what it printed."""

    def __init__(self, emulator: EmulatorProcess, *args: str, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "baiduwx_async.cli", "serve", "--port", "0"]
        for model in MODELS:
            command += ["--model", model]
        self.process = subprocess.Popen(
            [*command, *args],
            env={**emulator.env(), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.banner: list[str] = []
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.process.stdout:
            self.banner.append(line.rstrip("\n"))
            if "OPENAI_BASE_URL=" in line:
                break
            assert time.monotonic() < deadline
        found = re.search(r"OPENAI_BASE_URL=(\S+)", "\n".join(self.banner))
        assert found, self.stop()
        self.base_url = found.group(1)
        self.stdout = self.stderr = ""

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=20)
        self.stdout, self.stderr = "\n".join(self.banner) + out, err
        saw(self.stdout, self.stderr)
        return self.stderr


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess({"seed": 1}, tmp_path)
    try:
        yield emu
    finally:
        emu.stop()


def serve(emulator: EmulatorProcess, *args: str, **env: str) -> ServeProcess:
    return ServeProcess(emulator, *args, env={"BAIDUWX_GATEWAY_API_KEYS": ENV_KEY, **env})


def test_serve_answers_logs_one_line_per_request_and_shows_no_secret(
    emulator: EmulatorProcess,
) -> None:
    gateway = serve(emulator, "--api-key", "sk-gateway-cli-key")
    try:
        for key in (ENV_KEY, "sk-gateway-cli-key"):
            with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
                reply = client.chat.completions.create(model="ernie", messages=QUESTION)  # type: ignore[arg-type]
                assert reply.choices[0].message.content
        with (
            openai.OpenAI(base_url=gateway.base_url, api_key="sk-wrong", max_retries=0) as bad,
            pytest.raises(openai.AuthenticationError),
        ):
            bad.models.list()
    finally:
        stderr = gateway.stop()
    banner = "\n".join(gateway.banner)
    assert gateway.base_url.startswith("http://127.0.0.1:") and gateway.base_url.endswith("/v1")
    assert "model ernie -> chat:completions" in banner
    assert "2 API key(s)" in banner
    assert "process list" in stderr  # the warning about --api-key
    requests = [line for line in stderr.splitlines() if " model=" in line]
    assert len(requests) == 3, stderr
    assert "POST /v1/chat/completions model=ernie status=200 " in requests[0]
    assert "GET /v1/models model=- status=401 " in requests[2]
    everything = gateway.stdout + stderr
    for secret in (ENV_KEY, "sk-gateway-cli-key", "sk-wrong", "test-secret-key", "Great Wall"):
        assert secret not in everything
    assert not leaks(everything)


def test_serve_refuses_a_public_address_without_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BAIDUWX_GATEWAY_API_KEYS", raising=False)
    code = main(["serve", "--model", "ernie=chat:completions", "--host", "0.0.0.0"])
    assert code == EXIT_USAGE
    assert "refusing to listen on 0.0.0.0 without API keys" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("ernie", "expected NAME=KIND:ENDPOINT"),
        ("ernie=chatty:completions", "KIND one of"),
        ("ernie=chat:a/b", "one path segment"),
    ],
)
def test_serve_checks_its_models(
    capsys: pytest.CaptureFixture[str], model: str, message: str
) -> None:
    assert main(["serve", "--model", model]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_two_processes_share_one_token_and_quota_through_redis(
    emulator: EmulatorProcess,
) -> None:
    redis = RedisServer().start()
    gateways: list[ServeProcess] = []
    try:
        for _ in range(2):
            gateways.append(serve(emulator, "--redis", redis.url, "--qps", "40", "--rpm", "6000"))
        for gateway in gateways:
            with openai.OpenAI(base_url=gateway.base_url, api_key=ENV_KEY, max_retries=0) as client:
                for i in range(5):
                    messages = [{"role": "user", "content": f"question {i}"}]
                    client.chat.completions.create(model="ernie", messages=messages)  # type: ignore[arg-type]
    finally:
        for gateway in gateways:
            gateway.stop()
        redis.stop()
    stats = emulator.stats()
    assert stats["endpoints"]["chat/completions"]["ok"] == 10
    assert stats["token_requests"] == 1


# --- the README's examples, run as written


def readme_gateway_blocks() -> list[str]:
    """The Python blocks of the gateway's guide page."""
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)


@pytest.mark.parametrize("marker", ["import openai", "from langchain_openai"])
def test_the_readme_gateway_examples_run(emulator: EmulatorProcess, marker: str) -> None:
    [block] = [b for b in readme_gateway_blocks() if marker in b]
    gateway = serve(emulator)
    try:
        env: dict[str, Any] = {
            **emulator.env(),
            "OPENAI_BASE_URL": gateway.base_url,
            "OPENAI_API_KEY": ENV_KEY,
        }
        env.pop("QIANFAN_SK")
        done = subprocess.run(
            [sys.executable, "-c", block], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        gateway.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) >= 3
    assert lines[-1] == "1024"  # the embedding's size, printed last
    if marker == "import openai":
        assert any(line.startswith("get_weather returned") for line in lines)
        assert any(line.startswith("tokens: ") for line in lines)


def test_the_readme_gateway_blocks_are_found() -> None:
    blocks = readme_gateway_blocks()
    assert len(blocks) == 4
    for block in blocks:
        compile(block, "README gateway block", "exec")


def test_serve_tpm_is_the_clients_token_budget(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QIANFAN_ACCESS_TOKEN", "24.unused-token")
    monkeypatch.delenv("BAIDUWX_GATEWAY_API_KEYS", raising=False)
    monkeypatch.delenv("BAIDUWX_REDIS_URL", raising=False)
    made: list[dict[str, object]] = []

    def client(**options: object) -> None:
        made.append(options)
        raise RuntimeError("stop before listening")

    monkeypatch.setattr(wx, "AsyncClient", client)
    args = ["serve", "--model", "ernie=chat:completions", "--port", "0"]
    assert main([*args, "--tpm", "1200", "--rpm", "60"]) == 1
    assert made[-1]["tpm"] == 1200.0 and made[-1]["rpm"] == 60.0
    assert main(args) == 1
    assert made[-1]["tpm"] is None
    assert main([*args, "--tpm", "0"]) == EXIT_USAGE
    assert "--tpm: must be a number > 0" in capsys.readouterr().err
