"""A local Baidu Wenxin Workshop (Qianfan v1) server for tests and benchmarks.

An ASGI app (Starlette) that speaks the protocol of docs/protocol.md: OAuth tokens and
bce-auth-v1 signatures, chat and completions for any endpoint name (with the ERNIE fields and
function calls), embeddings, streams, request checks, rate limits and quotas, seeded faults
and statistics. Needs the `emulator` extra.

    emulator = Emulator(EmulatorConfig(seed=1, faults={"http_503": 0.1}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app)) as http:
        ...
    async with serve(emulator) as base_url:      # a real loopback socket (asyncio only)
        ...
"""

from ._config import FAULT_NAMES, PRESET_EMBEDDINGS, STREAM_FAULTS, EmbeddingModel, EmulatorConfig
from ._emulator import Emulator, create_app
from ._server import main, serve
from ._text import count_tokens
from ._wire import ERROR_MESSAGES, ConnectionDropped

__all__ = [
    "ERROR_MESSAGES",
    "FAULT_NAMES",
    "PRESET_EMBEDDINGS",
    "STREAM_FAULTS",
    "ConnectionDropped",
    "EmbeddingModel",
    "Emulator",
    "EmulatorConfig",
    "count_tokens",
    "create_app",
    "main",
    "serve",
]
