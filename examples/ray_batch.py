"""Completions for every prompt of a JSONL file on Ray Data, written as Parquet.

    python examples/ray_batch.py prompts.jsonl answers/

Each input line is `{"id": ..., "prompt": "..."}`. The Parquet files in `answers/` hold
every input column plus `result`, `prompt_tokens`, `completion_tokens`, `error` and
`attempts`. With QIANFAN_AK/QIANFAN_SK (or the other credential variables) set, this asks
the real service; otherwise it starts the emulator in a process of its own on a loopback
port, since Ray's workers are processes too.

On a cluster, start each node with the credentials in its environment and point every
actor at one Redis (`"redis_url": "redis://cache:6379/0"` below): one access token and
one qps budget for the whole cluster.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import ray

from baiduwx_async.ray import CompletionMapper

CREDENTIAL_VARIABLES = ("QIANFAN_AK", "QIANFAN_ACCESS_KEY", "QIANFAN_ACCESS_TOKEN")


@contextlib.contextmanager
def service_environment() -> Iterator[None]:
    """The real service if credentials are set, else an emulator process; either way the
    environment Ray starts its workers with says where and who."""
    if any(os.environ.get(name) for name in CREDENTIAL_VARIABLES):
        yield
        return
    command = [sys.executable, "-m", "baiduwx_async.emulator", "--port", "0"]
    emulator = subprocess.Popen(
        [*command, "--log-level", "warning"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert emulator.stdout is not None
        found = re.search(r"http://127\.0\.0\.1:\d+", emulator.stdout.readline())
        assert found, "the emulator did not start"
        os.environ.update(
            QIANFAN_AK="test-api-key", QIANFAN_SK="test-secret-key", QIANFAN_BASE_URL=found[0]
        )
        yield
    finally:
        emulator.terminate()
        emulator.wait()


def main(source: str, destination: str) -> None:
    with service_environment():
        ray.init(num_cpus=2, include_dashboard=False)  # or ray.init(address="auto")
        try:
            prompts = ray.data.read_json(source)
            answers = prompts.map_batches(
                CompletionMapper,
                compute=ray.data.ActorPoolStrategy(size=2),  # two actors, one client each
                num_cpus=0.5,  # they wait on the network: leave cores to Ray's readers
                batch_size=64,
                fn_constructor_kwargs={"endpoint": "pythia12b", "max_concurrency": 16},
            )
            answers.write_parquet(destination)  # runs the pipeline, once
            # read back what was written: `answers.count()` would run the pipeline again
            written = ray.data.read_parquet(destination)
            failed = written.filter(lambda row: row["error"] is not None).count()
            print(f"{written.count()} rows written to {destination}, {failed} failed")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
