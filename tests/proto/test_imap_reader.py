"""The IMAP command reader: framing, literals, limits, raw lines, split-independence."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto.imap.reader import (
    NEED_DATA,
    PAUSED,
    CommandLine,
    CommandReader,
    Event,
    LineTooLong,
    LiteralChunk,
    LiteralData,
    NeedContinuation,
    RawLine,
    StreamedLiteral,
)

Policy = Callable[[NeedContinuation], bool]


def accept_all(_: NeedContinuation) -> bool:
    return True


def drain(reader: CommandReader, out: list[Event], policy: Policy) -> None:
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            return
        assert event is not PAUSED
        out.append(event)
        if isinstance(event, NeedContinuation):
            if policy(event):
                reader.accept_literal()
            else:
                reader.reject_literal()
        elif isinstance(event, CommandLine):
            first = event.parts[0]
            assert isinstance(first, bytes)
            words = first.upper().split(b" ")
            if len(words) > 1 and words[1] in (b"IDLE", b"AUTHENTICATE"):
                reader.expect_raw_line()


def run(
    data: bytes,
    pieces: list[int] | None = None,
    policy: Policy = accept_all,
    **limits: int,
) -> list[Event]:
    """Feed `data` whole, or cut at the given sizes (then the rest), collecting events."""
    reader = CommandReader(**limits)
    events: list[Event] = []
    chunks = []
    if pieces is None:
        chunks = [data]
    else:
        pos = 0
        for size in pieces:
            chunks.append(data[pos : pos + size])
            pos += size
        chunks.append(data[pos:])
    for chunk in chunks:
        reader.feed(chunk)
        drain(reader, events, policy)
    return events


def bytewise(data: bytes, policy: Policy = accept_all, **limits: int) -> list[Event]:
    return run(data, [1] * len(data), policy, **limits)


def test_one_line_and_pipelined_lines() -> None:
    events = run(b"a1 NOOP\r\na2 CAPABILITY\r\na3 LOG")
    assert events == [CommandLine((b"a1 NOOP",)), CommandLine((b"a2 CAPABILITY",))]


def test_bare_lf_and_blank_lines() -> None:
    assert run(b"\r\n  \r\na1 NOOP\n") == [CommandLine((b"a1 NOOP",))]


def test_synchronising_literal_waits_for_the_engine() -> None:
    reader = CommandReader()
    reader.feed(b"a1 LOGIN {4}\r\n")
    event = reader.next_event()
    assert event == NeedContinuation(
        size=4,
        synchronizing=True,
        binary=False,
        streamed=False,
        tag="a1",
        command="LOGIN",
        earlier=0,
        earlier_octets=0,
    )
    assert reader.next_event() is PAUSED
    reader.accept_literal()
    assert reader.next_event() is NEED_DATA
    reader.feed(b"fred {3}\r\n")
    second = reader.next_event()
    assert isinstance(second, NeedContinuation)
    assert (second.earlier, second.earlier_octets) == (1, 4)
    reader.accept_literal()
    reader.feed(b'pw"\r\n')
    assert reader.next_event() == CommandLine(
        (b"a1 LOGIN ", LiteralData(b"fred", False), b" ", LiteralData(b'pw"', False), b"")
    )


def test_uid_command_name_and_literal8() -> None:
    events = run(b"x UID search CHARSET UTF-8 TEXT ~{2}\r\n\xc3\xa9\r\n")
    assert events[0] == NeedContinuation(2, True, True, False, "x", "UID SEARCH", 0, 0)
    assert events[1] == CommandLine(
        (b"x UID search CHARSET UTF-8 TEXT ", LiteralData(b"\xc3\xa9", True), b"")
    )


def test_rejected_synchronising_literal_abandons_the_command() -> None:
    events = run(b"a1 APPEND INBOX {999999}\r\na2 NOOP\r\n", policy=lambda ev: ev.size < 100)
    assert isinstance(events[0], NeedContinuation)
    assert events[1:] == [CommandLine((b"a2 NOOP",))]


def test_rejected_non_synchronising_literal_is_skipped_with_its_line() -> None:
    # The literal holds something that looks like a command: it must never run.
    data = b"a1 APPEND INBOX {17+}\r\nb1 DELETE INBOX\r\n {3+}\r\nxyz trailing\r\na2 NOOP\r\n"
    events = run(data, policy=lambda ev: False)
    assert [type(e) for e in events] == [NeedContinuation, CommandLine]
    assert events[1] == CommandLine((b"a2 NOOP",))
    assert bytewise(data, policy=lambda ev: False) == events


def test_large_literal_is_streamed_in_fixed_chunks() -> None:
    body = bytes(range(256)) * 40  # 10240 bytes
    data = b"a1 APPEND INBOX (\\Seen) {%d+}\r\n%s\r\na2 NOOP\r\n" % (len(body), body)
    limits = {"stream_threshold": 1000, "chunk_size": 4096}
    events = run(data, **limits)
    assert events[0] == NeedContinuation(len(body), False, False, True, "a1", "APPEND", 0, 0)
    chunks = [e for e in events if isinstance(e, LiteralChunk)]
    assert [len(c.data) for c in chunks] == [4096, 4096, 2048]
    assert [c.last for c in chunks] == [False, False, True]
    assert b"".join(c.data for c in chunks) == body
    assert events[-2] == CommandLine(
        (b"a1 APPEND INBOX (\\Seen) ", StreamedLiteral(len(body), False), b"")
    )
    assert events[-1] == CommandLine((b"a2 NOOP",))
    assert bytewise(data, **limits) == events


def test_inline_literal_total_is_bounded() -> None:
    data = b"a1 X {6}\r\nabcdef {6}\r\nghijkl\r\n"
    events = run(data, max_inline_total=10)
    assert isinstance(events[0], NeedContinuation) and not events[0].streamed
    assert isinstance(events[1], NeedContinuation) and events[1].streamed
    assert events[-1] == CommandLine(
        (b"a1 X ", LiteralData(b"abcdef", False), b" ", StreamedLiteral(6, False), b"")
    )


def test_line_too_long_is_reported_before_the_line_ends() -> None:
    reader = CommandReader(max_line=100)
    reader.feed(b"t9 SEARCH " + b"x" * 200)
    assert reader.next_event() == LineTooLong("t9")
    reader.feed(b"y" * 10_000)
    assert reader.next_event() is NEED_DATA
    assert len(reader._buf) <= 64  # memory stays bounded while skipping
    reader.feed(b"zz\r\nt10 NOOP\r\n")
    assert reader.next_event() == CommandLine((b"t10 NOOP",))


def test_line_limit_counts_text_only_and_is_exact() -> None:
    line = b"a " + b"x" * 98  # exactly 100
    assert run(line + b"\r\n", max_line=100) == [CommandLine((line,))]
    assert run(line + b"y\r\n", max_line=100) == [LineTooLong("a")]
    assert bytewise(line + b"y\r\n", max_line=100) == [LineTooLong("a")]
    with_literal = b"a X {300}\r\n" + b"L" * 300 + b" " + b"y" * 80 + b"\r\n"
    events = run(with_literal, max_line=100)
    assert isinstance(events[-1], CommandLine)


def test_many_empty_literals_hit_the_line_limit() -> None:
    events = run(b"a1 X" + b" {0+}\r\n" * 100 + b"\r\na2 NOOP\r\n", max_line=200)
    assert LineTooLong("a1") in events
    assert events[-1] == CommandLine((b"a2 NOOP",))
    assert sum(isinstance(e, NeedContinuation) for e in events) < 40


def test_overlong_line_ending_in_non_sync_literal_skips_the_literal() -> None:
    data = b"a1 " + b"x" * 200 + b" {12+}\r\nb2 DELETE \r\nrest\r\na2 NOOP\r\n"
    events = run(data, max_line=100)
    assert events == [LineTooLong("a1"), CommandLine((b"a2 NOOP",))]
    assert bytewise(data, max_line=100) == events


def test_overlong_line_ending_in_sync_literal_ends_the_command() -> None:
    data = b"a1 " + b"x" * 200 + b" {10}\r\na2 NOOP\r\n"
    assert run(data, max_line=100) == [LineTooLong("a1"), CommandLine((b"a2 NOOP",))]


def test_untagged_overlong_line() -> None:
    assert run(b"(" * 300 + b"\r\n", max_line=100) == [LineTooLong(None)]


def test_idle_done_and_authenticate_use_raw_lines() -> None:
    data = b"a1 IDLE\r\nDONE\r\na2 AUTHENTICATE PLAIN\r\n{5}\r\n\r\na3 NOOP\r\n"
    events = run(data)
    assert events == [
        CommandLine((b"a1 IDLE",)),
        RawLine(b"DONE"),
        CommandLine((b"a2 AUTHENTICATE PLAIN",)),
        RawLine(b"{5}"),  # no literal processing in raw mode
        CommandLine((b"a3 NOOP",)),  # the blank line between is no command
    ]
    assert bytewise(data) == events


def test_raw_line_can_be_empty() -> None:
    reader = CommandReader()
    reader.expect_raw_line()
    reader.feed(b"\r\na1 NOOP\r\n")
    assert reader.next_event() == RawLine(b"")
    assert reader.next_event() == CommandLine((b"a1 NOOP",))


def test_overlong_raw_line() -> None:
    reader = CommandReader(max_line=10)
    reader.expect_raw_line()
    reader.feed(b"A" * 50 + b" {5+}\r\na1 NOOP\r\n")
    assert reader.next_event() == LineTooLong(None)
    # A raw line announces no literal: the next line is a command again.
    assert reader.next_event() == CommandLine((b"a1 NOOP",))


def test_mode_changes_are_refused_mid_command() -> None:
    reader = CommandReader()
    reader.feed(b"a1 LOGIN {3}\r\n")
    reader.next_event()
    with pytest.raises(RuntimeError):
        reader.expect_raw_line()
    with pytest.raises(RuntimeError):
        reader.discard_buffered()
    reader.accept_literal()
    with pytest.raises(RuntimeError):
        reader.accept_literal()


def test_discard_buffered_after_starttls() -> None:
    reader = CommandReader()
    reader.feed(b"a1 STARTTLS\r\na2 LOGIN injected pw\r\n")
    assert reader.next_event() == CommandLine((b"a1 STARTTLS",))
    assert reader.discard_buffered() == len(b"a2 LOGIN injected pw\r\n")
    assert reader.next_event() is NEED_DATA


def test_marker_lookalikes_are_text() -> None:
    data = b'a1 SELECT !#$&\'+,-.0123456789:;<=>?@^_`|[}\r\na2 LIST "" ~foo\r\n'
    assert run(data) == [
        CommandLine((b"a1 SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}",)),
        CommandLine((b'a2 LIST "" ~foo',)),
    ]


SCRIPT = (
    b"a1 LOGIN {4}\r\nfred {6+}\r\nsecret\r\n"
    b"a2 APPEND INBOX (\\Seen) {2000+}\r\n" + b"m" * 2000 + b" ~{5}\r\nab\x00cd\r\n"
    b"a3 IDLE\r\nDONE\r\n"
    b"a4 SEARCH " + b"x" * 300 + b" {4+}\r\nskip\r\n"
    b"a5 APPEND INBOX {70000}\r\n"
    b"a6 FETCH 1 BODY[]\n"
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=600), max_size=40))
def test_results_do_not_depend_on_how_input_is_split(pieces: list[int]) -> None:
    def policy(ev: NeedContinuation) -> bool:
        return ev.size < 65536

    limits = {"max_line": 256, "stream_threshold": 1024, "chunk_size": 512}
    assert run(SCRIPT, pieces, policy, **limits) == run(SCRIPT, None, policy, **limits)


def test_script_bytewise() -> None:
    def policy(ev: NeedContinuation) -> bool:
        return ev.size < 65536

    limits = {"max_line": 256, "stream_threshold": 1024, "chunk_size": 512}
    whole = run(SCRIPT, None, policy, **limits)
    assert bytewise(SCRIPT, policy, **limits) == whole
    kinds = [type(e).__name__ for e in whole]
    assert kinds.count("CommandLine") == 4 and kinds.count("LineTooLong") == 1
    assert kinds.count("LiteralChunk") == 4 and kinds.count("RawLine") == 1


_ALPHABET = b"A1 {}+~09\r\n"


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300).map(lambda b: bytes(_ALPHABET[x % len(_ALPHABET)] for x in b)),
    st.lists(st.integers(min_value=0, max_value=40), max_size=20),
    st.booleans(),
)
def test_fuzzed_input_is_split_independent(data: bytes, pieces: list[int], accept: bool) -> None:
    def policy(ev: NeedContinuation) -> bool:
        return accept and ev.size < 2000

    limits = {"max_line": 40, "stream_threshold": 8, "chunk_size": 4}
    assert run(data, pieces, policy, **limits) == run(data, None, policy, **limits)
