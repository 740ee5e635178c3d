"""A suite-wide guard: a test fails if a known secret shows in its logs (captured at
DEBUG), its printed output, what it read back from `capsys`, the output of the
subprocesses it started (handed over with `saw()`), or its failure text.

Known secrets are the keys and tokens the tests use, the emulator's default credentials
(its API and access keys included: an API key is a secret too), and anything shaped like
an access token the emulator issues (`24.<32 hex>.…`).

Each test starts as a new user process would: the library's redaction of httpx's log is
removed before it, so a client that forgot to switch it on would leak here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator

import pytest

from baiduwx_async.emulator import EmulatorConfig

from .support import API_KEY, SECRET_KEY, TOKEN

_EMULATOR = EmulatorConfig()
KNOWN_SECRETS = (
    API_KEY,
    SECRET_KEY,
    TOKEN,
    *_EMULATOR.credentials,
    *_EMULATOR.credentials.values(),
    *_EMULATOR.iam_credentials,
    *_EMULATOR.iam_credentials.values(),
    "sk-iam-do-not-print",
)
TOKEN_SHAPE = re.compile(r"\b2[45]\.[0-9a-f]{32}\.")

#: Text the running test has seen that no report section holds (subprocess output,
#: `capsys` reads); checked and emptied with each phase's report.
_seen: list[str] = []


def saw(*texts: str | bytes | None) -> None:
    """Hand the guard output the test got from elsewhere, e.g. a subprocess's."""
    for text in texts:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if text:
            _seen.append(text)


def leaks(text: str) -> list[str]:
    found = [secret for secret in KNOWN_SECRETS if secret in text]
    found += TOKEN_SHAPE.findall(text)
    return found


@pytest.fixture(autouse=True)
def _as_a_new_process_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    httpx_logger = logging.getLogger("httpx")
    for log_filter in list(httpx_logger.filters):
        if type(log_filter).__name__ == "_RedactTokens":
            httpx_logger.removeFilter(log_filter)
    readouterr = pytest.CaptureFixture.readouterr

    def read_and_show(self: pytest.CaptureFixture[str]) -> object:
        result = readouterr(self)
        saw(*result)
        return result

    monkeypatch.setattr(pytest.CaptureFixture, "readouterr", read_and_show)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    seen = _seen[:]
    _seen.clear()
    if item.get_closest_marker("shows_secrets"):
        return
    # each phase's report repeats the sections of the phases before it: read only its own
    texts = [content for name, content in report.sections if name.endswith(report.when)]
    texts += seen
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
