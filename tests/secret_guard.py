"""A suite-wide guard: a test fails if a known secret shows in its logs (captured at
DEBUG), its printed output, or its failure text.

Known secrets are the keys and tokens the tests use, the emulator's default keys, and
anything shaped like an access token the emulator issues (`24.<32 hex>.…`).
"""

from __future__ import annotations

import re
from collections.abc import Generator

import pytest

from .support import API_KEY, SECRET_KEY, TOKEN

KNOWN_SECRETS = (
    API_KEY,
    SECRET_KEY,
    TOKEN,
    "test-secret-key",
    "test-secret-access-key",
    "sk-iam-do-not-print",
)
TOKEN_SHAPE = re.compile(r"\b2[45]\.[0-9a-f]{32}\.")


def leaks(text: str) -> list[str]:
    found = [secret for secret in KNOWN_SECRETS if secret in text]
    found += TOKEN_SHAPE.findall(text)
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if item.get_closest_marker("shows_secrets"):
        return
    # each phase's report repeats the sections of the phases before it: read only its own
    texts = [content for name, content in report.sections if name.endswith(report.when)]
    if report.failed:
        texts.append(report.longreprtext)
    found = sorted({secret for text in texts for secret in leaks(text)})
    if found:
        report.outcome = "failed"
        report.longrepr = (
            f"secret guard: {len(found)} known secret(s) appeared in this test's logs, "
            f"output or failure text (first characters: {[s[:6] for s in found]})"
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shows_secrets: the test prints secrets on purpose (the guard's own test)"
    )
