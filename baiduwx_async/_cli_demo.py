"""`baiduwx demo`: a tour of the client against an emulator served in this process.

No credentials and no network: the emulator listens on 127.0.0.1 and the client uses its
default credentials. Shows a chat, a streamed completion and a 500-prompt batch.
"""

from __future__ import annotations

import argparse
import sys
import time

import anyio
from rich.console import Console

import baiduwx_async as wx

from ._cli_common import EXIT_FAILURE, EXIT_OK
from ._cli_progress import ProgressBar

__all__ = ["run_demo"]

CHAT_ENDPOINT = "mpt30b"
COMPLETIONS_ENDPOINT = "pythia12b"
BATCH_SIZE = 500
BATCH_CONCURRENCY = 32  # beyond ~40, httpcore's pool bookkeeping costs more than it buys
#: Emulator speeds: slow enough to watch a stream, and a per-request latency that shows
#: what concurrency buys in the batch.
LATENCY = 0.05
FIRST_TOKEN_LATENCY = 0.05
STREAM_TOKENS_PER_SECOND = 40.0
BATCH_TOKENS_PER_SECOND = 1000.0


def _say(console: Console, text: str, style: str | None = None) -> None:
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


async def _demo(console: Console) -> bool:
    from .emulator import Emulator, EmulatorConfig, serve

    config = EmulatorConfig(
        seed=1,
        latency=LATENCY,
        first_token_latency=FIRST_TOKEN_LATENCY,
        tokens_per_second=STREAM_TOKENS_PER_SECOND,
    )
    emulator = Emulator(config)
    api_key, secret_key = next(iter(config.credentials.items()))
    async with serve(emulator) as base_url:
        console.rule(f"Wenxin Workshop emulator on {base_url}")
        credentials = wx.OAuthCredentials(api_key, secret_key)
        async with wx.AsyncClient(
            credentials=credentials, base_url=base_url, max_concurrency=BATCH_CONCURRENCY
        ) as client:
            console.rule(f"1. chat with {CHAT_ENDPOINT}")
            question = "Please introduce The Great Wall"
            _say(console, f"> {question}", "bold")
            reply = await client.chat(CHAT_ENDPOINT, [wx.user(question)])
            _say(console, reply.result)
            _say(console, f"({reply.usage.total_tokens} tokens, id {reply.id})", "dim")

            console.rule(f"2. streamed completion with {COMPLETIONS_ENDPOINT}")
            prompt = "Introduce the city Beijing"
            _say(console, f"> {prompt}", "bold")
            async with client.complete_stream(COMPLETIONS_ENDPOINT, prompt) as stream:
                async for chunk in stream:
                    console.file.write(chunk.result)
                    console.file.flush()
            console.file.write("\n")
            usage = stream.usage.total_tokens if stream.usage else "?"
            _say(console, f"({usage} tokens, one chunk per sentence)", "dim")

            console.rule(f"3. batch of {BATCH_SIZE} prompts, concurrency {BATCH_CONCURRENCY}")
            emulator.configure(tokens_per_second=BATCH_TOKENS_PER_SECOND)
            prompts = [f"Tell me about place number {i}" for i in range(BATCH_SIZE)]
            bar = ProgressBar(
                BATCH_SIZE,
                Console(stderr=True),
                enabled=sys.stderr.isatty(),
                description=f"{BATCH_SIZE} prompts",
            )
            started = time.monotonic()
            with bar:
                async with client.iter_batch_complete(
                    COMPLETIONS_ENDPOINT, prompts, concurrency=BATCH_CONCURRENCY
                ) as results:
                    async for result in results:
                        bar.advance(result.ok)
            elapsed = time.monotonic() - started

    stats = emulator.stats()
    console.rule("summary")
    _say(
        console,
        f"batch: {bar.done - bar.failed} ok, {bar.failed} failed in {elapsed:.2f} s "
        f"= {bar.done / elapsed:.0f} items/s "
        f"(one at a time would take ~{BATCH_SIZE * (LATENCY + FIRST_TOKEN_LATENCY):.0f} s "
        "of latency alone)",
    )
    _say(
        console,
        f"emulator: {stats['calls']} calls, max {stats['max_in_flight']} in flight, "
        f"{stats['token_requests']} token request(s), "
        f"{stats['prompt_tokens'] + stats['completion_tokens']} tokens",
    )
    return bar.failed == 0


def run_demo(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    return EXIT_OK if anyio.run(_demo, console) else EXIT_FAILURE
