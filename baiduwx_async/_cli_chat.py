"""`baiduwx chat` and `baiduwx complete`: answers streamed to the terminal as they arrive."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from typing import Any

import anyio

import baiduwx_async as wx

from .cli import EXIT_FAILURE, EXIT_OK, generation_params, print_error

__all__ = ["MAX_HISTORY_CHARS", "run_chat", "run_complete"]

#: Chat history kept in an interactive conversation, in characters (the service's limit).
MAX_HISTORY_CHARS = 4800


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def _stream_answer(
    open_stream: Callable[[wx.AsyncClient], wx.ChatStream | wx.CompletionStream],
    credentials: wx.Credentials,
    store: wx.TokenStore | None = None,
) -> tuple[str, bool]:
    """Print one streamed answer as it arrives; its text and whether to clear the history."""
    clear = False
    printed = False
    try:
        async with wx.AsyncClient(credentials=credentials, token_store=store) as client:
            async with open_stream(client) as stream:
                async for chunk in stream:
                    clear = clear or chunk.need_clear_history
                    if chunk.result:
                        printed = True
                        _write(chunk.result)
            return stream.text, clear
    finally:
        if printed:
            _write("\n")


def _chat_opener(
    endpoint: str, messages: list[wx.MessageParam], params: dict[str, Any]
) -> Callable[[wx.AsyncClient], wx.ChatStream]:
    return lambda client: client.chat_stream(endpoint, messages, **params)


def run_chat(args: argparse.Namespace) -> int:
    credentials = wx.credentials_from_env()
    params = generation_params(args)
    if args.prompt is not None:
        messages: list[wx.MessageParam] = [{"role": "user", "content": args.prompt}]
        anyio.run(_stream_answer, _chat_opener(args.endpoint, messages, params), credentials)
        return EXIT_OK
    return _converse(args.endpoint, params, credentials)


def _trim_history(history: list[wx.MessageParam], limit: int = MAX_HISTORY_CHARS) -> None:
    """Drop the oldest exchanges until the conversation fits the service's limit."""
    while len(history) > 1 and sum(len(m["content"]) for m in history) > limit:
        del history[:2]


async def _check_options(
    endpoint: str, params: dict[str, Any], credentials: wx.Credentials
) -> None:
    """Bad options raise `ValidationError` now rather than at every question (nothing is
    sent: a stream is checked when made, and sent only when entered)."""
    async with wx.AsyncClient(credentials=credentials) as client:
        client.chat_stream(endpoint, [wx.user("?")], **params)


def _converse(endpoint: str, params: dict[str, Any], credentials: wx.Credentials) -> int:
    """A conversation on the terminal: `> ` prompts, each answer streamed; the history is
    sent with every question. An empty line, `/exit` or end of input ends it."""
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):  # not on every platform
            import readline  # noqa: F401 - line editing for input()
    anyio.run(_check_options, endpoint, params, credentials)
    store = wx.MemoryTokenStore()  # one token for the whole conversation
    history: list[wx.MessageParam] = []
    status = EXIT_OK
    while True:
        try:
            line = input("> ")
        except EOFError:
            _write("\n")
            break
        question = line.strip()
        if not question or question == "/exit":
            break
        history.append({"role": "user", "content": question})
        _trim_history(history)
        try:
            answer, clear = anyio.run(
                _stream_answer, _chat_opener(endpoint, list(history), params), credentials, store
            )
        except wx.AuthenticationError:
            raise
        except wx.WenxinError as exc:  # this question failed; the conversation goes on
            print_error(exc)
            history.pop()
            status = EXIT_FAILURE
            continue
        if clear:
            history.clear()
            sys.stderr.write("(the service asked to start the conversation afresh)\n")
        else:
            history.append({"role": "assistant", "content": answer})
    return status


def run_complete(args: argparse.Namespace) -> int:
    credentials = wx.credentials_from_env()
    params = generation_params(args)
    anyio.run(
        _stream_answer,
        lambda client: client.complete_stream(args.endpoint, args.prompt, **params),
        credentials,
    )
    return EXIT_OK
