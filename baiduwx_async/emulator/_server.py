"""Running the emulator: `serve()` inside a test's event loop, `main()` from the command line."""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ._config import EmulatorConfig
from ._emulator import Emulator
from ._uvicorn import bind, serve_app

__all__ = ["main", "serve"]


@asynccontextmanager
async def serve(
    emulator: Emulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: int = 2,
) -> AsyncIterator[str]:
    """Serve `emulator` with uvicorn on a loopback socket while the block runs.

    Yields the base URL (``http://127.0.0.1:PORT``; port 0 picks a free one). On exit the
    server stops accepting, lets running answers finish for up to `shutdown_timeout`
    seconds, and closes. uvicorn runs on asyncio only: under trio this raises RuntimeError.
    """
    async with serve_app(
        emulator.app, host=host, port=port, shutdown_timeout=shutdown_timeout, what="emulator"
    ) as url:
        yield url


def banner(emulator: Emulator, host: str, port: int) -> str:
    """What `main` prints on start: where it listens, the credentials it accepts (test
    values of its own, never real ones), the line that points a client at it, and where its
    counters are."""
    reachable = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    base_url = f"http://{f'[{reachable}]' if ':' in reachable else reachable}:{port}"
    config = emulator.config
    lines = [f"Wenxin Workshop emulator on {base_url}"]
    lines += [f"  OAuth API Key / Secret Key: {ak} / {sk}" for ak, sk in config.credentials.items()]
    lines += [
        f"  IAM Access Key / Secret Key: {ak} / {sk}" for ak, sk in config.iam_credentials.items()
    ]
    for ak, sk in list(config.credentials.items())[:1]:
        pairs = {"QIANFAN_AK": ak, "QIANFAN_SK": sk, "QIANFAN_BASE_URL": base_url}
        lines.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in pairs.items()))
    lines.append(f"counters: curl {base_url}/_emulator/stats")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m baiduwx_async.emulator",
        description="Serve a local Baidu Wenxin Workshop (Qianfan v1) emulator.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.json",
        help='a JSON object of EmulatorConfig fields, e.g. {"qps": 50, "seed": 1}',
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level (default info; the access log is off)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m baiduwx_async.emulator [--host H] [--port P] [--config F]``."""
    parser = _parser()
    args = parser.parse_args(argv)
    config = EmulatorConfig()
    emulator = Emulator(config)
    if args.config is not None:
        try:
            changes = json.loads(args.config.read_text(encoding="utf-8"))
            if not isinstance(changes, dict):
                raise TypeError("the config file must hold a JSON object")
            emulator.configure(**changes)
        except (OSError, ValueError, TypeError) as exc:
            parser.error(f"--config {args.config}: {exc}")
    import uvicorn

    sock = bind(args.host, args.port)  # our socket, for its TCP_NODELAY
    print(banner(emulator, args.host, sock.getsockname()[1]), flush=True)
    uvicorn.run(
        emulator.app,
        fd=sock.fileno(),
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        ws="none",
        proxy_headers=False,  # nothing reads the client address or scheme
    )
    return 0
