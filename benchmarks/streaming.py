"""
CPU cost of turning a Baidu SSE body into parsed chunks, per chunk.

Run: `python benchmarks/streaming.py`. Everything is in memory, so only the decoding
is measured: no sockets, no event loop. Contenders:

- floor: split the bytes on newlines, decode and `json.loads` every data line; any SSE
  client must do at least this much.
- baiduwx_async: `SSEDecoder.feed` + `json.loads(event.data)`.
- baiduwx_async chat_stream: the public API end to end: `client.chat_stream()` over an
  `httpx.MockTransport` that serves the pieces, iterating every typed, checked `ChatChunk`
  (the CPU of the iteration only: the client is made and the loop started untimed).
- httpx-sse: the pipeline `aiter_sse` runs (incremental UTF-8 decode, `SSELineDecoder`,
  `SSEDecoder`) + `json.loads(sse.data)`.

The official `qianfan` SDK has no stand-alone parser to put here: it splits and decodes
lines inside its aiohttp response iterator. Its streams are measured end to end against
the emulator in `calls.py` (scenario 3).
"""

from __future__ import annotations

import codecs
import gc
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baiduwx_async._sse import SSEDecoder

CHUNKS = 20_000
RUNS = 5
SENTENCES = [
    "当然可以，",
    "以下是一首关于春天的短诗：",
    "春风拂面柳丝长，桃花笑映小池塘。",
    "燕子归来寻旧垒，田间农夫正插秧。",
    "Hope this helps! 希望你喜欢。",
]

Parser = Callable[[Iterable[bytes]], int]


def build_body(chunks: int = CHUNKS) -> tuple[bytes, list[bytes]]:
    """The body of a stream of `chunks` chunks, and the same body one event per piece."""
    events = []
    completion = 0
    for i in range(chunks):
        result = SENTENCES[i % len(SENTENCES)]
        completion += len(result)
        chunk = {
            "id": "as-vb0m37ti8y",
            "object": "chat.completion",
            "created": 1709089502 + i // 100,
            "sentence_id": i,
            "is_end": i == chunks - 1,
            "is_truncated": False,
            "result": result,
            "need_clear_history": False,
            "finish_reason": "normal",
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": completion,
                "total_tokens": 5 + completion,
            },
        }
        line = json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))
        events.append(b"data: " + line.encode() + b"\n\n")
    return b"".join(events), events


def split_fixed(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def parse_floor(pieces: Iterable[bytes]) -> int:
    n = 0
    rest = b""
    loads = json.loads
    for piece in pieces:
        lines = (rest + piece).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line:
                # json.loads(bytes) would sniff the encoding in Python; decoding is cheaper.
                loads(line[6:].decode())
                n += 1
    return n


def parse_ours(pieces: Iterable[bytes]) -> int:
    n = 0
    decoder = SSEDecoder()
    loads = json.loads
    for piece in pieces:
        for event in decoder.feed(piece):
            loads(event.data)
            n += 1
    for event in decoder.close():
        loads(event.data)
        n += 1
    return n


class ClientParser:
    """`chat_stream` end to end over an `httpx.MockTransport`; one event loop per call."""

    def __init__(self) -> None:
        #: CPU seconds of the last call's iteration alone, for `measure`.
        self.last_seconds = 0.0

    def __call__(self, pieces: Iterable[bytes]) -> int:
        import anyio
        import httpx

        import baiduwx_async as wx

        class Pieces(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                for piece in pieces:
                    yield piece

        def answer(request: httpx.Request) -> httpx.Response:
            headers = {"content-type": "text/event-stream"}
            return httpx.Response(200, headers=headers, stream=Pieces())

        async def run() -> int:
            transport = httpx.MockTransport(answer)
            async with (
                httpx.AsyncClient(transport=transport) as http,
                wx.AsyncClient(credentials=wx.StaticToken("t"), http_client=http) as client,
            ):
                n = 0
                start = time.process_time()
                async with client.chat_stream("mpt30b", [wx.user("hi")]) as stream:
                    async for _ in stream:
                        n += 1
                self.last_seconds = time.process_time() - start
                return n

        return anyio.run(run)


parse_client = ClientParser()


def make_httpx_sse() -> Parser | None:
    try:
        from httpx_sse._decoders import SSEDecoder as HxDecoder
        from httpx_sse._decoders import SSELineDecoder
    except ImportError:
        return None

    def parse(pieces: Iterable[bytes]) -> int:
        # Mirrors EventSource.aiter_sse: httpx's aiter_text, then the line decoder.
        n = 0
        text_decoder = codecs.getincrementaldecoder("utf-8")()
        lines = SSELineDecoder()
        decoder = HxDecoder()
        loads = json.loads
        for piece in pieces:
            for line in lines.decode(text_decoder.decode(piece)):
                sse = decoder.decode(line.rstrip("\n"))
                if sse is not None:
                    loads(sse.data)
                    n += 1
        for line in lines.flush():
            sse = decoder.decode(line.rstrip("\n"))
            if sse is not None:
                loads(sse.data)
                n += 1
        return n

    return parse


def measure(parsers: dict[str, Parser], pieces: list[bytes]) -> dict[str, float]:
    """Median CPU seconds per chunk over RUNS runs of each parser.

    The parsers take turns within each round, so a slow spell of a shared machine
    costs them all alike instead of skewing one of them.
    """
    times: dict[str, list[float]] = {name: [] for name in parsers}
    for _ in range(RUNS):
        for name, parse in parsers.items():
            gc.collect()
            start = time.process_time()
            count = parse(pieces)
            spent = getattr(parse, "last_seconds", None)  # a parser that times itself
            times[name].append(time.process_time() - start if spent is None else spent)
            assert count == CHUNKS, (name, count)
    return {name: statistics.median(t) / CHUNKS for name, t in times.items()}


def main() -> None:
    body, per_event = build_body()
    workloads = {
        "whole body": [body],
        "4 KiB pieces": split_fixed(body, 4096),
        "1 chunk per piece": per_event,
    }
    contenders: dict[str, Parser | None] = {
        "floor (split + json.loads)": parse_floor,
        "baiduwx_async SSEDecoder": parse_ours,
        "baiduwx_async chat_stream (end to end)": parse_client,
        "httpx-sse": make_httpx_sse(),
    }
    sdk = "qianfan SDK: no stand-alone parser to measure (see calls.py, scenario 3)"
    available = {name: parse for name, parse in contenders.items() if parse is not None}
    python = sys.version.split()[0]
    print(f"{CHUNKS} chunks, {len(body):,} bytes, median of {RUNS} runs, Python {python}")
    print()
    print("| workload | parser | CPU µs/chunk | chunks/s | vs floor |")
    print("|---|---|---:|---:|---:|")
    for workload, pieces in workloads.items():
        results = measure(available, pieces)
        floor = results["floor (split + json.loads)"]
        for name in contenders:
            if name not in results:
                print(f"| {workload} | {name} | not installed | | |")
                continue
            per_chunk = results[name]
            print(
                f"| {workload} | {name} | {per_chunk * 1e6:.2f} | {1 / per_chunk:,.0f} "
                f"| {per_chunk / floor:.2f}x |"
            )
    print()
    print(sdk)


if __name__ == "__main__":
    main()
