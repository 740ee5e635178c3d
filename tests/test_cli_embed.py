"""`baiduwx embed` against a real emulator: one line per id, resumable like `baiduwx batch`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from baiduwx_async.cli import main

from .test_cli import RunningEmulator, client_call, emu, read_jsonl, write_inputs

__all__ = ["emu"]  # the fixture, imported to be used here

ENDPOINT = "embedding-v1"


@pytest.mark.parametrize("backend", ["httpx", "aiohttp"])
def test_embed_writes_one_line_per_id_and_resumes(
    emu: RunningEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    records: list[dict[str, Any]] = [{"id": i, "text": f"text {i}"} for i in range(40)]
    records.append({"id": "blank", "text": "   "})
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(source, records)
    argv = ["embed", ENDPOINT, str(source), "-o", str(output), "--http-backend", backend]
    assert main([*argv, "--texts-per-request", "8", "--concurrency", "3"]) == 1  # one failed
    by_id = {line["id"]: line for line in read_jsonl(output)}
    assert sorted(map(str, by_id)) == sorted(str(r["id"]) for r in records)
    expected = client_call(emu.base_url, "embed", ENDPOINT, [f"text {i}" for i in range(40)])
    assert [by_id[i] for i in range(40)] == [
        {"id": i, "ok": True, "embedding": vector} for i, vector in enumerate(expected.vectors)
    ]
    assert by_id["blank"]["ok"] is False
    assert by_id["blank"]["error"]["type"] == "ValidationError"
    assert emu.calls(f"embeddings/{ENDPOINT}") == 5 + 3  # 40 texts by 8, then by 16 above
    assert "done: 41 (40 ok, 1 failed), skipped: 0" in capsys.readouterr().err

    # a second run finds everything written, and sends nothing
    assert main(argv) == 0
    assert "skipped: 41" in capsys.readouterr().err
    assert emu.calls(f"embeddings/{ENDPOINT}") == 8


def test_embed_resumes_after_a_torn_last_line(emu: RunningEmulator, tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(source, [{"id": f"t{i}", "text": f"text {i}"} for i in range(20)])
    earlier = {"id": "t3", "ok": True, "embedding": [1.0]}
    output.write_text(json.dumps(earlier) + '\n{"id": "t4", "ok": true, "embe', encoding="utf-8")
    assert main(["embed", ENDPOINT, str(source), "-o", str(output)]) == 0
    lines = read_jsonl(output)
    assert sorted(line["id"] for line in lines) == sorted(f"t{i}" for i in range(20))
    assert lines[0] == earlier  # kept, not sent again
    assert emu.calls(f"embeddings/{ENDPOINT}") == 2  # the 19 texts left went out 16 + 3


def test_embed_service_failures_are_lines_and_exit_1(
    emu: RunningEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(source, [{"id": i, "text": "word " * 50 * (i + 1)} for i in range(3)])
    with source.open("a") as file:
        file.write("not json\n")
    assert (
        main(["embed", "tao_8k", str(source), "-o", str(output), "--texts-per-request", "2"]) == 1
    )
    by_id = {line["id"]: line for line in read_jsonl(output)}
    assert [by_id[i]["ok"] for i in range(3)] == [False, False, True]  # 2 a request: too many
    assert (
        by_id[0]["error"]["code"] == 336003 and by_id[0]["error"]["type"] == "InvalidRequestError"
    )
    err = capsys.readouterr().err
    assert "line 4: not a JSON line" in err and "done: 3 (1 ok, 2 failed)" in err
