"""The `baiduwx` command: chat, complete, batch, emulator, demo.

```
baiduwx chat ENDPOINT [PROMPT]          stream an answer; without PROMPT, a conversation
baiduwx complete ENDPOINT PROMPT        stream a completion
baiduwx batch ENDPOINT IN.jsonl -o OUT.jsonl [--chat|--complete] [--concurrency N] [--qps Q]
              [--tpm T] [--redis URL] [--shard I/N]
baiduwx embed ENDPOINT IN.jsonl -o OUT.jsonl [--texts-per-request K] (and batch's run options)
baiduwx emulator [--host H] [--port P] [--config FILE]
baiduwx serve --model NAME=KIND:ENDPOINT ... [--host H] [--port P]   an OpenAI-compatible API
baiduwx demo                            everything above against an in-process emulator
```

Credentials come from the environment (`QIANFAN_AK`/`QIANFAN_SK`, ... and
`QIANFAN_BASE_URL`), as for `AsyncClient()`. Exit codes: 0 success, 1 failure (some batch
items failed, a service or connection error), 2 usage error (bad option or parameter),
3 authentication failure (including no credentials), 130 interrupted (Ctrl-C).

Only this module is loaded for `baiduwx --help`; the batch, demo and emulator parts are
imported by the subcommands that need them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from typing import Any

import baiduwx_async as wx

__all__ = [
    "EXIT_AUTH",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "main",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130

_SECRET_RE = re.compile(
    r"((?:access_token|client_secret|client_id|secret_key|api_key)=)[^&\s'\"]+"
    r"|(bce-auth-v1/)\S+",
    re.IGNORECASE,
)


class CommandError(Exception):
    """A failure of the command itself (a missing file, a locked output), with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def has_module(name: str) -> bool:
    """Whether `name` can be imported (found without importing it)."""
    return importlib.util.find_spec(name) is not None


def redact(text: str) -> str:
    """`text` with anything that looks like a credential in a URL or header masked."""
    return _SECRET_RE.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


def error_line(exc: BaseException) -> str:
    """The one line shown for an error: our errors' own text, which holds no secret."""
    if isinstance(exc, wx.APIError) and exc.code is None and exc.status_code is None:
        # raised before any answer (no credentials): its str() would show "[HTTP None]"
        text = " ".join(filter(None, (exc.message, exc.hint and f"- {exc.hint}")))
    elif isinstance(exc, wx.WenxinError | CommandError):
        text = str(exc) or type(exc).__name__
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return "error: " + redact(" ".join(text.split()))


def print_error(exc: BaseException) -> None:
    sys.stderr.write(error_line(exc) + "\n")
    sys.stderr.flush()


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, CommandError):
        return exc.exit_code
    if isinstance(exc, wx.ValidationError):
        return EXIT_USAGE
    if isinstance(exc, wx.AuthenticationError):
        return EXIT_AUTH
    return EXIT_FAILURE


def _leaf(exc: BaseException) -> BaseException:
    """The most telling exception inside (possibly nested) exception groups."""
    inner = getattr(exc, "exceptions", None)
    if not isinstance(inner, tuple) or not inner:
        return exc
    leaves = [_leaf(e) for e in inner if isinstance(e, BaseException)]
    for kind in (KeyboardInterrupt, wx.AuthenticationError, wx.ValidationError, wx.WenxinError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if leaves else exc


# --- the subcommands (each in its own module, imported when it runs)


def generation_params(args: argparse.Namespace) -> dict[str, Any]:
    """The generation parameters given on the command line (the others keep the defaults)."""
    names = ("temperature", "top_p", "top_k", "penalty_score")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _run_chat(args: argparse.Namespace) -> int:
    from ._cli_chat import run_chat

    return run_chat(args)


def _run_complete(args: argparse.Namespace) -> int:
    from ._cli_chat import run_complete

    return run_complete(args)


def _run_batch(args: argparse.Namespace) -> int:
    from ._cli_batch import run_batch
    from ._cli_secrets import REDIS_URL_ENV, url_option

    args.redis = url_option(args.redis, option="--redis", env=REDIS_URL_ENV)
    return run_batch(args)


def _run_embed(args: argparse.Namespace) -> int:
    from ._cli_embed import run_embed
    from ._cli_secrets import REDIS_URL_ENV, url_option

    args.redis = url_option(args.redis, option="--redis", env=REDIS_URL_ENV)

    return run_embed(args)


def _run_demo(args: argparse.Namespace) -> int:
    from ._cli_demo import run_demo

    return run_demo(args)


def _run_emulator(args: argparse.Namespace) -> int:
    from .emulator import main as emulator_main

    argv = ["--host", args.host, "--port", str(args.port), "--log-level", args.log_level]
    if args.config is not None:
        argv += ["--config", args.config]
    try:
        return emulator_main(argv)
    except SystemExit as exc:  # the emulator's own usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


# --- the parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0: {text}")
    return value


def _shard(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N), 1 <= I <= N."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N, e.g. 2/4: {text!r}") from None
    if not sep or n < 1 or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N: {text!r}")
    return i, n


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation parameters (server defaults when omitted)")
    group.add_argument("--temperature", type=float, help="randomness, in (0, 1]")
    group.add_argument("--top-p", type=float, help="nucleus sampling, in [0, 1]")
    group.add_argument("--top-k", type=int, help="sample among the k likeliest tokens, >= 1")
    group.add_argument("--penalty-score", type=float, help="repetition penalty, in [1, 2]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baiduwx",
        description="Baidu Wenxin Workshop (Qianfan) from the command line. Credentials are "
        "read from QIANFAN_AK/QIANFAN_SK (or QIANFAN_ACCESS_KEY/QIANFAN_SECRET_KEY, or "
        "QIANFAN_ACCESS_TOKEN); QIANFAN_BASE_URL overrides the service address.",
        epilog="exit codes: 0 ok, 1 failure, 2 usage error, 3 authentication failure, "
        "130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {wx.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    chat = commands.add_parser(
        "chat",
        help="stream a chat answer, or hold a conversation",
        description="Stream the answer to PROMPT; without PROMPT, hold a conversation: "
        "one question per line, the history sent each time; an empty line, /exit or "
        "end of input ends it.",
    )
    chat.add_argument("endpoint", metavar="ENDPOINT", help="the chat endpoint, e.g. completions")
    chat.add_argument("prompt", metavar="PROMPT", nargs="?", help="the question")
    _add_generation_options(chat)
    chat.set_defaults(run=_run_chat)

    complete = commands.add_parser("complete", help="stream a completion of PROMPT")
    complete.add_argument("endpoint", metavar="ENDPOINT", help="the completions endpoint")
    complete.add_argument("prompt", metavar="PROMPT", help="the text to complete")
    _add_generation_options(complete)
    complete.set_defaults(run=_run_complete)

    batch = commands.add_parser(
        "batch",
        help="run a JSONL file of prompts, resumably",
        description="Send every line of INPUT (JSON objects with an 'id' and 'messages' or "
        "'prompt') and append one result line per id to OUTPUT. Ids already in OUTPUT are "
        "skipped, so running the same command again resumes an interrupted batch.",
    )
    batch.add_argument("endpoint", metavar="ENDPOINT")
    batch.add_argument("input", metavar="INPUT.jsonl")
    batch.add_argument("-o", "--output", metavar="OUTPUT.jsonl", required=True)
    mode = batch.add_mutually_exclusive_group()
    mode.add_argument("--chat", dest="mode", action="store_const", const="chat")
    mode.add_argument("--complete", dest="mode", action="store_const", const="complete")
    batch.set_defaults(mode="chat")
    batch.add_argument("--concurrency", type=_positive_int, default=16, metavar="N",
                       help="requests in flight at most (default 16)")  # fmt: skip
    batch.add_argument("--qps", type=_positive_float, metavar="Q",
                       help="requests started per second at most")  # fmt: skip
    batch.add_argument("--tpm", type=_positive_float, metavar="T",
                       help="tokens per minute at most: each request is charged its "
                       "estimated tokens ahead and settled by its answer's usage")  # fmt: skip
    batch.add_argument("--redis", metavar="URL",
                       help="share the token, the --qps/--tpm quotas and the slow-down after "
                       "rate-limit answers with every run using this "
                       "Redis (redis://[:password@]host:port/db; extra 'redis'); default "
                       "$BAIDUWX_REDIS_URL, the place for a URL with a password")  # fmt: skip
    batch.add_argument("--shard", type=_shard, metavar="I/N",
                       help="run only shard I of N (1-based): the ids whose stable hash "
                       "falls to it, so N runs split one INPUT without overlap")  # fmt: skip
    batch.add_argument("--http-backend", choices=["httpx", "aiohttp"],
                       default="aiohttp" if has_module("aiohttp") else "httpx",
                       help="HTTP library (default aiohttp when installed: faster; the run "
                       "also uses uvloop when installed)")  # fmt: skip
    batch.add_argument("--retry-failed", action="store_true",
                       help="also send again the ids whose last line in OUTPUT failed, "
                       "appending the new outcome (an id's last line is its result)")  # fmt: skip
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_generation_options(batch)
    batch.set_defaults(run=_run_batch)

    embed = commands.add_parser(
        "embed",
        help="embed a JSONL file of texts, resumably",
        description="Embed every line of INPUT (JSON objects with an 'id' and a 'text') and "
        "append one line per id to OUTPUT ({'id', 'ok', 'embedding'}); resumable like batch.",
    )
    embed.add_argument("endpoint", metavar="ENDPOINT", help="e.g. embedding-v1, bge_large_zh")
    embed.add_argument("input", metavar="INPUT.jsonl")
    embed.add_argument("-o", "--output", metavar="OUTPUT.jsonl", required=True)
    embed.add_argument("--texts-per-request", type=_positive_int, default=None, metavar="K",
                       help="texts sent in one request (default 16, and 1 for tao_8k)")  # fmt: skip
    for action in batch._actions:  # the same run options as batch
        if action.dest in (
            "concurrency", "qps", "tpm", "redis", "shard", "http_backend", "no_progress"
        ):  # fmt: skip
            embed._add_action(action)
    embed.set_defaults(run=_run_embed, mode="embed")

    emulator = commands.add_parser("emulator", help="serve a local Wenxin Workshop emulator")
    emulator.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    emulator.add_argument("--config", metavar="FILE", help="JSON object of EmulatorConfig fields")
    emulator.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    emulator.set_defaults(run=_run_emulator)

    from ._cli_serve import add_parser as add_serve_parser

    add_serve_parser(commands, _positive_int, _positive_float)

    demo = commands.add_parser(
        "demo", help="a tour against an in-process emulator (no credentials, no network)"
    )
    demo.set_defaults(run=_run_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.run(args)
        return code
    except BaseException as exc:
        if isinstance(exc, SystemExit | GeneratorExit):
            raise
        exc = _leaf(exc)
        if isinstance(exc, KeyboardInterrupt):
            sys.stdout.write("\n")
            sys.stdout.flush()
            sys.stderr.write("interrupted\n")
            return EXIT_INTERRUPTED
        if os.environ.get("BAIDUWX_DEBUG"):
            raise
        print_error(exc)
        return exit_code_for(exc)


if __name__ == "__main__":
    sys.exit(main())
