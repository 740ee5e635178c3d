"""Subprocesses the tests start: the emulator and the CLI.

Whatever they print is handed to the secret guard (`saw`), so a key or token a child
process prints fails the test that started it. Servers bind port 0 and report the port
they got: nothing picks a free port, closes it, and hopes it is still free.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import anyio

from baiduwx_async.emulator import Emulator, EmulatorConfig, serve

from .secret_guard import saw

REPO = Path(__file__).resolve().parent.parent


def run(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run`, its output captured as text and shown to the secret guard."""
    options.setdefault("timeout", 60)
    done = subprocess.run(command, capture_output=True, text=True, check=False, **options)
    saw(done.stdout, done.stderr)
    return done


def read_all(stream: IO[Any] | None) -> str:
    if stream is None or stream.closed:
        return ""
    text = stream.read()
    stream.close()
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def finish(process: subprocess.Popen[Any], timeout: float = 10, *, banner: bool = False) -> None:
    """Stop `process` (SIGTERM, then SIGKILL) and show the guard what it printed. With
    `banner`, its standard output is an emulator's banner, which shows the emulator's own
    test keys on purpose (`baiduwx emulator`): only its error output is checked."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    stdout = read_all(process.stdout)
    saw(read_all(process.stderr), None if banner else stdout)


@contextmanager
def emulator_process(
    directory: Path, config: dict[str, Any] | None = None, *, log_level: str = "warning"
) -> Iterator[str]:
    """`python -m baiduwx_async.emulator --port 0`; yields the base URL from its banner."""
    command = [sys.executable, "-m", "baiduwx_async.emulator", "--port", "0"]
    if config is not None:
        path = directory / "emulator.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        command += ["--config", str(path)]
    # stderr to a file: a pipe nobody reads would block a chatty server
    errors = (directory / "emulator.err").open("w+b")
    process = subprocess.Popen(
        [*command, "--log-level", log_level], cwd=REPO, stdout=subprocess.PIPE, stderr=errors
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline().decode()  # "... emulator on http://HOST:PORT"
        assert "http://" in banner, f"the emulator did not start: {banner!r}"
        base_url = banner.rsplit(" ", 1)[-1].strip()
        wait_for_port(base_url, process)
        yield base_url
    finally:
        finish(process, banner=True)
        errors.seek(0)
        saw(read_all(errors))


def wait_for_port(base_url: str, process: subprocess.Popen[Any], within: float = 20) -> None:
    host, port = base_url.rsplit("/", 1)[-1].rsplit(":", 1)
    deadline = time.monotonic() + within
    while True:
        assert process.poll() is None, "the server exited"
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that is bound (so no one else takes it) but not listening: every
    connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class RunningEmulator:
    def __init__(self, emulator: Emulator, base_url: str) -> None:
        self.emulator = emulator
        self.base_url = base_url

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for a CLI subprocess, pointed at this emulator."""
        api_key, secret_key = next(iter(self.emulator.config.credentials.items()))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "QIANFAN_AK": api_key,
            "QIANFAN_SK": secret_key,
            "QIANFAN_BASE_URL": self.base_url,
        }
        env.update(extra)
        return env

    def stats(self) -> dict[str, Any]:
        """The emulator's counters once no request is in flight: the server finishes its
        bookkeeping of a request a moment after the client has the whole answer."""
        deadline = time.monotonic() + 5
        stats = self.emulator.stats()
        while stats["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.005)
            stats = self.emulator.stats()
        return stats

    def calls(self, key: str) -> int:
        return sum(self.stats()["endpoints"].get(key, {}).values())


@contextmanager
def emulator_thread(emulator: Emulator | None = None, **config: Any) -> Iterator[RunningEmulator]:
    """`emulator` (or a new one with `config`) served on a loopback socket by a thread with
    its own asyncio loop: for a test under trio, or one that blocks (subprocesses)."""
    if emulator is None:
        emulator = Emulator(EmulatorConfig(seed=1, **config))
    ready, stop = threading.Event(), threading.Event()
    urls: list[str] = []
    errors: list[BaseException] = []

    async def run() -> None:
        async with serve(emulator) as base_url:
            urls.append(base_url)
            ready.set()
            await anyio.to_thread.run_sync(stop.wait)

    def target() -> None:
        try:
            anyio.run(run)
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(10), "the emulator did not start"
    assert not errors, errors
    try:
        yield RunningEmulator(emulator, urls[0])
    finally:
        stop.set()
        thread.join(10)
