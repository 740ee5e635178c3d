from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baiduwx_async._errors import StreamError
from baiduwx_async._sse import SSEDecoder, SSEEvent


def decode(pieces: list[bytes], **kwargs: int) -> tuple[list[SSEEvent], str | None]:
    """Every event the pieces give, and the message of the error that ended them."""
    decoder = SSEDecoder(**kwargs)
    events: list[SSEEvent] = []
    try:
        for piece in pieces:
            events += decoder.feed(piece)
        events += decoder.close()
    except StreamError as exc:
        # Once failed, a decoder keeps failing.
        with pytest.raises(StreamError):
            decoder.feed(b"data: {}\n")
        with pytest.raises(StreamError):
            decoder.close()
        return events, exc.message
    return events, None


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def pieces_of(data: bytes) -> st.SearchStrategy[list[bytes]]:
    return st.one_of(
        st.lists(st.integers(0, len(data)), max_size=40).map(lambda points: cut(data, points)),
        st.just([data[i : i + 1] for i in range(len(data))]),
    )


# ---------------------------------------------------------------- properties

text = st.text(st.characters(codec="utf-8"), max_size=20)
name = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8)
line_kinds = st.one_of(
    st.tuples(st.just("data"), st.sampled_from(["", " ", "  ", "\t"]), text),
    st.tuples(st.just("bare"), text),
    st.tuples(st.just("comment"), text),
    st.tuples(st.just("event"), name),
    st.tuples(st.just("skip"), st.sampled_from(["id: 7", "retry: 3000", "id:", ""])),
    st.tuples(st.just("done"), st.sampled_from(["[DONE]", " [DONE] "])),
)
terminators = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """An encoded stream and the events it must give."""
    out: list[bytes] = [b"\xef\xbb\xbf"] if draw(st.booleans()) else []
    expected: list[SSEEvent] = []
    pending: str | None = None
    done = False
    for kind, *args in draw(st.lists(line_kinds, max_size=12)):
        if kind == "data":
            payload = json.dumps({"result": args[1]}, ensure_ascii=False)
            line = "data:" + args[0] + payload
            event = SSEEvent(payload, pending, bare=False)
        elif kind == "bare":
            line = json.dumps({"error_code": 336003, "error_msg": args[0]}, ensure_ascii=False)
            event = SSEEvent(line, pending, bare=True)
        elif kind == "comment":
            line, event = ":" + json.dumps(args[0], ensure_ascii=False), None
        elif kind == "event":
            line, event = "event: " + args[0], None
            if not done:
                pending = args[0]
        elif kind == "skip":
            line, event = args[0], None
        else:
            line, event = "data:" + args[0], None
            done = True
        if event is not None and not done:
            expected.append(event)
            pending = None
        out += [line.encode(), draw(terminators)]
    if draw(st.booleans()) and out:
        out.pop()  # the last line ends with the stream, not with a terminator
    return b"".join(out), expected


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_split_gives_the_events_of_the_whole(data: st.DataObject) -> None:
    stream, expected = data.draw(streams())
    assert decode([stream]) == (expected, None)
    assert decode(data.draw(pieces_of(stream))) == (expected, None)


noise = st.lists(
    st.sampled_from(
        [
            *(b"data:", b"data: [DONE]", b"event: x", b":", b"\r", b"\n", b" ", b"{}", b"x" * 9),
            # invalid UTF-8, a whole and a cut-off 中, a BOM
            *(b"\xff", b"\xe4\xb8\xad", b"\xe4", b"\xef\xbb\xbf"),
        ]
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.one_of(st.binary(max_size=200), noise), st.sampled_from([8, 16, 1 << 20]))
def test_arbitrary_bytes_only_raise_stream_error(
    data: st.DataObject, stream: bytes, limit: int
) -> None:
    whole = decode([stream], max_line_bytes=limit)
    # Where an error is raised does not depend on the cuts either.
    assert decode(data.draw(pieces_of(stream)), max_line_bytes=limit) == whole


# ---------------------------------------------------------------- one line kind each


def feed_all(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


CHUNK = '{"id":"as-1","sentence_id":0,"is_end":false,"result":"当然可以，"}'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"", []),
        (b": keep-alive", []),
        (b": OPENROUTER PROCESSING", []),
        (b"id: 42", []),
        (b"retry: 3000", []),
        (b"data: " + CHUNK.encode(), [SSEEvent(CHUNK, None, bare=False)]),
        (b"data:" + CHUNK.encode(), [SSEEvent(CHUNK, None, bare=False)]),
        (b"data: \t " + CHUNK.encode(), [SSEEvent(CHUNK, None, bare=False)]),
        (b"data:", [SSEEvent("", None, bare=False)]),
        (b'{"error_code":336003}', [SSEEvent('{"error_code":336003}', None, bare=True)]),
        (b"not json", [SSEEvent("not json", None, bare=True)]),
        (b"data: [DONE]", []),
    ],
)
def test_protocol_table(line: bytes, expected: list[SSEEvent]) -> None:
    assert feed_all(line + b"\n\n") == expected
    assert feed_all(line) == expected


def test_event_field_attaches_to_the_next_event_only() -> None:
    stream = b"event: error\n: c\nid: 1\ndata: {}\n\ndata: {}\nevent:  x \n{}\n"
    assert feed_all(stream) == [
        SSEEvent("{}", "error", bare=False),
        SSEEvent("{}", None, bare=False),
        SSEEvent("{}", "x", bare=True),
    ]


def test_data_lines_are_never_joined() -> None:
    assert feed_all(b"data: {}\ndata: []\n\n") == [
        SSEEvent("{}", None, bare=False),
        SSEEvent("[]", None, bare=False),
    ]


def test_done_ends_the_stream() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: {}\n\ndata:  [DONE] \r\n\r\ndata: {}\n") == [
        SSEEvent("{}", None, bare=False)
    ]
    assert decoder.done
    assert decoder.feed(b"data: {}\n\xff\xff\n" + b"x" * (2 << 20)) == []
    assert decoder.close() == []


def test_done_before_a_bad_line_in_the_same_chunk_wins() -> None:
    decoder = SSEDecoder(max_line_bytes=12)
    assert decoder.feed(b"data: [DONE]\n" + b"x" * 20 + b"\n") == []
    assert decoder.done


def test_bom_at_stream_start_is_dropped() -> None:
    assert feed_all(b"\xef\xbb", b"\xbfdata: {}\n") == [SSEEvent("{}", None, bare=False)]
    # Anywhere else it is part of the line.
    assert feed_all(b"\n\xef\xbb\xbf{}\n") == [SSEEvent("\ufeff{}", None, bare=True)]


def test_crlf_split_between_chunks_is_one_terminator() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef\xbb\xbfx\r") == [SSEEvent("x", None, bare=True)]
    assert decoder.feed(b"\ny\r") == [SSEEvent("y", None, bare=True)]
    assert decoder.feed(b"\n") == []
    # The \n after a \r was used up once; another \n is an empty line of its own.
    assert decoder.feed(b"\nz\n") == [SSEEvent("z", None, bare=True)]
    assert decoder.close() == [] and decoder.feed(b"") == []


def test_cr_at_the_end_of_the_stream_ends_the_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: {}\r") == [SSEEvent("{}", None, bare=False)]
    assert decoder.close() == []


def test_lone_cr_and_mixed_terminators() -> None:
    assert feed_all(b"data: 1\rdata: 2\r\ndata: 3\n\r\n\rdata: 4") == [
        SSEEvent(str(i), None, bare=False) for i in range(1, 5)
    ]


def test_final_line_without_terminator_is_flushed_by_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {}\n\ndata: {"result":"') == [SSEEvent("{}", None, bare=False)]
    assert decoder.feed('好"}'.encode()) == []
    assert decoder.close() == [SSEEvent('{"result":"好"}', None, bare=False)]
    assert decoder.close() == []


def test_utf8_character_split_across_chunks() -> None:
    encoded = "data: 文心\n".encode()
    assert feed_all(*(encoded[i : i + 1] for i in range(len(encoded)))) == [
        SSEEvent("文心", None, bare=False)
    ]


@pytest.mark.parametrize("line", [b"data: \xff\xfe", b"\xe4\xb8", b"event: \x80"])
def test_invalid_utf8_raises_stream_error(line: bytes) -> None:
    decoder = SSEDecoder()
    with pytest.raises(StreamError, match="not valid UTF-8"):
        decoder.feed(line + b"\n")


def test_comments_may_hold_any_bytes() -> None:
    assert feed_all(b": \xff\xfe\nid: \x80\ndata: {}\n") == [SSEEvent("{}", None, bare=False)]


def test_events_before_an_error_come_first() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: {}\ndata: \xff\ndata: []\n") == [SSEEvent("{}", None, bare=False)]
    with pytest.raises(StreamError, match="not valid UTF-8"):
        decoder.close()


def test_line_at_the_limit_is_accepted() -> None:
    decoder = SSEDecoder(max_line_bytes=16)
    assert decoder.feed(b"data: " + b"1" * 10 + b"\n") == [SSEEvent("1" * 10, None, False)]
    assert decoder.feed(b"data: " + b"1" * 6) == []
    assert decoder.feed(b"2" * 4) == []
    assert decoder.feed(b"\r") == [SSEEvent("1" * 6 + "2" * 4, None, False)]


def test_complete_line_over_the_limit_raises() -> None:
    decoder = SSEDecoder(max_line_bytes=16)
    with pytest.raises(StreamError, match="stream line exceeds 16 bytes"):
        decoder.feed(b"data: " + b"1" * 11 + b"\n")


def test_tail_over_the_limit_raises_after_the_events_before_it() -> None:
    decoder = SSEDecoder(max_line_bytes=16)
    assert decoder.feed(b"data: {}\n" + b"x" * 17) == [SSEEvent("{}", None, bare=False)]
    with pytest.raises(StreamError, match="exceeds 16 bytes"):
        decoder.feed(b"\n")


def test_huge_line_in_small_pieces_raises_before_buffering_past_the_limit() -> None:
    limit = 64 * 1024
    decoder = SSEDecoder(max_line_bytes=limit)
    piece = b"data: " + b"x" * 1018
    fed = 0
    with pytest.raises(StreamError, match=f"exceeds {limit} bytes") as info:
        for _ in range(10_000):
            decoder.feed(piece)
            fed += len(piece)
            assert len(decoder._buf) <= limit
    assert limit - len(piece) < fed <= limit
    assert info.value.retryable is False
    assert len(decoder._buf) == 0
    with pytest.raises(StreamError):
        decoder.feed(b"\n")


def test_many_short_lines_in_a_big_chunk_are_fine() -> None:
    decoder = SSEDecoder(max_line_bytes=16)
    events = decoder.feed(b"data: {}\n\n" * 1000)
    assert events == [SSEEvent("{}", None, bare=False)] * 1000


def test_event_is_immutable_and_typed() -> None:
    event = SSEEvent("{}", "x", bare=True)
    assert (event.data, event.event, event.bare) == ("{}", "x", True)
    with pytest.raises(AttributeError):
        event.data = "y"  # type: ignore[misc]
