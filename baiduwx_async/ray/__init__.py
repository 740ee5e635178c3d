"""
Batches on Ray Data (extra `ray`): callable classes for `ray.data.Dataset.map_batches`.

```python
import ray
from baiduwx_async.ray import CompletionMapper

ds = ray.data.read_json("prompts.jsonl")                      # rows with a "prompt" column
out = ds.map_batches(CompletionMapper, concurrency=4, batch_size=64,
                     fn_constructor_kwargs={"endpoint": "pythia12b", "qps": 20,
                                            "redis_url": "redis://cache:6379/0"})
out.write_parquet("answers/")
```

Each actor builds one `AsyncClient` on its own event loop at its first batch and keeps it
for its life; a batch's rows go out concurrently, at most `max_concurrency` of them at
once. The output batch is the input batch (every column kept) plus:

| column | value |
|---|---|
| `result` (`embedding` for `EmbeddingMapper`) | the answer's text (the vector), or `None` |
| `prompt_tokens`, `completion_tokens` | the answer's `usage`, or `None` |
| `error` | `None`, or `"ClassName: message"` when the row failed after its retries |
| `attempts` | HTTP attempts the row took |

One row's failure never fails the batch, and every row is answered exactly once per run of
its block (Ray may run a block again when a worker dies: rows are then sent again).

**Limits and the access token.** With `redis_url`, every actor on every node shares one
access token (`RedisTokenStore`) and one request schedule (`RedisRateLimiter` with `qps`,
`rpm` and `tpm`): the limits are the cluster's. Without it each actor keeps its own token
and applies the limits on its own, so N actors may send N times `qps`; the mapper warns.

**Credentials.** Leave `credentials` unset to read the worker's environment
(`QIANFAN_AK`/`QIANFAN_SK`, ...), set through `ray.init(runtime_env={"env_vars": ...})`
or the cluster's own environment; or pass a credentials object, which travels pickled to
the workers and never prints its secrets. No secret is written to a row or a log line.
"""

from __future__ import annotations

from ._mappers import ChatMapper, CompletionMapper, EmbeddingMapper, PerActorLimitsWarning

__all__ = ["ChatMapper", "CompletionMapper", "EmbeddingMapper", "PerActorLimitsWarning"]
