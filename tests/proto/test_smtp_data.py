"""Tests for the DATA and BDAT content readers and the bare CR/LF detector (SMTP smuggling)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto.smtp.data import MAX_HELD_LINE, ChunkReader, DataReader, LineEndingChecker

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def has_bare(data: bytes) -> bool:
    """Reference: a CR not followed by LF, or an LF not preceded by CR (RFC 5321 §2.3.8)."""
    return _BARE.search(data) is not None


def reference_data(wire: bytes) -> tuple[bytes, bytes, bool] | None:
    """Reference DATA reader: (unstuffed content, what follows ".CRLF", bare) or None if open."""
    if wire.startswith(b".\r\n"):
        return b"", wire[3:], False
    end = wire.find(b"\r\n.\r\n")
    if end < 0:
        return None
    raw = wire[: end + 2]
    # RFC 5321 §4.5.2: drop the first "." of every line that starts with one.
    content = re.sub(rb"(\A|\r\n)\.", rb"\1", raw)
    return content, wire[end + 5 :], has_bare(raw)


def read_in_pieces(pieces: list[bytes]) -> tuple[bytes, bytes, bool, bool]:
    """Drive a DataReader with `pieces` as they arrive; (content, rest, done, bare)."""
    checker = LineEndingChecker()
    reader = DataReader(checker=checker)
    buffer = bytearray()
    content = bytearray()
    done = False
    for piece in pieces:
        buffer += piece
        while True:
            chunk, done = reader.feed(buffer)
            content += chunk
            if done or not chunk:
                break
        # Memory stays bounded: a line is never held beyond MAX_HELD_LINE octets.
        assert done or len(buffer) <= MAX_HELD_LINE
    return bytes(content), bytes(buffer), done, checker.finish()


# --- LineEndingChecker ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "bare"),
    [
        ([b""], False),
        ([b"a\r\nb\r\n"], False),
        ([b"\r\n\r\n"], False),
        ([b"a\nb"], True),
        ([b"a\rb"], True),
        ([b"\n"], True),
        ([b"\r"], True),  # a trailing lone CR counts at the end
        ([b"a\r\n\r"], True),
        ([b"\r\r\n"], True),
        ([b"\r\n\n"], True),
        # Across chunk borders:
        ([b"a\r", b"\nb"], False),
        ([b"a\r", b"", b"\nb"], False),
        ([b"a\r", b"b"], True),
        ([b"a\r", b"\r\n"], True),
        ([b"a", b"\n"], True),
        ([b"a\r\n", b"\n"], True),
        ([b"\r", b"\n", b"\r", b"\n"], False),
        ([b"a\r"], True),
    ],
)
def test_line_ending_checker(chunks: list[bytes], bare: bool) -> None:
    checker = LineEndingChecker()
    for chunk in chunks:
        checker.feed(chunk)
    assert checker.finish() is bare


def test_line_ending_checker_stays_bare() -> None:
    checker = LineEndingChecker()
    checker.feed(b"a\nb")
    checker.feed(b"\r\n")
    assert checker.bare
    assert checker.finish()


_line_bytes = st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"xy"]), max_size=30)


@given(parts=_line_bytes, cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=10))
def test_line_ending_checker_ignores_chunk_borders(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    checker = LineEndingChecker()
    for a, b in itertools.pairwise(bounds):
        checker.feed(data[a:b])
    assert checker.finish() is has_bare(data)


# --- DataReader -------------------------------------------------------------------------------

MESSAGE = (
    b"..leading dot\r\n"
    b"Subject: test\r\n"
    b"\r\n"
    b"line\r\n"
    b"..\r\n"
    b"...x\r\n"
    b".\tdot tab\r\n"
    b"a.\r\n"
    b"\r\n"
    b".\r\n"
    b"NEXT COMMAND\r\n"
)
MESSAGE_CONTENT = (
    b".leading dot\r\nSubject: test\r\n\r\nline\r\n.\r\n..x\r\n\tdot tab\r\na.\r\n\r\n"
)
MESSAGE_REST = b"NEXT COMMAND\r\n"


def test_data_reader_whole_message() -> None:
    assert read_in_pieces([MESSAGE]) == (MESSAGE_CONTENT, MESSAGE_REST, True, False)


@pytest.mark.parametrize("split", range(len(MESSAGE) + 1))
def test_data_reader_at_every_split_point(split: int) -> None:
    result = read_in_pieces([MESSAGE[:split], MESSAGE[split:]])
    assert result == (MESSAGE_CONTENT, MESSAGE_REST, True, False)


@pytest.mark.parametrize("first", range(0, len(MESSAGE), 7))
@pytest.mark.parametrize("second", range(3, len(MESSAGE), 11))
def test_data_reader_at_pairs_of_split_points(first: int, second: int) -> None:
    a, b = sorted((first, second))
    result = read_in_pieces([MESSAGE[:a], MESSAGE[a:b], MESSAGE[b:]])
    assert result == (MESSAGE_CONTENT, MESSAGE_REST, True, False)


def test_data_reader_byte_by_byte() -> None:
    pieces = [MESSAGE[i : i + 1] for i in range(len(MESSAGE))]
    assert read_in_pieces(pieces) == (MESSAGE_CONTENT, MESSAGE_REST, True, False)


@pytest.mark.parametrize(
    ("wire", "content", "rest"),
    [
        (b".\r\n", b"", b""),  # the empty message
        (b".\r\nQUIT\r\n", b"", b"QUIT\r\n"),
        (b"..\r\n.\r\n", b".\r\n", b""),  # a line that is just "." (stuffed to "..")
        (b"\r\n.\r\n", b"\r\n", b""),
        (b"x\r\n.\r\n.\r\n", b"x\r\n", b".\r\n"),  # stops at the first terminator
        (b"x\r\n..\r\n.\r\n", b"x\r\n.\r\n", b""),
    ],
)
def test_data_reader_edges(wire: bytes, content: bytes, rest: bytes) -> None:
    for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        assert read_in_pieces(pieces) == (content, rest, True, False)


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r"],
)
def test_only_crlf_dot_crlf_ends_data(fake_end: bytes) -> None:
    wire = b"hello" + fake_end + b"MAIL FROM:<x@example.org>\r\n"
    for split in range(len(wire) + 1):
        content, rest, done, bare = read_in_pieces([wire[:split], wire[split:]])
        assert not done
        assert bare
        assert b"MAIL FROM" in content
        assert rest == b""
    # Closed properly later, the whole is one message with bare line endings.
    content, rest, done, bare = read_in_pieces([wire + b".\r\n"])
    assert (done, bare, rest) == (True, True, b"")


@pytest.mark.parametrize(
    ("partial", "content", "held"),
    [
        (b"x", b"", b"x"),
        (b"x\r\n", b"x\r\n", b""),
        (b"x\r\n.", b"x\r\n", b"."),
        (b"x\r\n.\r", b"x\r\n", b".\r"),
        (b".", b"", b"."),
        (b".\r", b"", b".\r"),
        (b"x\r", b"", b"x\r"),
    ],
)
def test_data_reader_holds_back_a_possible_terminator(
    partial: bytes, content: bytes, held: bytes
) -> None:
    # Held-back octets are not checked yet: they may still become a CRLF.
    assert read_in_pieces([partial]) == (content, held, False, False)


def test_data_reader_after_done_consumes_nothing() -> None:
    reader = DataReader()
    buffer = bytearray(b".\r\nNOOP\r\n")
    assert reader.feed(buffer) == (b"", True)
    assert reader.feed(buffer) == (b"", True)
    assert buffer == b"NOOP\r\n"


def test_data_reader_passes_a_very_long_line_through() -> None:
    line = b"." + b"y" * (3 * MAX_HELD_LINE) + b".\r\n"  # dot-stuffed first char, dot at the end
    wire = line + b".\r\n"
    expected = line[1:]
    for size in (1000, MAX_HELD_LINE - 1, MAX_HELD_LINE + 1, len(wire)):
        pieces = [wire[i : i + size] for i in range(0, len(wire), size)]
        assert read_in_pieces(pieces) == (expected, b"", True, False)


def test_data_reader_long_line_ending_in_cr_at_the_hold_point() -> None:
    body = b"z" * (MAX_HELD_LINE + 10) + b"\r"
    pieces = [body, b"\n.\r\n"]
    assert read_in_pieces(pieces) == (body + b"\n", b"", True, False)


_wire_parts = st.lists(
    st.sampled_from([b"a", b"b c", b".", b"..", b"\r\n", b"\r\n.\r\n", b"\r", b"\n", b".\r\n"]),
    max_size=25,
)


@settings(max_examples=400)
@given(parts=_wire_parts, cuts=st.lists(st.integers(min_value=0, max_value=100), max_size=8))
def test_data_reader_matches_the_reference(parts: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(parts)
    points = sorted({min(c, len(wire)) for c in cuts})
    bounds = [0, *points, len(wire)]
    pieces = [wire[a:b] for a, b in itertools.pairwise(bounds)]
    content, rest, done, bare = read_in_pieces(pieces)
    expected = reference_data(wire)
    if expected is None:
        assert not done
        # What was handed on so far is a prefix of the unstuffed stream.
        assert re.sub(rb"(\A|\r\n)\.", rb"\1", wire).startswith(content)
    else:
        assert done
        assert (content, rest, bare) == expected


# --- ChunkReader (BDAT) -----------------------------------------------------------------------


def test_chunk_reader_takes_exactly_the_chunk() -> None:
    checker = LineEndingChecker()
    reader = ChunkReader(5, checker)
    buffer = bytearray(b"ab")
    assert reader.feed(buffer) == (b"ab", False)
    assert reader.remaining == 3
    buffer += b"c\r\nBDAT 1 LAST\r\n"
    assert reader.feed(buffer) == (b"c\r\n", True)
    assert buffer == b"BDAT 1 LAST\r\n"
    assert not checker.finish()


def test_chunk_reader_zero_octets() -> None:
    buffer = bytearray(b"QUIT\r\n")
    assert ChunkReader(0, LineEndingChecker()).feed(buffer) == (b"", True)
    assert buffer == b"QUIT\r\n"


def test_chunk_reader_empty_buffer() -> None:
    reader = ChunkReader(3, LineEndingChecker())
    assert reader.feed(bytearray()) == (b"", False)
    assert reader.remaining == 3


def test_chunk_reader_does_no_unstuffing_and_reports_bare_endings() -> None:
    checker = LineEndingChecker()
    data = b"..x\r\n.\r\n"
    buffer = bytearray(data + b"tail")
    assert ChunkReader(len(data), checker).feed(buffer) == (data, True)
    assert not checker.finish()
    checker = LineEndingChecker()
    ChunkReader(4, checker).feed(bytearray(b"a\nb\r"))
    ChunkReader(1, checker).feed(bytearray(b"\n"))
    assert checker.finish()  # the LF after a chunk ending in CR is fine, the first LF is not


@given(data=st.binary(max_size=60), cuts=st.lists(st.integers(min_value=0, max_value=60)))
def test_chunk_reader_any_split(data: bytes, cuts: list[int]) -> None:
    size = len(data) // 2
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    reader = ChunkReader(size, LineEndingChecker())
    buffer = bytearray()
    got = bytearray()
    done = size == 0
    for a, b in itertools.pairwise(bounds):
        buffer += data[a:b]
        if not done:
            chunk, done = reader.feed(buffer)
            got += chunk
    assert done
    assert bytes(got) == data[:size]
    assert bytes(buffer) == data[size:]
