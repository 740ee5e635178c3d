"""atheris harness: the SSE decoder and chunk parsing take any bytes, split anywhere."""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    from baiduwx_async._errors import WenxinError
    from baiduwx_async._models import ChatChunk, decode
    from baiduwx_async._protocol import loads_or_none
    from baiduwx_async._sse import SSEDecoder


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    cuts = sorted(provider.ConsumeIntListInRange(4, 0, max(len(data), 1)))
    body = provider.ConsumeBytes(len(data))
    decoder = SSEDecoder(max_line_bytes=4096)
    try:
        events = []
        start = 0
        for cut in [*cuts, len(body)]:
            events += decoder.feed(body[start:cut])
            start = cut
        events += decoder.close()
        for event in events:
            decode(loads_or_none(event.data), ChatChunk)
    except WenxinError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
