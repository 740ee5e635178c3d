"""The `baiduwx` command against a real emulator on a loopback socket.

The emulator runs in a thread of the test process (its own event loop); the CLI runs
in-process through `main()` where that suffices, and as a subprocess where the process
itself matters (SIGKILL, tracebacks, the demo).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import baiduwx_async as wx
from baiduwx_async.cli import main

from .processes import (
    REPO,
    RunningEmulator,
    emulator_process,
    emulator_thread,
    finish,
    read_all,
    run,
)
from .secret_guard import saw

API_KEY, SECRET_KEY = "test-api-key", "test-secret-key"


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """An emulator, and this process's environment pointed at it (for in-process `main`)."""
    with emulator_thread() as running:
        for name in ("QIANFAN_ACCESS_KEY", "QIANFAN_SECRET_KEY", "QIANFAN_ACCESS_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("QIANFAN_AK", API_KEY)
        monkeypatch.setenv("QIANFAN_SK", SECRET_KEY)
        monkeypatch.setenv("QIANFAN_BASE_URL", running.base_url)
        yield running


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return run(
        [sys.executable, "-m", "baiduwx_async.cli", *args], env=env, cwd=REPO, timeout=timeout
    )


def client_call(base_url: str, method: str, *args: Any) -> Any:
    """A non-stream call with the library itself, for comparison."""

    async def call() -> Any:
        credentials = wx.OAuthCredentials(API_KEY, SECRET_KEY)
        async with wx.AsyncClient(credentials=credentials, base_url=base_url) as client:
            return await getattr(client, method)(*args)

    return anyio.run(call)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    assert text.endswith("\n") or not text
    return [json.loads(line) for line in text.splitlines()]


def write_inputs(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


# --- the command itself


def test_import_is_cheap_and_help_lists_the_commands() -> None:
    code = (
        "import sys, baiduwx_async\n"
        "ours = ('baiduwx_async.cli', 'baiduwx_async._cli_')\n"
        "assert not [m for m in sys.modules if m.startswith(ours)], 'the CLI was imported'\n"
        "from baiduwx_async.cli import main\n"
        "heavy = ('uvicorn', 'starlette', 'baiduwx_async.emulator', 'baiduwx_async._cli_batch')\n"
        "assert not [m for m in sys.modules if m.startswith(heavy)], 'imported too early'\n"
        "sys.exit(main(['--help']))\n"
    )
    # Cheap is shown by what is imported, not by a time a busy machine could stretch.
    done = run([sys.executable, "-c", code], cwd=REPO)
    assert done.returncode == 0, done.stderr
    for command in ("chat", "complete", "batch", "embed", "emulator", "demo"):
        assert command in done.stdout


def test_chat_with_a_prompt_prints_the_answer_of_a_non_stream_chat(
    emu: RunningEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    question = [{"role": "user", "content": "Please introduce The Great Wall"}]
    expected = client_call(emu.base_url, "chat", "mpt30b", question).result
    assert main(["chat", "mpt30b", "Please introduce The Great Wall", "--temperature", "0.5"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert emu.stats()["streams_completed"] == 1


def test_complete_streams_the_completion(
    emu: RunningEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = client_call(emu.base_url, "complete", "pythia12b", "Introduce Beijing").result
    assert main(["complete", "pythia12b", "Introduce Beijing", "--top-p", "0.8"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    stats = emu.stats()
    assert stats["streams_started"] == stats["streams_completed"] == 1
    assert emu.calls("completions/pythia12b") == 2


def test_interactive_chat_sends_the_history(
    emu: RunningEmulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is a river?\nAnd a mountain?\n\n"))
    assert main(["chat", "mpt30b"]) == 0
    out = capsys.readouterr().out
    prompts, first, second, last = out.split("> ")
    assert prompts == "" and last == ""
    # the second question was sent with the first exchange before it
    history = [
        {"role": "user", "content": "What is a river?"},
        {"role": "assistant", "content": first.rstrip("\n")},
        {"role": "user", "content": "And a mountain?"},
    ]
    expected = client_call(emu.base_url, "chat", "mpt30b", history).result
    assert second == expected + "\n"
    alone = client_call(emu.base_url, "chat", "mpt30b", history[2:]).result
    assert alone != expected
    stats = emu.stats()
    assert emu.calls("chat/mpt30b") == 4  # two turns, then the two comparisons
    assert stats["streams_completed"] == 2
    assert stats["token_requests"] == 3  # one for the whole conversation, one per comparison


def test_interactive_chat_ends_on_exit_and_on_ctrl_c(
    emu: RunningEmulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/exit\nnever sent\n"))
    assert main(["chat", "mpt30b"]) == 0
    assert emu.calls("chat/mpt30b") == 1

    class Interrupted(io.StringIO):
        def readline(self, size: int | None = -1) -> str:
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", Interrupted())
    assert main(["chat", "mpt30b"]) == 130
    assert "Traceback" not in capsys.readouterr().err


# --- batch


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_batch_writes_one_ok_line_per_id(
    emu: RunningEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    records: list[dict[str, Any]] = [{"id": i, "prompt": f"question {i}"} for i in range(40)]
    records.append({"id": "conversation", "messages": [{"role": "user", "content": "hi"}]})
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(source, records)
    argv = ["batch", "mpt30b", str(source), "-o", str(output), "--concurrency", "8"]
    argv += ["--http-backend", backend]
    assert main([*argv, "--qps", "1000"]) == 0
    lines = read_jsonl(output)
    assert sorted(map(str, (line["id"] for line in lines))) == sorted(str(r["id"]) for r in records)
    assert all(line["ok"] and line["result"] and line["usage"]["total_tokens"] for line in lines)
    by_id = {line["id"]: line for line in lines}
    question = [{"role": "user", "content": "question 7"}]
    assert by_id[7]["result"] == client_call(emu.base_url, "chat", "mpt30b", question).result
    assert all(line["request_id"] for line in lines)
    summary = capsys.readouterr().err
    assert "done: 41 (41 ok, 0 failed), skipped: 0" in summary

    # a second run finds everything done, and writes nothing
    calls = emu.calls("chat/mpt30b")
    assert main(argv) == 0
    assert "skipped: 41" in capsys.readouterr().err
    assert emu.calls("chat/mpt30b") == calls
    assert len(read_jsonl(output)) == 41


def test_batch_complete_mode(emu: RunningEmulator, tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(source, [{"id": f"p{i}", "prompt": f"complete {i}"} for i in range(10)])
    assert main(["batch", "pythia12b", str(source), "-o", str(output), "--complete"]) == 0
    lines = read_jsonl(output)
    assert {line["id"] for line in lines} == {f"p{i}" for i in range(10)}
    assert emu.calls("completions/pythia12b") == 10


def test_batch_writes_failures_and_exits_1(
    emu: RunningEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.emulator.configure(fail_prompts={"always fails": 336003})
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    records: list[dict[str, Any]] = [{"id": i, "prompt": f"fine {i}"} for i in range(5)]
    records += [
        {"id": "bad", "prompt": "always fails"},
        {"id": 2, "prompt": "a duplicate id: not run"},
        {"id": "empty", "messages": []},
    ]
    write_inputs(source, records)
    with source.open("a") as file:
        file.write("not json at all\n")
    assert main(["batch", "mpt30b", str(source), "-o", str(output)]) == 1
    by_id = {line["id"]: line for line in read_jsonl(output)}
    assert sorted(map(str, by_id)) == ["0", "1", "2", "3", "4", "bad", "empty"]
    assert by_id["bad"] == {
        "id": "bad",
        "ok": False,
        "error": {
            "type": "InvalidRequestError",
            "code": 336003,
            "message": "Invalid parameter",
            "request_id": by_id["bad"]["error"]["request_id"],
        },
    }
    assert by_id["empty"]["error"]["type"] == "ValidationError"
    assert by_id[2]["ok"] and by_id[2]["result"]
    err = capsys.readouterr().err
    assert "duplicate id 2" in err and "line 9: not a JSON line" in err
    assert "done: 7 (5 ok, 2 failed)" in err


def test_batch_resumes_after_a_torn_last_line(emu: RunningEmulator, tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(source, [{"id": i, "prompt": f"question {i}"} for i in range(20)])
    earlier = {"id": 3, "ok": True, "result": "from before", "usage": {}, "request_id": None}
    output.write_text(json.dumps(earlier) + '\n{"id": 4, "ok": true, "resu', encoding="utf-8")
    assert main(["batch", "mpt30b", str(source), "-o", str(output)]) == 0
    lines = read_jsonl(output)
    assert sorted(line["id"] for line in lines) == list(range(20))
    assert lines[0] == earlier  # kept, not sent again
    assert emu.calls("chat/mpt30b") == 19

    # a complete last line without its newline is kept, and the next line starts afresh
    write_inputs(source, [{"id": i, "prompt": f"question {i}"} for i in range(21)])
    output.write_bytes(output.read_bytes().rstrip(b"\n"))
    assert main(["batch", "mpt30b", str(source), "-o", str(output)]) == 0
    assert sorted(line["id"] for line in read_jsonl(output)) == list(range(21))


def start_and_stop(
    argv: list[str], env: dict[str, str], output: Path, lines: int, sig: signal.Signals
) -> subprocess.Popen[str]:
    """Start a batch, and send it `sig` once `output` has at least `lines` lines. Its error
    output is shown to the secret guard, and left readable in `process.stderr`."""
    process = subprocess.Popen(
        argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            if output.exists() and output.read_bytes().count(b"\n") >= lines:
                break
            time.sleep(0.01)
        process.send_signal(sig)
        process.wait(20)
    finally:
        process.kill()
        process.wait(20)
        err = read_all(process.stderr)
        saw(err)
        process.stderr = io.StringIO(err)
    return process


def test_batch_interrupted_or_killed_resumes_without_duplicates(tmp_path: Path) -> None:
    total = 3000
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(source, [{"id": i, "prompt": f"question number {i}"} for i in range(total)])
    argv = [sys.executable, "-m", "baiduwx_async.cli", "batch", "mpt30b", str(source)]
    argv += ["-o", str(output), "--no-progress"]
    # at most 8 / 0.02 s = 400 items/s: the whole batch would take 7.5 s or more
    slow = [*argv, "--concurrency", "8"]
    with emulator_process(tmp_path, {"latency": 0.02}) as base_url:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "QIANFAN_AK": API_KEY,
            "QIANFAN_SK": SECRET_KEY,
            "QIANFAN_BASE_URL": base_url,
        }
        # Ctrl-C: a clean stop, with its summary
        process = start_and_stop(slow, env, output, 200, signal.SIGINT)
        assert process.stderr is not None
        err = process.stderr.read()
        assert process.returncode == 130, err
        assert "batch interrupted - done: " in err and "Traceback" not in err
        interrupted = read_jsonl(output)
        assert 200 <= len(interrupted) < total

        # SIGKILL: no chance to clean up
        process = start_and_stop(slow, env, output, len(interrupted) + 300, signal.SIGKILL)
        assert process.returncode == -signal.SIGKILL
        killed = read_jsonl(output)  # whole lines only
        assert len(interrupted) + 300 <= len(killed) < total
        assert killed[: len(interrupted)] == interrupted

        rerun = run([*argv, "--concurrency", "16"], env=env, cwd=REPO)
        assert rerun.returncode == 0, rerun.stderr
        assert f"skipped: {len(killed)}" in rerun.stderr
    lines = read_jsonl(output)
    ids = [line["id"] for line in lines]
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == set(range(total))
    assert all(line["ok"] for line in lines)
    assert lines[: len(killed)] == killed


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_sigkill_at_random_points_loses_no_answered_item(tmp_path: Path, backend: str) -> None:
    """Every item the emulator answered well before the SIGKILL (by its own call log) is
    in the output: the CLI writes each result as it finishes, not when it exits. And no
    line is in the output that the emulator did not answer."""
    seed = random.randrange(1 << 30)
    print(f"kill points drawn with random.Random({seed})")
    dice = random.Random(seed)
    total, margin = 3000, 2.0  # margin: seconds a finished item may take to reach the file
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(source, [{"id": i, "prompt": f"question number {i}"} for i in range(total)])
    argv = [sys.executable, "-m", "baiduwx_async.cli", "batch", "mpt30b", str(source)]
    argv += ["-o", str(output), "--no-progress", "--concurrency", "8"]
    argv += ["--http-backend", backend]
    answered: list[tuple[str | None, str]] = []
    with emulator_thread(latency=0.02) as emu:  # at most 400 items/s
        emu.emulator.call_log = answered
        for _ in range(2):
            before = len(read_jsonl(output))
            wanted = len(answered) + dice.randint(20, 800)
            process = subprocess.Popen(
                argv, env=emu.env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            try:
                deadline = time.monotonic() + 60
                while len(answered) < wanted and process.poll() is None:
                    assert time.monotonic() < deadline, "the batch made no progress"
                    time.sleep(0.005)
                must_be_written = {q for q, outcome in answered[:wanted] if outcome == "ok"}
                time.sleep(margin)  # more items finish, and more are in flight at the kill
                assert process.poll() is None, "the batch ended before the kill"
                process.send_signal(signal.SIGKILL)
                process.wait(20)
            finally:
                finish(process)
            emu.stats()  # the emulator has sent its last answers
            lines = read_jsonl(output)
            written = {f"question number {line['id']}" for line in lines}
            assert len(lines) == len(written), "an item was written twice"
            missing = must_be_written - written
            assert not missing, f"{len(missing)} answered items are not in the output"
            assert written <= {q for q, outcome in answered if outcome == "ok"}
            assert len(lines) > before
    assert len(lines) < total


# --- errors and exit codes


def test_wrong_credentials_exit_3_with_one_line_and_no_secret(tmp_path: Path) -> None:
    secret = "sk-do-not-print-me-4242"
    with emulator_thread() as emu:
        env = emu.env(QIANFAN_SK=secret)
        done = run_cli("chat", "mpt30b", "hello", env=env)
        assert done.returncode == 3
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
        assert secret not in done.stderr + done.stdout and "Traceback" not in done.stderr
        assert "QIANFAN_AK and QIANFAN_SK" in done.stderr  # the hint: which credentials

        source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_inputs(source, [{"id": i, "prompt": f"q{i}"} for i in range(50)])
        done = run_cli("batch", "mpt30b", str(source), "-o", str(output), env=env)
        assert done.returncode == 3
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
        assert secret not in done.stderr and "Traceback" not in done.stderr
        assert output.read_text() == ""  # the items stay to be done by the next run
        assert emu.stats()["calls"] == 0

    env = {"PATH": os.environ.get("PATH", "")}
    done = run_cli("complete", "pythia12b", "hello", env=env)  # no credentials at all
    assert done.returncode == 3
    assert done.stderr.startswith("error: no credentials") and done.stderr.count("\n") == 1


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["chat"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["batch", "mpt30b", "in.jsonl"]) == 2  # -o is required
    assert main(["batch", "mpt30b", "x", "-o", "y", "--concurrency", "0"]) == 2
    capsys.readouterr()


def test_validation_errors_exit_2_with_one_line(
    emu: RunningEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["chat", "mpt30b", "hello", "--temperature", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: temperature") and err.count("\n") == 1
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    assert main(["chat", "mpt30b", "--top-k", "0"]) == 2  # before the first question
    assert capsys.readouterr() == ("", "error: top_k: must be a positive integer\n")
    assert main(["complete", "no/such/endpoint", "hello"]) == 2
    assert capsys.readouterr().err.startswith("error: endpoint: must be one path segment")
    missing = tmp_path / "missing.jsonl"
    assert main(["batch", "mpt30b", str(missing), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert capsys.readouterr().err == f"error: {missing}: no such file\n"
    assert emu.stats()["calls"] == 0


def test_server_errors_exit_1(emu: RunningEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    emu.emulator.configure(fail_prompts={"refused": 336003})
    assert main(["chat", "mpt30b", "refused"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: [336003] Invalid parameter (request_id=") and err.count("\n") == 1


def test_demo_runs_without_credentials_or_network() -> None:
    started = time.monotonic()
    done = run_cli("demo", env={"PATH": os.environ.get("PATH", "")}, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "items/s" in done.stdout and "max 32 in flight" in done.stdout
    assert "Please introduce The Great Wall" in done.stdout
    assert elapsed < 30
