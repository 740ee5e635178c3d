"""What a type checker sees of the public calls: message shapes and the calls' keywords."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mypy import api as mypy_api

SNIPPET = """
import baiduwx_async as wx

async def main(client: wx.AsyncClient) -> None:
    await client.chat("e", [{"role": "user", "content": "hi"}], max_output_tokens=5)
    await client.chat("e", [{"role": "usr", "content": "hi"}])  # line 6
    await client.chat("e", [wx.user("hi")], max_tokens=5)  # line 7
    await client.complete("e", "hi", system="x")  # line 8
    await client.chat("e", [wx.user("hi")], temperature="hot")  # line 9
    reply = await client.chat("e", [wx.user("hi")], functions=[wx.Function("f", "d", {})])
    if reply.function_call is not None:
        args: dict[str, object] = reply.function_call.parse_arguments()
    vectors: list[list[float]] = (await client.embed("e", ["a"], texts_per_request=1)).vectors
    await client.batch_embed("e", ["a"], texts_per_request="1")  # line 14
"""


def test_mypy_catches_wrong_message_shapes_and_keywords(tmp_path: Path) -> None:
    source = tmp_path / "snippet.py"
    source.write_text(textwrap.dedent(SNIPPET))
    out, _, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(source)]
    )
    flagged = sorted({int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line})
    assert flagged == [6, 7, 8, 9, 14], out
    assert status == 1
