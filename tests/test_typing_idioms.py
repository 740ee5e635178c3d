"""The README's idioms pass `mypy --strict` as a user's own code (tests/typing/), and the
same checker refuses what the types promise to catch."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

IDIOMS = Path(__file__).parent / "typing" / "readme_idioms.py"

MISTAKES = """
import baiduwx_async as wx

async def main(client: wx.AsyncClient) -> None:
    results = await client.batch_complete("pythia12b", ["Beijing"])
    for r in results:
        print(r.response.result)  # line 7: not narrowed, may be None
        if r.ok:
            print(r.error.args)  # line 9: a success has no error
    async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
        pass
    print(stream.usage.total_tokens)  # line 12: None before the stream starts
    await client.chat("mpt30b", [{"role": "usr", "content": "hi"}])  # line 13: no such role
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for this module's runs: the package is analysed once."""
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(cache: Path, *paths: Path) -> tuple[int, str]:
    out, err, status = mypy_api.run(["--strict", "--cache-dir", str(cache), *map(str, paths)])
    return status, out + err


def test_readme_idioms_pass_mypy_strict(cache: Path) -> None:
    status, out = mypy(cache, IDIOMS)
    assert status == 0, out


def test_mypy_refuses_what_the_types_rule_out(cache: Path, tmp_path: Path) -> None:
    source = tmp_path / "mistakes.py"
    source.write_text(textwrap.dedent(MISTAKES))
    status, out = mypy(cache, source)
    flagged = sorted({int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line})
    assert flagged == [7, 9, 12, 13], out
    assert status == 1
