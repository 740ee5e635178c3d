"""
orjson's decoder, for the large answers where JSON decoding is most of a call's cost
(embeddings: thousands of numbers an answer, about 8 times faster than `json`). Loaded by
`_protocol` on the first large answer when orjson is installed (the `aiohttp` extra brings
it), never at import.
"""

from __future__ import annotations

import re

import orjson

__all__ = ["loads"]

# Before 3.9.15 orjson crashed the process on deeply nested JSON, which any server could
# send: such an orjson is not used (importing this module fails, and json decodes).
_release = re.match(r"(\d+)\.(\d+)\.(\d+)", orjson.__version__)
if _release is None or tuple(map(int, _release.groups())) < (3, 9, 15):
    raise ImportError(f"orjson {orjson.__version__} is older than 3.9.15")

# orjson reads an integer outside 64 bits (from -2**63 to 2**64 - 1) as a float, where json
# keeps it exact. A body with a run of 19 digits that is not part of a fraction or an
# exponent goes to json. Found by mapping every digit to "0", the other characters of a
# number to "x" and the rest to " ": ten times faster than a regular expression.
_NUMBER_SHAPES = bytes(
    48 if 48 <= byte <= 57 else 120 if byte in b".eE" else 32 for byte in range(256)
)
_LONG_RUN = b"0" * 19
_LONG_INTEGER = b" " + _LONG_RUN


def loads(body: bytes) -> object:
    """The decoded body, exactly as `json.loads` would give it; `ValueError` when orjson
    cannot say the same (NaN, UTF-16, a lone surrogate, a long integer...): json decides."""
    shapes = body.translate(_NUMBER_SHAPES)
    if _LONG_INTEGER in shapes or shapes.startswith(_LONG_RUN):
        raise ValueError("an integer orjson would round")
    return orjson.loads(body)
