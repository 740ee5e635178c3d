"""The emulator introduces itself: `baiduwx emulator` prints the credentials it accepts and
a ready `export` line, its counters are reachable from another process, `EmulatorConfig`
comes from `baiduwx_async.testing`, and `fail_prompts` matches by substring."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

import baiduwx_async as wx
from baiduwx_async import testing

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[list[str]]:
    """`baiduwx emulator` on a free port, in its own process; yields its banner lines."""
    config = tmp_path / "emulator.json"
    config.write_text('{"credentials": {"my ak": "my-sk"}, "seed": 1}', encoding="utf-8")
    command = ["emulator", "--port", "0", "--config", str(config), "--log-level", "warning"]
    process = subprocess.Popen(
        [sys.executable, "-m", "baiduwx_async.cli", *command],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("counters:"):
            line = process.stdout.readline()
            assert line, f"the emulator exited before its banner ended: {lines}"
            lines.append(line.rstrip("\n"))
        yield lines
    finally:
        process.kill()
        process.wait(10)


def test_banner_gives_credentials_an_export_line_and_the_stats_route(
    emulator_process: list[str],
) -> None:
    banner = "\n".join(emulator_process)
    assert emulator_process[0].startswith("Wenxin Workshop emulator on http://127.0.0.1:")
    base_url = emulator_process[0].rsplit(" ", 1)[1]
    assert "OAuth API Key / Secret Key: my ak / my-sk" in banner
    assert "IAM Access Key / Secret Key: test-access-key / test-secret-access-key" in banner
    [export] = [line for line in emulator_process if line.startswith("export ")]
    env = dict(word.split("=", 1) for word in shlex.split(export.removeprefix("export ")))
    assert env == {"QIANFAN_AK": "my ak", "QIANFAN_SK": "my-sk", "QIANFAN_BASE_URL": base_url}
    assert emulator_process[-1] == f"counters: curl {base_url}/_emulator/stats"

    # The export line is all a client needs; the counters are read from this process.
    async def use() -> str:
        credentials = wx.credentials_from_env(env)
        base = env["QIANFAN_BASE_URL"]
        async with wx.AsyncClient(credentials=credentials, base_url=base) as client:
            return (await client.complete("pythia12b", "hello")).result

    assert anyio.run(use)
    stats = httpx.get(f"{base_url}/_emulator/stats").json()
    assert stats["endpoints"]["completions/pythia12b"] == {"ok": 1}
    assert stats["token_requests"] == 1


@pytest.mark.anyio
async def test_emulator_config_from_testing_and_substring_poison() -> None:
    config = testing.EmulatorConfig(fail_prompts={"POISON": 336003}, seed=1)
    async with testing.run_emulator(config, asgi=True) as emu, emu.client() as client:
        with pytest.raises(wx.InvalidRequestError) as caught:
            await client.complete("pythia12b", "please summarise POISON pill no. 7")
        assert caught.value.code == 336003
        with pytest.raises(wx.InvalidRequestError):
            await client.chat("mpt30b", [wx.user("POISON")])
        assert (await client.complete("pythia12b", "poison, lower case")).result
        assert (await client.chat("mpt30b", [wx.user("a clean question")])).result
