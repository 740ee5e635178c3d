"""The secret guard itself: a test that leaks a secret into its logs or output fails."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

LEAKY = """
import logging

def test_logs_a_secret():
    token = "24." + "0123456789abcdef" * 2 + ".2592000"
    logging.getLogger("baiduwx_async").debug("url ?access_token=" + token)

def test_prints_a_secret():
    print("secret: sk-unit-test-very-secret")

def test_clean():
    logging.getLogger("baiduwx_async").debug("url ?access_token=***")
"""


@pytest.mark.shows_secrets  # the inner run's report, with its leaks, is this test's output
def test_guard_fails_tests_that_leak(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest(
        "-p",
        "tests.secret_guard",
        "-o",
        "log_level=DEBUG",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*secret guard: 1 known secret*"])
