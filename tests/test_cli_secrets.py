"""No password on a command line: `--redis URL` is also read from BAIDUWX_REDIS_URL, and a
URL with a password given on the command line is used with a warning that never echoes it."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from baiduwx_async._cli_secrets import url_has_password, url_option
from baiduwx_async.cli import main

PASSWORD = "hunter2-redis-pw"


def unreachable_redis(password: str | None) -> str:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/0"


@pytest.fixture
def batch_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A batch that stops at Redis, before any call (the service address is never used)."""
    monkeypatch.setenv("QIANFAN_ACCESS_TOKEN", "24.unused-token")
    monkeypatch.setenv("QIANFAN_BASE_URL", "http://127.0.0.1:9")
    for name in ("QIANFAN_AK", "QIANFAN_SK", "QIANFAN_ACCESS_KEY", "QIANFAN_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BAIDUWX_REDIS_URL", raising=False)
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": 1, "prompt": "p"}) + "\n")
    out = tmp_path / "out.jsonl"
    return ["batch", "pythia12b", str(source), "-o", str(out), "--complete", "--no-progress"]


def test_redis_url_from_the_environment_is_used_without_a_warning(
    batch_args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BAIDUWX_REDIS_URL", unreachable_redis(PASSWORD))
    assert main([*batch_args, "--qps", "5"]) == 1
    err = capsys.readouterr().err
    assert "error: Redis at redis://:***@127.0.0.1:" in err, "the URL of the environment"
    assert "warning" not in err
    assert PASSWORD not in err


def test_password_on_the_command_line_warns_without_echoing_it(
    batch_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*batch_args, "--redis", unreachable_redis(PASSWORD)]) == 1
    err = capsys.readouterr().err
    assert "warning: the --redis URL carries a password" in err
    assert "BAIDUWX_REDIS_URL" in err
    assert PASSWORD not in err


def test_command_line_wins_over_the_environment_and_no_password_no_warning(
    batch_args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BAIDUWX_REDIS_URL", "redis://:other@127.0.0.1:1/0")
    given = unreachable_redis(None)
    assert main([*batch_args, "--redis", given]) == 1
    err = capsys.readouterr().err
    assert f"error: Redis at {given}" in err
    assert "warning" not in err


def test_without_the_option_or_the_variable_there_is_no_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BAIDUWX_REDIS_URL", "")
    assert url_option(None, option="--redis", env="BAIDUWX_REDIS_URL") is None
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("url", "has"),
    [
        ("redis://:pw@host:6379/0", True),
        ("redis://user:pw@host/0", True),
        ("rediss://host:6379/0?password=pw", True),
        ("redis://host:6379/0", False),
        ("redis://user@host/0", False),
        ("unix:///tmp/redis.sock?db=0", False),
        ("redis://:pw@host:notaport/0", True),
    ],
)
def test_url_has_password(url: str, has: bool) -> None:
    assert url_has_password(url) is has


def test_embed_reads_the_redis_url_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QIANFAN_ACCESS_TOKEN", "24.unused-token")
    monkeypatch.setenv("QIANFAN_BASE_URL", "http://127.0.0.1:9")
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": 1, "text": "t"}) + "\n")
    args = ["embed", "embedding-v1", str(source), "-o", str(tmp_path / "out.jsonl")]
    monkeypatch.setenv("BAIDUWX_REDIS_URL", unreachable_redis(PASSWORD))
    assert main([*args, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Redis at redis://:***@127.0.0.1:" in err and "warning" not in err
    assert main([*args, "--no-progress", "--redis", unreachable_redis(PASSWORD)]) == 1
    err = capsys.readouterr().err
    assert "warning: the --redis URL carries a password" in err
    assert PASSWORD not in err
