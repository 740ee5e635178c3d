"""What every `baiduwx` subcommand shares: exit codes, the command's own error, the one
line shown for an error (credentials masked), and the types of the options."""

from __future__ import annotations

import argparse
import importlib.util
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
    "error_line",
    "exit_code_for",
    "generation_params",
    "has_module",
    "leaf",
    "positive_float",
    "positive_int",
    "print_error",
    "redact",
    "shard",
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


def leaf(exc: BaseException) -> BaseException:
    """The most telling exception inside (possibly nested) exception groups."""
    inner = getattr(exc, "exceptions", None)
    if not isinstance(inner, tuple) or not inner:
        return exc
    leaves = [leaf(e) for e in inner if isinstance(e, BaseException)]
    for kind in (KeyboardInterrupt, wx.AuthenticationError, wx.ValidationError, wx.WenxinError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if leaves else exc


def generation_params(args: argparse.Namespace) -> dict[str, Any]:
    """The generation parameters given on the command line (the others keep the defaults)."""
    names = ("temperature", "top_p", "top_k", "penalty_score")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


# --- the types of the options


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0: {text}")
    return value


def shard(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N), 1 <= I <= N."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N, e.g. 2/4: {text!r}") from None
    if not sep or n < 1 or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N: {text!r}")
    return i, n
