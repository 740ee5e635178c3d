"""
Shared helpers of the benchmark scripts: the emulator in its own process, medians,
bounded loops, child processes that answer in JSON, and the markdown table.

Every script measures the client in its own process (or a fresh child per contender)
while the emulator runs in another, so the client's CPU time is the client's alone.
"""

from __future__ import annotations

import atexit
import compileall
import contextlib
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
#: Where `baiduwx_async` is imported from: the working tree, or the snapshot of it that
#: `snapshot_library()` took (children inherit it through BENCH_LIB_ROOT).
LIB_ROOT = Path(os.environ.get("BENCH_LIB_ROOT") or ROOT)
sys.path.insert(0, str(LIB_ROOT))

API_KEY = "test-api-key"
SECRET_KEY = "test-secret-key"
CHAT_ENDPOINT = "mpt30b"  # any name is served by the emulator
COMPLETION_ENDPOINT = "pythia12b"
MESSAGES = [{"role": "user", "content": "Please introduce The Great Wall"}]
PROMPT = "Introduce the city Beijing"

#: Limits advertised in X-Ratelimit-* headers: high, so no client (the SDK's limiter
#: resets itself from them, ours adapts to them) ever throttles itself.
EMULATOR_CONFIG: dict[str, Any] = {
    "seed": 1,
    "advertised_rpm": 100_000_000,
    "advertised_tpm": 1_000_000_000,
    "sentences_min": 3,
    "sentences_max": 3,
}

RUNS = 3


# --- small helpers


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or a != a or b != b:  # NaN-safe
        return "–"
    return f"{a / b:.2f}×"


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


class Deadline:
    """A time budget: `for i in bounded(n, deadline)` stops at n or when time runs out."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


def maxrss_mib() -> float:
    """This process's RSS high-water mark in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """This process's resident set size now, in MiB (Linux), or NaN elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"


# --- one version of the library for the whole run


def snapshot_library() -> str:
    """Copy `baiduwx_async/` to a temporary directory and import it (here and in every child
    and emulator started later) from there, so that edits to the working tree during a long
    run cannot mix two versions of the library in one table. Returns a description of the
    code measured: commit, modified files, and a digest of the copied sources."""
    global LIB_ROOT
    import hashlib
    import shutil

    if "baiduwx_async" in sys.modules:
        raise RuntimeError("snapshot_library() must run before baiduwx_async is imported")
    target = Path(tempfile.mkdtemp(prefix="bench-baiduwx-"))
    shutil.copytree(
        ROOT / "baiduwx_async",
        target / "baiduwx_async",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    # Byte-compile it as pip does on install: PYTHONDONTWRITEBYTECODE may be set, and an
    # import benchmark must not charge our package alone with compiling its sources.
    compileall.compile_dir(str(target / "baiduwx_async"), quiet=1)
    digest = hashlib.sha256()
    for path in sorted((target / "baiduwx_async").rglob("*.py")):
        digest.update(path.relative_to(target).as_posix().encode())
        digest.update(path.read_bytes())
    LIB_ROOT = target
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    os.environ["BENCH_LIB_ROOT"] = str(target)
    sys.path.insert(0, str(target))
    return f"{_git_state()}, sources sha256 {digest.hexdigest()[:12]}"


def _git_state() -> str:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    changed = [line for line in git("status", "--porcelain", "baiduwx_async").splitlines() if line]
    return f"commit {commit}" + (
        f" + {len(changed)} uncommitted file(s) in baiduwx_async" if changed else ""
    )


# --- the emulator in a separate process


class EmulatorProcess:
    """`python -m baiduwx_async.emulator` on a free loopback port (port 0: the server binds
    a free one and prints it), configured from a JSON file; stopped at the end."""

    def __init__(self, config: dict[str, Any] | None = None, *, start_timeout: float = 30) -> None:
        self.config = dict(EMULATOR_CONFIG if config is None else config)
        self.start_timeout = start_timeout
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._config_file: str | None = None

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fd, self._config_file = tempfile.mkstemp(prefix="bench-emulator-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(self.config, f)
        env = dict(os.environ, PYTHONPATH=_pythonpath())
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "baiduwx_async.emulator",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--config",
                self._config_file,
                "--log-level",
                "warning",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=str(BENCH_DIR),  # not the repository root: `-m` would import the live tree
        )
        deadline = Deadline(self.start_timeout)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # "Wenxin Workshop emulator on http://127.0.0.1:PORT"
        found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if not found:
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = found.group(1)
        while not deadline.expired:  # the socket is bound; wait until uvicorn answers
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the emulator did not answer in time")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._config_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._config_file)
            self._config_file = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def configure(self, **changes: Any) -> None:
        self._call("/_emulator/config", changes)

    def reset_stats(self) -> None:
        self._call("/_emulator/reset_stats", {})

    def stats(self) -> dict[str, Any]:
        return self._call("/_emulator/stats")  # type: ignore[no-any-return]


def _pythonpath() -> str:
    parts = [str(LIB_ROOT)]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


@contextlib.contextmanager
def emulator_url(url: str | None) -> Iterator[tuple[str, EmulatorProcess | None]]:
    """The emulator at `url` if one was given (run_all shares one), else a fresh one."""
    if url:
        yield url, None
        return
    with EmulatorProcess() as emu:
        yield emu.url, emu


class RemoteEmulator:
    """The control routes of an emulator started elsewhere (run_all passes its URL)."""

    def __init__(self, url: str) -> None:
        self.url = url

    configure = EmulatorProcess.configure
    reset_stats = EmulatorProcess.reset_stats
    stats = EmulatorProcess.stats
    _call = EmulatorProcess._call


# --- the official SDK, pointed at the emulator


def qianfan_env(base_url: str, cache_dir: str | None = None) -> dict[str, str]:
    """Environment for `qianfan`: every host it may call is the emulator, nothing is cached
    on disk, no .env file is read, and its own limiter starts open (the emulator advertises
    high limits, which it adopts after the first answer)."""
    cache_dir = cache_dir or tempfile.gettempdir()
    return {
        "QIANFAN_AK": API_KEY,
        "QIANFAN_SK": SECRET_KEY,
        "QIANFAN_BASE_URL": base_url,
        "QIANFAN_CONSOLE_API_BASE_URL": base_url,
        "QIANFAN_IAM_BASE_URL": base_url,
        # Refresh a token at most once an hour (the SDK's default, made explicit): a burst
        # of first calls must not turn into a burst of token requests by this setting.
        "QIANFAN_ACCESS_TOKEN_REFRESH_MIN_INTERVAL": "3600",
        "QIANFAN_INFER_RESOURCE_REFRESH_MIN_INTERVAL": "3600",
        "QIANFAN_DISABLE_CACHE": "true",
        "QIANFAN_CACHE_DIR": cache_dir,
        "QIANFAN_DOT_ENV_CONFIG_FILE": os.path.join(cache_dir, "no-such-qianfan.env"),
        "QIANFAN_DISABLE_EB_SDK": "true",
    }


def apply_qianfan_env(base_url: str) -> None:
    for key in [k for k in os.environ if k.startswith("QIANFAN_")]:
        del os.environ[key]
    os.environ.update(qianfan_env(base_url))


# --- child processes


def run_child(args: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> Any:
    """Run `python args...` and return the JSON object its last stdout line holds."""
    full_env = dict(os.environ if env is None else env, PYTHONPATH=_pythonpath())
    try:
        done = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=str(BENCH_DIR),  # `python -c` puts the cwd first on sys.path
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)}"}
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {"error": f"no JSON answer: {lines[-1][:200]}"}


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- the table


class Table:
    """Rows of one markdown table: section, measure, contender, value, unit, ratio, note."""

    HEADER = ("#", "scenario", "contender", "value", "unit", "ratios", "notes")

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(
        self,
        section: str,
        scenario: str,
        contender: str,
        value: str,
        unit: str = "",
        ratios: str = "",
        notes: str = "",
    ) -> None:
        self.rows.append((section, scenario, contender, value, unit, ratios, notes))

    def extend(self, other: Table) -> None:
        self.rows.extend(other.rows)

    def render(self) -> str:
        lines = [
            "| " + " | ".join(self.HEADER) + " |",
            "|---|---|---|---:|---|---|---|",
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return "\n".join(lines)

    def to_json(self) -> list[list[str]]:
        return [list(r) for r in self.rows]

    @classmethod
    def from_json(cls, rows: list[list[str]]) -> Table:
        table = cls()
        table.rows = [tuple(r) for r in rows]
        return table


def error_row(table: Table, section: str, scenario: str, contender: str, error: str) -> None:
    table.add(section, scenario, contender, "failed", "", "", error[:160])
