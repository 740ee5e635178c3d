"""`baiduwx serve`: the OpenAI-compatible gateway in front of one client, with uvicorn.

One `AsyncClient` serves every request of the process: one access token, one rate limit,
one connection pool. Several processes (or machines) share the token and the `--qps` /
`--rpm` quota through `--redis`, exactly as `baiduwx batch` runs do.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import AsyncExitStack
from typing import Any

import anyio

import baiduwx_async as wx

from ._calls import is_loopback as _is_loopback
from ._cli_common import EXIT_OK, EXIT_USAGE, CommandError, has_module, redact
from ._cli_secrets import REDIS_URL_ENV, url_option

__all__ = ["API_KEYS_ENV", "gateway_keys", "model_routes", "run_serve"]

#: Comma-separated gateway keys; kept out of the process list, unlike `--api-key`.
API_KEYS_ENV = "BAIDUWX_GATEWAY_API_KEYS"

logger = logging.getLogger("baiduwx_async.gateway")


def model_routes(specs: list[str]) -> dict[str, str]:
    """`NAME=KIND:ENDPOINT` options as `create_app`'s `models` (checked there)."""
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep or not name.strip() or not target:
            raise CommandError(
                f"--model {spec!r}: expected NAME=KIND:ENDPOINT, e.g. ernie=chat:completions",
                EXIT_USAGE,
            )
        if name in models:
            raise CommandError(f"--model {name!r} is given twice", EXIT_USAGE)
        models[name] = target
    return models


def gateway_keys(args: argparse.Namespace) -> list[str]:
    """The keys of `--api-key` and of the environment, in that order, without repeats."""
    keys = list(args.api_key or [])
    keys += [key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip()]
    return list(dict.fromkeys(keys))


class _Redacting(logging.Filter):
    """Masks anything shaped like a credential, whatever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def _setup_logging(level: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(_Redacting())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logger.setLevel(level.upper())  # one line per request at INFO
    return handler


def _banner(url: str, models: dict[str, str], keys: int) -> str:
    lines = [f"baiduwx gateway on {url}/v1 (OpenAI's API)"]
    lines += [f"  model {name} -> {target}" for name, target in models.items()]
    lines.append(
        f"  {keys} API key(s) required as 'Authorization: Bearer KEY'"
        if keys
        else "  no API key required (loopback only)"
    )
    lines += [
        "Point the openai package at it:",
        f"  export OPENAI_BASE_URL={url}/v1",
        "  export OPENAI_API_KEY=" + ("<one of the gateway keys>" if keys else "unused"),
        '  python -c "import openai; print(openai.OpenAI().models.list())"',
    ]
    return "\n".join(lines)


async def _serve(
    args: argparse.Namespace,
    credentials: wx.Credentials,
    models: dict[str, str],
    keys: list[str],
) -> None:
    from ._cli_shared import shared_state
    from .emulator._uvicorn import bind, url_of, uvicorn_server
    from .gateway import create_app

    async with AsyncExitStack() as stack:
        shared, _ = await shared_state(args, stack)
        limits: dict[str, Any] = (
            {} if "rate_limiter" in shared else {"qps": args.qps, "rpm": args.rpm, "tpm": args.tpm}
        )
        client = await stack.enter_async_context(
            wx.AsyncClient(
                credentials=credentials,
                max_concurrency=args.max_concurrency,
                http_backend=args.http_backend,
                **limits,
                **shared,
            )
        )
        app = create_app(client, models, keys, max_body_bytes=args.max_body_bytes)
        sock = bind(args.host, args.port)
        server = uvicorn_server(app, log_level=args.log_level)
        shown = url_of(sock)
        print(_banner(shown, models, len(keys)), flush=True)
        await server.serve(sockets=[sock])


def run_serve(args: argparse.Namespace) -> int:
    models = model_routes(args.model)
    if args.api_key:
        sys.stderr.write(
            "warning: a key given with --api-key is visible to every user of this machine "
            f"in the process list; prefer the environment variable {API_KEYS_ENV}\n"
        )
    keys = gateway_keys(args)
    if not keys and not _is_loopback(args.host):
        raise CommandError(
            f"refusing to listen on {args.host} without API keys: anyone who reaches it "
            f"would spend your quota. Set {API_KEYS_ENV} (or --api-key), or use a "
            "loopback address such as 127.0.0.1",
            EXIT_USAGE,
        )
    try:
        from .gateway import parse_models

        parse_models(models)
    except ImportError as exc:
        raise CommandError(f"{exc}: pip install 'baiduwx_async[gateway]'", EXIT_USAGE) from None
    credentials = wx.credentials_from_env()
    handler = _setup_logging(args.log_level)
    try:
        anyio.run(
            _serve,
            args,
            credentials,
            models,
            keys,
            backend_options={"use_uvloop": has_module("uvloop")},
        )
    finally:
        logging.getLogger().removeHandler(handler)
    return EXIT_OK


def add_parser(commands: Any, positive_int: Any, positive_float: Any) -> None:
    """The `serve` subcommand's options (called by `cli.build_parser`)."""
    serve = commands.add_parser(
        "serve",
        help="serve an OpenAI-compatible API in front of your Wenxin deployments",
        description="Serve OpenAI's chat, completions, embeddings and models API, answered by "
        "the Wenxin endpoints given with --model. Gateway keys come from "
        f"{API_KEYS_ENV} (comma-separated) or --api-key; without any, only a loopback "
        "address may be used.",
    )
    serve.add_argument("--model", action="append", required=True, metavar="NAME=KIND:ENDPOINT",
                       help="an OpenAI model name and what answers it: KIND is chat, "
                       "completions or embeddings (repeatable)")  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--api-key", action="append", metavar="KEY",
                       help=f"a key callers must send (repeatable); prefer {API_KEYS_ENV}, "
                       "which the process list does not show")  # fmt: skip
    serve.add_argument("--qps", type=positive_float, metavar="Q",
                       help="upstream requests started per second at most")  # fmt: skip
    serve.add_argument("--rpm", type=positive_float, metavar="R",
                       help="upstream requests started per minute at most")  # fmt: skip
    serve.add_argument("--tpm", type=positive_float, metavar="T",
                       help="upstream tokens per minute at most: each request is charged its "
                       "estimated tokens ahead and settled by its answer's usage")  # fmt: skip
    serve.add_argument("--max-concurrency", type=positive_int, metavar="N",
                       help="upstream requests and open streams at most (default: no limit "
                       "but the pool of 100 connections)")  # fmt: skip
    serve.add_argument("--redis", metavar="URL",
                       help="share the token, the --qps/--rpm/--tpm quotas and the slow-down "
                       "after rate-limit answers with every process using this Redis "
                       "(redis://[:password@]host:port/db; extra 'redis'); default "
                       f"${REDIS_URL_ENV}, the place for a URL with a password")  # fmt: skip
    serve.add_argument("--http-backend", choices=["httpx", "aiohttp"],
                       default="aiohttp" if has_module("aiohttp") else "httpx",
                       help="HTTP library upstream (default aiohttp when installed)")  # fmt: skip
    serve.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, metavar="N",
                       help="largest request body accepted (default 1 MiB)")  # fmt: skip
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"],
                       help="info logs one line per request (default)")  # fmt: skip
    serve.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    args.redis = url_option(args.redis, option="--redis", env=REDIS_URL_ENV)
    return run_serve(args)
