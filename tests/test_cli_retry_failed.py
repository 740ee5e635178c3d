"""`baiduwx batch --retry-failed`: a batch killed in the middle, resumed, then its failed
ids sent again, each new outcome appended; the last line of an id is its result."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .test_cli import (
    API_KEY,
    REPO,
    SECRET_KEY,
    emulator_thread,
    read_jsonl,
    start_and_stop,
    write_inputs,
)

TOTAL = 400


def last_lines(lines: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """What a reader makes of the output: the last line of each id."""
    return {line["id"]: line for line in lines}


def test_killed_batch_resumes_then_retries_its_failures(tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    records = [
        {"id": i, "prompt": f"question {i}" + (" POISON" if i % 10 == 3 else "")}
        for i in range(TOTAL)
    ]
    write_inputs(source, records)
    poisoned = {i for i in range(TOTAL) if i % 10 == 3}
    argv = [sys.executable, "-m", "baiduwx_async.cli", "batch", "mpt30b", str(source)]
    argv += ["-o", str(output), "--no-progress"]

    with emulator_thread(latency=0.02, fail_prompts={"POISON": 336003}) as emu:
        env = emu.env()

        def run(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*argv, *extra], env=env, cwd=REPO, capture_output=True, text=True,
                timeout=120, check=False,
            )  # fmt: skip

        # killed in the middle: whole lines only, some of them failures
        process = start_and_stop([*argv, "--concurrency", "4"], env, output, 80, signal.SIGKILL)
        assert process.returncode == -signal.SIGKILL
        killed = read_jsonl(output)
        assert 80 <= len(killed) < TOTAL
        failed_first = {line["id"] for line in killed if not line["ok"]}
        assert failed_first and failed_first <= poisoned

        # the poison is gone; --retry-failed resumes the rest and sends the failures again
        emu.emulator.configure(fail_prompts={})
        resumed = run("--retry-failed", "--concurrency", "16")
        assert resumed.returncode == 0, resumed.stderr
        assert f"retrying {len(failed_first)} failed id(s)" in resumed.stderr
        assert f"skipped: {len(killed) - len(failed_first)}" in resumed.stderr
        lines = read_jsonl(output)
        assert lines[: len(killed)] == killed  # appended, nothing rewritten
        counts = Counter(line["id"] for line in lines)
        assert set(counts) == set(range(TOTAL))
        assert {i for i, n in counts.items() if n == 2} == failed_first
        assert max(counts.values()) == 2
        assert all(line["ok"] for line in last_lines(lines).values())

        # nothing left to do: exit 0, nothing sent, nothing appended
        calls = emu.stats()["calls"]
        again = run("--retry-failed")
        assert again.returncode == 0, again.stderr
        assert f"skipped: {TOTAL}" in again.stderr and "retrying" not in again.stderr
        assert read_jsonl(output) == lines
        assert emu.stats()["calls"] == calls


def test_without_the_flag_a_failed_id_stays_failed(tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(source, [{"id": i, "prompt": f"q{i}" + (" POISON" * (i == 2))} for i in range(6)])
    argv = [sys.executable, "-m", "baiduwx_async.cli", "batch", "mpt30b", str(source)]
    argv += ["-o", str(output), "--no-progress"]
    with emulator_thread(fail_prompts={"POISON": 336003}) as emu:
        env = {**emu.env(), "QIANFAN_AK": API_KEY, "QIANFAN_SK": SECRET_KEY}
        first = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
        assert first.returncode == 1  # an item failed
        emu.emulator.configure(fail_prompts={})
        rerun = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
        assert rerun.returncode == 0 and "skipped: 6" in rerun.stderr
    lines = read_jsonl(output)
    assert len(lines) == 6 and last_lines(lines)[2]["ok"] is False
    assert [line["id"] for line in lines].count(2) == 1
