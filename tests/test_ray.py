"""The Ray Data mappers: on a local Ray instance against an emulator process, and called
directly (no Ray) for what needs no cluster."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

import baiduwx_async as wx
from baiduwx_async.ray import ChatMapper, CompletionMapper, EmbeddingMapper, PerActorLimitsWarning

from .redis_server import EmulatorProcess, RedisServer

SECRETS = ("test-secret-key", "test-api-key")
FAST_RETRIES = wx.RetryPolicy(max_retries=8, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    process = EmulatorProcess({"seed": 7}, tmp_path_factory.mktemp("emulator"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def ray_cluster(emulator: EmulatorProcess) -> Iterator[Path]:
    """One local Ray instance for the module (starting one costs seconds). Its workers
    inherit the emulator's address and credentials from the environment Ray was started
    in, as on a cluster whose nodes were started with them: not through
    `runtime_env={"env_vars": ...}`, which Ray writes to its runtime_env_agent.log."""
    logging.getLogger("ray").setLevel(logging.WARNING)  # its DEBUG records fill the report
    with pytest.MonkeyPatch.context() as patch:
        # Without it, Ray reports usage over the network and Ray Data's first run starts
        # a driver thread that polls a Prometheus on localhost:9090 every 10 s for the
        # rest of the session: a socket that comes and goes under the later tests that
        # count this process's file descriptors.
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        with pytest.MonkeyPatch.context() as for_the_workers:
            for name, value in emulator.env().items():
                if name != "PATH":
                    for_the_workers.setenv(name, value)
            ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield Path(_session_dir())
        ray.shutdown()


def _session_dir() -> str:
    from ray._private.worker import _global_node

    return str(_global_node.get_session_dir_path())


@pytest.fixture
def fresh(emulator: EmulatorProcess) -> EmulatorProcess:
    emulator.reset()
    emulator.post("config", {"faults": {}, "qps": None, "fail_prompts": {}})
    return emulator


def _rows(frame: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for row in frame:
        assert row["id"] not in by_id, f"row {row['id']} answered twice"
        by_id[row["id"]] = row
    return by_id


def test_completions_on_two_actors_answer_every_row_once(
    ray_cluster: Path, fresh: EmulatorProcess
) -> None:
    prompts = [{"id": f"p{i}", "prompt": f"Introduce city number {i}"} for i in range(1000)]
    ds = ray.data.from_items(prompts, override_num_blocks=8)
    out = ds.map_batches(
        CompletionMapper,
        concurrency=2,
        batch_size=100,
        fn_constructor_kwargs={"endpoint": "pythia12b", "max_concurrency": 16},
    ).take_all()

    rows = _rows(out)
    assert rows.keys() == {p["id"] for p in prompts}
    stats = fresh.stats()
    assert stats["endpoints"]["completions/pythia12b"] == {"ok": 1000}
    assert stats["token_requests"] <= 2  # one per actor, no more
    for row in rows.values():
        assert row["error"] is None and row["attempts"] == 1
        assert row["prompt"].startswith("Introduce city number")  # input columns kept
        assert isinstance(row["result"], str) and row["result"]
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    # the emulator counted exactly the tokens the rows report: no row sent twice
    assert sum(r["prompt_tokens"] for r in rows.values()) == stats["prompt_tokens"]
    assert sum(r["completion_tokens"] for r in rows.values()) == stats["completion_tokens"]


def test_row_errors_are_kept_and_transient_faults_retried(
    ray_cluster: Path, fresh: EmulatorProcess
) -> None:
    fresh.post("config", {"faults": {"error_2": 0.2}, "fail_prompts": {"poison": 336003}})
    items = [{"id": i, "prompt": "poison" if i % 50 == 0 else f"prompt {i}"} for i in range(400)]
    out = (
        ray.data.from_items(items, override_num_blocks=4)
        .map_batches(
            CompletionMapper,
            concurrency=2,
            batch_size=50,
            fn_constructor_kwargs={
                "endpoint": "pythia12b",
                "client_options": {"retry_policy": FAST_RETRIES},
            },
        )
        .take_all()
    )
    rows = _rows(out)
    assert len(rows) == 400
    failed = {i for i, row in rows.items() if row["error"] is not None}
    assert failed == {i for i in range(400) if i % 50 == 0}
    for i in failed:
        assert rows[i]["error"].startswith("InvalidRequestError: ")
        assert rows[i]["result"] is None
    retried = [row for row in rows.values() if row["attempts"] > 1]
    assert retried, "the error_2 fault should have made some rows retry"
    assert all(rows[i]["error"] is None for i in rows.keys() - failed)
    stats = fresh.stats()
    assert stats["endpoints"]["completions/pythia12b"]["ok"] == 400 - len(failed)


def test_chat_rows_and_pandas_batches(ray_cluster: Path, fresh: EmulatorProcess) -> None:
    items = [
        {"id": i, "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(60)
    ]
    out = (
        ray.data.from_items(items)
        .map_batches(
            ChatMapper,
            concurrency=1,
            batch_size=20,
            batch_format="pandas",
            fn_constructor_kwargs={"endpoint": "mpt30b", "params": {"temperature": 0.5}},
        )
        .take_all()
    )
    rows = _rows(out)
    assert len(rows) == 60
    assert all(row["error"] is None and row["result"] for row in rows.values())
    assert fresh.stats()["endpoints"]["chat/mpt30b"] == {"ok": 60}


def test_embedding_rows(ray_cluster: Path, fresh: EmulatorProcess) -> None:
    items = [{"id": i, "text": f"document number {i}"} for i in range(100)]
    items[7]["text"] = "   "  # blank: fails alone, unsent
    out = (
        ray.data.from_items(items, override_num_blocks=2)
        .map_batches(
            EmbeddingMapper,
            concurrency=2,
            batch_size=50,
            fn_constructor_kwargs={"endpoint": "embedding-v1"},
        )
        .take_all()
    )
    rows = _rows(out)
    assert len(rows) == 100
    assert rows[7]["error"].startswith("ValidationError: ") and rows[7]["embedding"] is None
    vectors = {i: list(row["embedding"]) for i, row in rows.items() if i != 7}
    assert all(len(v) == 384 and rows[i]["error"] is None for i, v in vectors.items())
    assert len({tuple(v) for v in vectors.values()}) == 99  # each row its own text's vector
    # the same text again gives the same vector: each row got its own text's answer
    again = (
        ray.data.from_items([{"id": 3, "text": "document number 3"}])
        .map_batches(
            EmbeddingMapper, concurrency=1, fn_constructor_kwargs={"endpoint": "embedding-v1"}
        )
        .take_all()
    )
    assert list(again[0]["embedding"]) == vectors[3]
    calls = fresh.stats()["endpoints"]["embeddings/embedding-v1"]["ok"]
    assert calls < 20  # texts packed up to 16 to a request within each batch, not one per row


def test_shared_qps_through_redis_is_never_exceeded(
    ray_cluster: Path, fresh: EmulatorProcess
) -> None:
    redis = RedisServer().start()
    try:
        fresh.post("config", {"qps": 20})
        items = [{"id": i, "prompt": f"prompt {i}"} for i in range(80)]
        out = (
            ray.data.from_items(items, override_num_blocks=4)
            .map_batches(
                CompletionMapper,
                concurrency=2,
                batch_size=30,
                fn_constructor_kwargs={
                    "endpoint": "pythia12b",
                    "qps": 20,
                    "tpm": 10**6,  # the token budget goes through the same Redis schedule
                    "redis_url": redis.url,
                    "client_options": {"max_retries": 0},
                },
            )
            .take_all()
        )
    finally:
        redis.stop()
    rows = _rows(out)
    assert len(rows) == 80
    assert [row["error"] for row in rows.values() if row["error"]] == []
    stats = fresh.stats()
    assert stats["endpoints"]["completions/pythia12b"] == {"ok": 80}  # no error 18
    assert stats["token_requests"] == 1  # one token for both actors


def test_nothing_secret_in_rows_or_ray_logs(ray_cluster: Path, fresh: EmulatorProcess) -> None:
    items = [{"id": i, "prompt": f"prompt {i}"} for i in range(20)]
    out = (
        ray.data.from_items(items)
        .map_batches(
            CompletionMapper,
            concurrency=1,
            batch_size=10,
            fn_constructor_kwargs={
                "endpoint": "pythia12b",
                "credentials": wx.OAuthCredentials("test-api-key", "test-secret-key"),
            },
        )
        .take_all()
    )
    assert len(out) == 20
    dumped = json.dumps(out, default=str)
    logs = "".join(
        path.read_text(errors="replace")
        for path in (ray_cluster / "logs").rglob("*")
        if path.is_file() and path.suffix in (".log", ".out", ".err")
    )
    for secret in SECRETS:
        assert secret not in dumped
        assert secret not in logs
    assert re.search(r"access_token=(?!\*\*\*)", logs) is None


# --- called directly, no Ray: what needs no cluster, on asyncio and trio


def test_repr_and_warning_without_redis() -> None:
    with pytest.warns(PerActorLimitsWarning, match="each actor"):
        mapper = CompletionMapper(
            endpoint="pythia12b",
            qps=5,
            credentials=wx.OAuthCredentials("test-api-key", "test-secret-key"),
        )
    assert "test-secret-key" not in repr(mapper)
    shared = CompletionMapper(endpoint="pythia12b", redis_url="redis://:hunter2@cache:6379/0")
    assert "hunter2" not in repr(shared)


def test_bad_construction_is_a_validation_error() -> None:
    with pytest.raises(wx.ValidationError, match="endpoint"):
        CompletionMapper(endpoint="")
    with pytest.raises(wx.ValidationError, match="max_concurrency"):
        CompletionMapper(endpoint="pythia12b", max_concurrency=0)
    with pytest.raises(wx.ValidationError, match="client_options"):
        CompletionMapper(endpoint="pythia12b", client_options={"qps": 3})
    with pytest.raises(wx.ValidationError, match="params: concurrency, max_tokens are not"):
        CompletionMapper(endpoint="pythia12b", params={"max_tokens": 3, "concurrency": 4})
    ChatMapper(endpoint="mpt30b", params={"system": "be brief", "max_output_tokens": 64})


@pytest.mark.anyio
async def test_an_input_with_an_output_column_is_refused(anyio_backend: str) -> None:
    mapper = CompletionMapper(endpoint="pythia12b", credentials=wx.StaticToken("t"))
    with pytest.raises(wx.ValidationError, match=r"output column\(s\) \['error'\]"):
        await mapper({"prompt": ["x"], "error": ["mine"]})


@pytest.mark.anyio
async def test_direct_call_keeps_columns_and_one_client(anyio_backend: str) -> None:
    from baiduwx_async import testing

    async with testing.run_emulator(asgi=True, seed=3) as emu:
        http = emu.http_client(base_url=testing.ASGI_BASE_URL)
        mapper = CompletionMapper(
            endpoint="pythia12b",
            credentials=emu.credentials,
            client_options={"base_url": testing.ASGI_BASE_URL, "http_client": http},
        )
        try:
            first = await mapper({"id": [1, 2, 3], "prompt": ["a b", "", "c d"]})
            client = mapper._client
            second = await mapper({"id": [4], "prompt": ["e f"]})
            assert mapper._client is client  # one client for the actor's life
        finally:
            await mapper.aclose()
    assert first["id"] == [1, 2, 3]
    assert first["error"][0] is None and first["error"][2] is None
    assert first["error"][1].startswith("ValidationError: prompt")
    assert first["result"][1] is None and first["attempts"][1] == 0
    assert second["error"] == [None]
    assert emu.stats()["endpoints"]["completions/pythia12b"] == {"ok": 3}


@pytest.mark.anyio
async def test_missing_input_column(anyio_backend: str) -> None:
    mapper = CompletionMapper(endpoint="pythia12b", credentials=wx.StaticToken("t"))
    with pytest.raises(wx.ValidationError, match="'prompt'"):
        await mapper({"text": ["x"]})


def test_example_reads_jsonl_and_writes_parquet(tmp_path: Path) -> None:
    source, destination = tmp_path / "prompts.jsonl", tmp_path / "answers"
    source.write_text(
        "".join(json.dumps({"id": i, "prompt": f"city {i}"}) + "\n" for i in range(50))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "examples/ray_batch.py", str(source), str(destination)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "50 rows written" in done.stdout and "0 failed" in done.stdout
    import pyarrow.parquet as pq

    table = pq.read_table(destination)
    assert sorted(table.column("id").to_pylist()) == list(range(50))
    assert all(table.column("result").to_pylist())
    assert "test-secret-key" not in done.stdout + done.stderr
