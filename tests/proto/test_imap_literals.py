"""Literal limits per command: small and few before login, 64 KiB after it outside APPEND."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto.imap.literals import AFTER_LOGIN, BEFORE_LOGIN, judge
from postroom.proto.imap.reader import (
    MAX_LITERAL,
    NEED_DATA,
    CommandLine,
    CommandReader,
    LiteralData,
    NeedContinuation,
)

MAX_APPEND = 64 * 1024 * 1024


def announce(
    size: int,
    *,
    sync: bool = False,
    command: str = "LOGIN",
    earlier: int = 0,
    earlier_octets: int = 0,
) -> NeedContinuation:
    return NeedContinuation(size, sync, False, False, "a", command, earlier, earlier_octets)


def test_before_login_literals_are_small_and_few() -> None:
    def verdict(event: NeedContinuation) -> tuple[bytes, bool]:
        found = judge(event, authenticated=False, max_append=MAX_APPEND)
        return found.refusal, found.close

    assert verdict(announce(40)) == (b"", False)
    assert verdict(announce(4000, earlier=1, earlier_octets=4192)) == (b"", False)
    # The probe: LOGIN {65536+}. Its octets are on their way: answer, then hang up.
    assert verdict(announce(65536)) == (
        b"a BAD [TOOBIG] Literal too large\r\n* BYE Literal too large before login\r\n",
        True,
    )
    assert verdict(announce(1, earlier=1, earlier_octets=8192))[1]
    assert verdict(announce(0, earlier=8)) == (
        b"a BAD [TOOBIG] Too many literals\r\n* BYE Too many literals before login\r\n",
        True,
    )
    # A synchronising literal is never sent once refused: BAD, and the session goes on.
    assert verdict(announce(65536, sync=True)) == (b"a BAD [TOOBIG] Literal too large\r\n", False)
    # APPEND before login is no exception (it is refused anyway once parsed).
    assert verdict(announce(100_000, command="APPEND", sync=True))[0].startswith(b"a BAD")


def test_after_login_a_command_carries_64_kib_of_literals() -> None:
    def verdict(event: NeedContinuation) -> tuple[bytes, bool]:
        found = judge(event, authenticated=True, max_append=MAX_APPEND)
        return found.refusal, found.close

    assert verdict(announce(65536, command="SEARCH")) == (b"", False)
    refused = (b"a BAD [TOOBIG] Literal too large\r\n", False)
    assert verdict(announce(65537, command="SEARCH")) == refused
    assert verdict(announce(2, command="SEARCH", earlier=3, earlier_octets=65535)) == refused
    assert verdict(announce(0, command="SEARCH", earlier=1024)) == (
        b"a BAD [TOOBIG] Too many literals\r\n",
        False,
    )
    # APPEND: each message up to max_append, as many as the client likes (MULTIAPPEND).
    assert verdict(announce(MAX_APPEND, command="APPEND", earlier=5000, earlier_octets=10**9)) == (
        b"",
        False,
    )
    assert verdict(announce(MAX_APPEND + 1, command="APPEND")) == (
        b"a NO [TOOBIG] Literal too large\r\n",
        False,
    )
    assert verdict(announce(MAX_LITERAL + 1, command="APPEND")) == (
        b"a NO [TOOBIG] Literal too large\r\n",
        False,
    )


def test_markers_with_any_number_of_digits() -> None:
    reader = CommandReader()
    reader.feed(b"a LOGIN {" + b"9" * 5000 + b"+}\r\n")
    event = reader.next_event()
    assert isinstance(event, NeedContinuation)
    assert (event.size, event.synchronizing) == (MAX_LITERAL + 1, False)

    reader = CommandReader()
    reader.feed(b"a LOGIN ~{" + b"0" * 40 + b"3}\r\nabc {9223372036854775808}\r\n")
    event = reader.next_event()
    assert isinstance(event, NeedContinuation)
    assert (event.size, event.synchronizing, event.binary) == (3, True, True)
    reader.accept_literal()
    event = reader.next_event()
    assert isinstance(event, NeedContinuation)
    assert (event.size, event.earlier, event.earlier_octets) == (MAX_LITERAL + 1, 1, 3)
    reader.reject_literal()
    assert reader.next_event() is NEED_DATA


def drive(data: bytes, *, authenticated: bool) -> tuple[list[object], int, bool]:
    """Feed `data` to a reader whose literals `judge` decides, as the driver does. Returns the
    events, the most literal octets any command was allowed, and whether the server hung up."""
    reader = CommandReader()
    reader.feed(data)
    events: list[object] = []
    most = 0
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, NeedContinuation):
            verdict = judge(event, authenticated=authenticated, max_append=MAX_APPEND)
            if verdict.close:
                return events, most, True
            if verdict.refusal:
                reader.reject_literal()
            else:
                reader.accept_literal()
                most = max(most, event.earlier_octets + event.size)
    return events, most, False


def test_the_probe_is_cut_at_the_first_literal() -> None:
    """LOGIN {65536+} and 1,499 more such literals grew the server by 100 MiB before login."""
    data = b"a LOGIN {65536+}\r\n" + b"x" * 65536 + (b" {65536+}\r\n" + b"x" * 65536) * 1499
    events, most, closed = drive(data + b"\r\n", authenticated=False)
    assert closed and most == 0 and len(events) == 1


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([b"LOGIN", b"SEARCH", b"ID"]),
    st.lists(st.integers(0, 70_000), min_size=1, max_size=12),
    st.booleans(),
)
def test_what_a_command_holds_stays_within_its_budget(
    command: bytes, sizes: list[int], authenticated: bool
) -> None:
    """Non-synchronising literals, which a client sends whatever the server thinks of them."""
    data = b"t " + command + b"".join(b" {%d+}\r\n" % size + b"y" * size for size in sizes)
    events, most, closed = drive(data + b"\r\nu NOOP\r\n", authenticated=authenticated)
    budget = AFTER_LOGIN if authenticated else BEFORE_LOGIN
    assert most <= budget.octets
    kept = [e for e in events if isinstance(e, CommandLine)]
    for line in kept:
        inline = [part for part in line.parts if isinstance(part, LiteralData)]
        assert len(inline) <= budget.count
        assert sum(len(part.data) for part in inline) <= budget.octets
    if not closed:
        assert kept[-1] == CommandLine((b"u NOOP",))
