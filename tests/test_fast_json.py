"""Large answers are decoded by orjson when it is installed, with exactly json's result:
whatever orjson would read differently (or not at all) is left to json."""

from __future__ import annotations

import importlib
import json
import random
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import baiduwx_async._fast_json as _fast_json
import baiduwx_async._protocol as protocol
from baiduwx_async._protocol import LARGE_ANSWER_BYTES, loads_or_none

from .processes import REPO


def padded(fragment: str, key: str = "v") -> bytes:
    """A JSON object holding `fragment` under `key`, padded past the large-answer size."""
    pad = "x" * LARGE_ANSWER_BYTES
    return f'{{"pad":"{pad}","{key}":{fragment}}}'.encode()


def json_only(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def embedding_answer(seed: int, long_integers: bool = False) -> bytes:
    rng = random.Random(seed)
    data = [
        {"object": "embedding", "embedding": [rng.uniform(-1, 1) for _ in range(384)], "index": i}
        for i in range(16)
    ]
    numbers = [rng.random() * 10.0 ** rng.randint(-320, 300) for _ in range(500)]
    # integers of up to 18 digits (the guard sends 19 or more to json), or up to 70 bits
    bits = 70 if long_integers else 59
    integers = [rng.choice((1, -1)) * rng.randrange(2 ** rng.randint(1, bits)) for _ in range(200)]
    body = {"id": "as-1", "object": "embedding_list", "created": 1, "data": data}
    body |= {"floats": numbers, "integers": integers}
    return json.dumps(body).encode()


TRICKY = {
    "NaN and infinities": padded("[NaN, Infinity, -Infinity]"),
    "an integer past 64 bits": padded("123456789012345678901234567890"),
    "a negative integer past 64 bits": padded("-9223372036854775809"),
    "the largest 64-bit integers": padded("[18446744073709551615, -9223372036854775808]"),
    "a long integer first": b"1234567890123456789012345" + b" " * LARGE_ANSWER_BYTES,
    "a long integer after a newline": padded("[1,\n12345678901234567890123]"),
    "a long integer in an exponent": padded("1e-0000000000000000000000001"),
    "an exponent past double range": padded("[1e400, -1e-400]"),
    "a lone surrogate escape": padded('"\\ud800"'),
    "a surrogate pair escape": padded('"\\ud83d\\ude00"'),
    "duplicate keys": padded('{"a": 1, "a": 2}'),
    "a raw control character": padded('"a\x01b"'),
    "invalid UTF-8": padded('"caf\udce9"'.encode("utf-8", "surrogateescape").decode("latin-1")),
    "a UTF-8 byte order mark": b"\xef\xbb\xbf" + padded("1"),
    "UTF-16": padded("1").decode().encode("utf-16"),
    "deep nesting": padded("[" * 5000 + "]" * 5000),
    "trailing data": padded("1") + b"{}",
    "long fractions": padded("[0.00040015552639682817, 12345678901234567890123.5]"),
}


@pytest.mark.parametrize("body", TRICKY.values(), ids=TRICKY.keys())
def test_a_large_answer_decodes_exactly_as_json_would(body: bytes) -> None:
    assert len(body) >= LARGE_ANSWER_BYTES or body.startswith((b"\xff\xfe", b"\xfe\xff"))
    assert repr(loads_or_none(body)) == repr(json_only(body))


def test_embedding_answers_decode_as_json_would() -> None:
    for seed in range(50):
        body = embedding_answer(seed)
        # orjson itself reads these (nothing in them is sent to json) ...
        assert repr(_fast_json.loads(body)) == repr(json.loads(body))
        assert repr(loads_or_none(body)) == repr(json.loads(body))
        # ... and with integers past 64 bits json reads them, to the same result
        body = embedding_answer(seed, long_integers=True)
        assert repr(loads_or_none(body)) == repr(json.loads(body))


# Every place a JSON integer can start: a guard that missed one would let orjson round it.
BEFORE_AN_INTEGER = {
    "start of the body": b"INTEGER" + b" " * LARGE_ANSWER_BYTES,
    "a value": padded("INTEGER"),
    "an array's start": padded("[INTEGER]"),
    "a comma": padded("[1,INTEGER]"),
    **{
        f"a {name}": padded(f"[1,{space}INTEGER]")
        for name, space in {"space": " ", "tab": "\t", "newline": "\n", "return": "\r"}.items()
    },
    "a colon and white space": padded(" \r\n\tINTEGER"),
}
EDGES = [2**64, 2**64 + 1, -(2**63) - 1, 10**22 + 3, -(10**30) - 7]


@pytest.mark.parametrize("integer", [*EDGES, 2**64 - 1, -(2**63)])
@pytest.mark.parametrize("around", BEFORE_AN_INTEGER.values(), ids=BEFORE_AN_INTEGER.keys())
def test_integers_near_64_bits_are_exact_wherever_they_stand(around: bytes, integer: int) -> None:
    body = around.replace(b"INTEGER", str(integer).encode())
    assert len(body) >= LARGE_ANSWER_BYTES
    assert repr(loads_or_none(body)) == repr(json.loads(body))
    if integer in EDGES:
        with pytest.raises(ValueError, match="an integer orjson would round"):
            _fast_json.loads(body)


@given(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from(["", " ", "\t", "\r\n"]))
def test_any_integer_decodes_exactly(integer: int, space: str) -> None:
    body = padded("[0," + space + str(integer) + "]")
    assert repr(loads_or_none(body)) == repr(json.loads(body))


@pytest.fixture
def json_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """json.loads fails inside _protocol: only the fast decoder can read a body."""

    def refuse(text: object) -> object:
        raise ValueError("json.loads was called")

    monkeypatch.setattr(protocol.json, "loads", refuse)


def test_orjson_decodes_large_answers_when_installed(json_refused: None) -> None:
    rng = random.Random(1)
    data = [{"embedding": [rng.uniform(-1, 1) for _ in range(384)], "index": i} for i in range(16)]
    body = json.dumps({"id": "as-1", "data": data}).encode()
    decoded = loads_or_none(body)
    assert isinstance(decoded, dict) and len(decoded["data"]) == 16
    # ... and never small ones, nor what it would read differently
    assert loads_or_none(b'{"a": 1}') is None
    assert loads_or_none(TRICKY["an integer past 64 bits"]) is None


def test_without_orjson_json_decodes_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "_fast_loads", lambda: None)
    body = embedding_answer(2)
    assert loads_or_none(body) == json.loads(body)


def test_importing_the_package_does_not_import_orjson() -> None:
    code = (
        "import sys, baiduwx_async, baiduwx_async._protocol as p\n"
        "assert 'orjson' not in sys.modules, 'imported at import'\n"
        "assert p.loads_or_none(b'{\"a\": 1}') == {'a': 1}\n"
        "assert 'orjson' not in sys.modules, 'imported for a small answer'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_an_orjson_that_crashes_on_deep_nesting_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orjson

    monkeypatch.setattr(orjson, "__version__", "3.9.14")
    monkeypatch.delitem(sys.modules, "baiduwx_async._fast_json", raising=False)
    with pytest.raises(ImportError, match=r"older than 3\.9\.15"):
        importlib.import_module("baiduwx_async._fast_json")
