"""Real servers in subprocesses for the Redis tests: `redis-server` and the emulator.

Both listen on a loopback port and are stopped by the test that started them. The
emulator binds port 0 and prints the port it got; redis-server cannot (its port 0 turns TCP
off), so it is given a probed port and, should another process take that port first,
started again on a new one. A missing `redis-server` fails the test (never skips it):
`.ci/run` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .processes import finish, read_all
from .secret_guard import saw

REDIS_MISSING = (
    "redis-server is not installed, and the Redis tests need a real one (they never skip): "
    ".ci/run installs it (apt-get install -y redis-server)"
)


def probed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def redis_server_path() -> str:
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.exists(p)),
        None,
    )
    if found is None:
        pytest.fail(REDIS_MISSING, pytrace=False)
    return found


class PortTaken(Exception):
    pass


class RedisServer:
    """`redis-server` on 127.0.0.1, without persistence; `start()` again reuses the port."""

    def __init__(self, port: int | None = None) -> None:
        self.path = redis_server_path()
        self._port_chosen = port is not None
        self.port = port or probed_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        for _ in range(5):
            try:
                self._start()
                self._port_chosen = True  # a restart must come back where clients look
                return self
            except PortTaken:
                if self._port_chosen:
                    raise
                self.port = probed_port()
        pytest.fail("redis-server found no free port in 5 tries")

    def _start(self) -> RedisServer:
        command = [self.path, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                if "in use" in error:
                    self.process = None
                    raise PortTaken(error)
                pytest.fail(f"redis-server did not start on port {self.port}: {error}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not answer on port {self.port} within 10 s")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            return self.command("PING") == "+PONG"
        except OSError:
            return False

    def command(self, *args: str) -> str:
        """One command over a raw socket; the first line of the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            parts = [f"*{len(args)}\r\n"] + [f"${len(a.encode())}\r\n{a}\r\n" for a in args]
            sock.sendall("".join(parts).encode())
            answer = b""
            while not answer.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            return answer.decode().split("\r\n", 1)[0]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()


class EmulatorProcess:
    """`python -m baiduwx_async.emulator` on a free port, driven over HTTP."""

    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        path = directory / "emulator.json"
        path.write_text(json.dumps(config))
        command = [sys.executable, "-m", "baiduwx_async.emulator", "--port", "0"]
        self._errors = (directory / "emulator.err").open("w+b")
        self.process = subprocess.Popen(
            [*command, "--config", str(path), "--log-level", "warning"],
            stdout=subprocess.PIPE,
            stderr=self._errors,
        )
        assert self.process.stdout is not None
        banner = self.process.stdout.readline().decode()  # "... emulator on http://HOST:PORT"
        if "http://" not in banner:
            self.stop()
            pytest.fail(f"the emulator did not start: {banner!r}")
        self.base_url = banner.rsplit(" ", 1)[-1].strip()
        self.port = int(self.base_url.rsplit(":", 1)[1])
        self.http = httpx.Client(base_url=self.base_url, timeout=5)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.http.get("/_emulator/stats")
                break
            except httpx.TransportError:
                if self.process.poll() is not None:
                    pytest.fail("the emulator process ended at start")
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("the emulator did not answer within 20 s")
                time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        """The counters once no request is in flight."""
        deadline = time.monotonic() + 5
        while True:
            stats: dict[str, Any] = self.http.get("/_emulator/stats").json()
            if not stats["in_flight"] or time.monotonic() > deadline:
                return stats
            time.sleep(0.01)

    def post(self, path: str, body: dict[str, Any] | None = None) -> None:
        self.http.post(f"/_emulator/{path}", json=body).raise_for_status()

    def reset(self) -> None:
        self.post("reset_stats")
        self.post("reset_limits")

    def env(self) -> dict[str, str]:
        """The environment of a worker process pointed at this emulator."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "QIANFAN_AK": "test-api-key",
            "QIANFAN_SK": "test-secret-key",
            "QIANFAN_BASE_URL": self.base_url,
        }

    def stop(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        finish(self.process, banner=True)
        self._errors.seek(0)
        saw(read_all(self._errors))
