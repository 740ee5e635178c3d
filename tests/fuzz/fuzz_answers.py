"""atheris harness: any status and body read as an answer gives a result or our error."""

from __future__ import annotations

import contextlib
import sys

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    from baiduwx_async._errors import WenxinError
    from baiduwx_async._models import ChatResponse, CompletionResponse, decode
    from baiduwx_async._protocol import error_in_answer


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    status = provider.ConsumeIntInRange(100, 599)
    retry_after = provider.ConsumeUnicodeNoSurrogates(30)
    body = provider.ConsumeBytes(len(data))
    error, decoded = error_in_answer(
        status, "reason", {"retry-after": retry_after}, body, request_id=None, now=0.0
    )
    if error is None:
        for cls in (ChatResponse, CompletionResponse):
            with contextlib.suppress(WenxinError):
                decode(decoded, cls)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
