"""The README's code is code: every Python block compiles, and the quick start runs
against the emulator exactly as written (its placeholder keys are the emulator's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .processes import emulator_process, run

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


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
