"""The suite's own timeout: a test stuck in a shielded close fails, the run goes on ending.

The settings are read from `pyproject.toml`, so a change there that would let a hang hang
(no timeout, a timeout too long for CI, the signal method) fails here."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SETTINGS = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"][
    "pytest"
]["ini_options"]

STUCK = """
import anyio
import pytest

@pytest.mark.anyio
async def test_stuck_in_a_shielded_close():
    with anyio.CancelScope(shield=True):
        await anyio.sleep_forever()
"""


def test_the_per_test_timeout_fits_in_a_ci_run() -> None:
    assert 0 < SETTINGS["timeout"] <= 300


def test_a_hang_in_a_shielded_scope_fails_instead_of_hanging(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stuck=STUCK)
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-o",
        "timeout=2",
        "-o",
        f"timeout_method={SETTINGS['timeout_method']}",
        timeout=60,
    )
    assert result.ret != 0
    assert time.monotonic() - started < 60
    result.stdout.fnmatch_lines(["*Timeout*"])
