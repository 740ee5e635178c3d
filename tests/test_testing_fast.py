"""Fault-injection tests that run fast: `wenxin_instant_retries` (marker and ini option)
and `testing.INSTANT_RETRIES`; and the plugin settling pytest-asyncio's loop scope so its
users meet no deprecation warning. Run with `pytester`, as users meet them."""

from __future__ import annotations

import re

import pytest

import baiduwx_async as wx
from baiduwx_async import testing

pytest_plugins = ["pytester"]

QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")

#: No `asyncio_default_fixture_loop_scope`: the plugin must settle it (`-W error` below).
INI_BARE = """
[pytest]
asyncio_mode = strict
"""

FAULT_TESTS = """
import sys
import time
import anyio
import pytest
import baiduwx_async as wx

FAULTS = {"http_503": 0.5}
SLEEPS = []


@pytest.fixture(autouse=True)
def record_client_sleeps(monkeypatch):
    # The waits of the client (retry backoff, rate-limit slow-down), not the emulator's.
    real_sleep = anyio.sleep

    async def sleep(delay, *args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller in ("baiduwx_async._sender", "baiduwx_async._limits"):
            SLEEPS.append(delay)
        return await real_sleep(delay, *args, **kwargs)

    SLEEPS.clear()
    monkeypatch.setattr(anyio, "sleep", sleep)


async def twenty_calls(client):
    outcomes = []

    async def one(i):
        try:
            await client.complete("pythia12b", f"question {i}")
            outcomes.append("ok")
        except (wx.ServerError, wx.RateLimitError):
            outcomes.append("failed")

    async with anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(one, i)
    return outcomes

@pytest.mark.asyncio
@pytest.mark.wenxin_instant_retries
@pytest.mark.wenxin_emulator(faults=FAULTS, seed=7)
async def test_marked(wenxin_client, wenxin_emulator):
    started = time.perf_counter()
    outcomes = await twenty_calls(wenxin_client)
    elapsed = time.perf_counter() - started
    stats = wenxin_emulator.stats()
    assert len(outcomes) == 20
    assert stats["faults"]["http_503"] >= 5          # the faults did fall, and were retried
    assert stats["calls"] == 20 + stats["faults"]["http_503"] - outcomes.count("failed")
    print(f"ELAPSED {elapsed:.3f}")
    print(f"WAITED {sum(SLEEPS):.3f} IN {len(SLEEPS)}")
    assert len(SLEEPS) >= 5 and set(SLEEPS) == {0}

@pytest.mark.asyncio
@pytest.mark.wenxin_instant_retries
@pytest.mark.wenxin_emulator(faults={"http_429": 0.5}, seed=7)
async def test_marked_429(wenxin_client, wenxin_emulator):
    outcomes = await twenty_calls(wenxin_client)
    assert len(outcomes) == 20
    assert wenxin_emulator.stats()["faults"]["http_429"] >= 5
    print(f"WAITED_429 {sum(SLEEPS):.3f} IN {len(SLEEPS)}")
    assert len(SLEEPS) >= 5 and set(SLEEPS) == {0}   # no backoff, no slow-down either

@pytest.mark.asyncio
@pytest.mark.wenxin_instant_retries
@pytest.mark.wenxin_emulator(faults={"http_503": 1.0})
async def test_same_attempts(wenxin_emulator):
    client = wenxin_emulator.client()
    with pytest.raises(wx.ServerError):
        await client.complete("pythia12b", "hello")
    assert wenxin_emulator.stats()["faults"]["http_503"] == 4   # 1 + the default 3 retries
    mine = wenxin_emulator.client(max_retries=1)
    with pytest.raises(wx.ServerError):
        await mine.complete("pythia12b", "hello")
    assert wenxin_emulator.stats()["faults"]["http_503"] == 6

@pytest.mark.asyncio
@pytest.mark.wenxin_emulator(faults={"http_503": 1.0})
async def test_unmarked_waits(wenxin_client):
    started = time.perf_counter()
    with pytest.raises(wx.ServerError):
        await wenxin_client.complete("pythia12b", "hello")
    print(f"UNMARKED {time.perf_counter() - started:.3f}")
    print(f"UNMARKED_WAITED {sum(SLEEPS):.3f} IN {len(SLEEPS)}")
"""


def run(pytester: pytest.Pytester, ini: str, tests: str, *args: str) -> pytest.RunResult:
    pytester.makeini(ini)
    pytester.makepyfile(test_user=tests)
    return pytester.runpytest(*QUIET, "-W", "error", "-s", *args)


def figure(result: pytest.RunResult, label: str) -> float:
    for line in result.stdout.lines:
        found = re.search(rf"\b{label} (\S+)", line)  # a progress dot may precede it
        if found:
            return float(found.group(1))
    raise AssertionError(f"{label} not printed")


def test_twenty_faulty_calls_retry_without_waiting(pytester: pytest.Pytester) -> None:
    # What is checked is what the client waited (every wait 0 s), not the elapsed time,
    # which a busy machine stretches.
    result = run(pytester, INI_BARE, FAULT_TESTS, "-k", "not unmarked")
    result.assert_outcomes(passed=3)
    assert figure(result, "WAITED") == 0.0
    assert figure(result, "WAITED_429") == 0.0
    assert "PytestDeprecationWarning" not in result.stdout.str()


def test_ini_option_makes_every_test_instant(pytester: pytest.Pytester) -> None:
    ini = INI_BARE + "wenxin_instant_retries = true\n"
    tests = FAULT_TESTS.replace("@pytest.mark.wenxin_instant_retries\n", "")
    result = run(pytester, ini, tests, "-k", "marked or unmarked")
    result.assert_outcomes(passed=3)
    assert figure(result, "WAITED") == 0.0
    assert figure(result, "WAITED_429") == 0.0
    assert figure(result, "UNMARKED_WAITED") == 0.0


def test_a_loop_scope_the_user_set_is_kept(pytester: pytest.Pytester) -> None:
    ini = INI_BARE + "asyncio_default_fixture_loop_scope = module\n"
    tests = """
def test_scope(pytestconfig):
    assert pytestconfig.getini("asyncio_default_fixture_loop_scope") == "module"
"""
    run(pytester, ini, tests).assert_outcomes(passed=1)
    settled = """
def test_scope(pytestconfig):
    assert pytestconfig.getini("asyncio_default_fixture_loop_scope") == "function"
"""
    run(pytester, INI_BARE, settled).assert_outcomes(passed=1)


def test_instant_retries_policy_keeps_the_attempts_and_never_waits() -> None:
    policy = testing.INSTANT_RETRIES
    assert policy.max_retries == wx.RetryPolicy().max_retries
    assert all(policy.wait(n, retry_after=30.0) == 0.0 for n in range(10))


def test_marker_is_documented(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI_BARE)
    markers = pytester.runpytest(*QUIET, "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.wenxin_instant_retries*same attempts*"])
