"""Numbers from the network: every engine checks digits and range before converting, so a run
of thousands of digits (past Python's 4,300-digit int() limit) or a Unicode digit ("²", which
str.isdigit accepts and int() refuses) is a syntax error, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_imap_grammar import cmd, error

from postroom.proto.imap import grammar as g
from postroom.proto.imap.grammar_base import MAX_NUMBER, MAX_NUMBER64
from postroom.proto.imap.structure import summarise
from postroom.proto.pop3 import events as pop3_events
from postroom.proto.pop3.engine import Pop3Server, Pop3Settings
from postroom.proto.smtp import events as smtp_events
from postroom.proto.smtp.client import SmtpClient
from postroom.proto.smtp.server import ServerSettings, SmtpServer

LONG = "1" * 5000  # the probe: a FETCH with this as its sequence set crashed the session

# Digit strings: short ones near the limits, leading zeros, and very long runs.
DIGITS = st.one_of(
    st.integers(min_value=0, max_value=2**70).map(str),
    st.tuples(st.integers(0, 30), st.integers(0, 2**64)).map(lambda t: "0" * t[0] + str(t[1])),
    st.integers(4290, 6000).map(lambda n: "9" * n),
)
# What a client may put where a number goes: digits in any script, and other characters.
NUMBERISH = st.text(st.sampled_from("0123456789²³¹٣७߀9a-"), min_size=1, max_size=30) | DIGITS

# IMAP commands with a number slot ({} is replaced): its largest value, whether 0 is allowed.
IMAP_NUMBERS = [
    ("t FETCH {} FLAGS", MAX_NUMBER, False),  # RFC 3501 §9 nz-number
    ("t UID FETCH 1:{} FLAGS", MAX_NUMBER, False),
    ("t FETCH 1 BODY[{}]", MAX_NUMBER, False),
    ("t FETCH 1 BODY[]<{}.1>", MAX_NUMBER64, True),
    ("t FETCH 1 BODY[]<0.{}>", MAX_NUMBER64, False),
    ("t FETCH 1 FLAGS (CHANGEDSINCE {})", MAX_NUMBER64, True),
    ("t STORE 1 (UNCHANGEDSINCE {}) FLAGS ()", MAX_NUMBER64, True),
    ("t SEARCH LARGER {}", MAX_NUMBER64, True),
    ("t SEARCH MODSEQ {}", MAX_NUMBER64, True),
    ("t SELECT INBOX (QRESYNC ({} 1))", MAX_NUMBER, False),
    ("t SELECT INBOX (QRESYNC (1 {}))", MAX_NUMBER64, False),
]


def test_the_probe_is_a_bad_command() -> None:
    failure = error(f"a FETCH {LONG} FLAGS".encode())
    assert (failure.tag, failure.status) == ("a", "BAD")
    assert failure.message == "number out of range: " + "1" * 24 + "..."


@pytest.mark.parametrize(("template", "limit", "zero_ok"), IMAP_NUMBERS)
@settings(max_examples=60, deadline=None)
@given(digits=DIGITS)
def test_imap_numbers_are_bounded_before_conversion(
    template: str, limit: int, zero_ok: bool, digits: str
) -> None:
    line = template.format(digits).encode()
    value = int(digits.lstrip("0") or "0") if len(digits) < 4300 else limit + 1
    if value > limit or (value == 0 and not zero_ok):
        failure = error(line)
        assert (failure.tag, failure.status) == ("t", "BAD")
        assert len(failure.message) < 80  # the digits are not echoed back whole
    else:
        cmd(line)


def smtp_replies(*lines: bytes) -> bytes:
    # A long line limit (it is configurable), so the digits reach the parameter parsers.
    engine = SmtpServer(ServerSettings(hostname="mx.example.test", max_line_length=65536))
    engine.greet()
    engine.receive_data(b"".join(line + b"\r\n" for line in lines))
    while True:
        event = engine.next_event()
        if isinstance(event, smtp_events.MailFrom | smtp_events.RcptTo):
            engine.accept()
        elif isinstance(event, smtp_events.NeedData | smtp_events.CloseConnection):
            return engine.data_to_send()


@settings(max_examples=200, deadline=None)
@given(NUMBERISH)
def test_smtp_size_and_bdat_sizes(value: str) -> None:
    size = smtp_replies(b"EHLO c", f"MAIL FROM:<a@b.test> SIZE={value}".encode())
    last = size.splitlines()[-1]
    ascii_number = value.isascii() and value.isdigit() and len(value) <= 20
    assert last.startswith(b"250" if ascii_number and int(value) <= 52428800 else b"5"), last
    bdat = smtp_replies(
        b"EHLO c", b"MAIL FROM:<a@b.test>", b"RCPT TO:<c@d.test>", b"BDAT " + value.encode()
    )
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        assert bdat.splitlines()[-1].startswith(b"501"), bdat


@pytest.mark.parametrize("value", ["²", "١٢", LONG])
def test_smtp_unicode_and_long_digits(value: str) -> None:
    assert smtp_replies(b"EHLO c", f"MAIL FROM:<a@b.test> SIZE={value}".encode()).endswith(
        b"501 5.5.4 SIZE requires a number\r\n"
    )
    bdat = smtp_replies(
        b"EHLO c", b"MAIL FROM:<a@b.test>", b"RCPT TO:<c@d.test>", f"BDAT {value}".encode()
    )
    assert bdat.splitlines()[-1].startswith(b"501"), bdat


@given(NUMBERISH)
def test_smtp_client_reads_the_servers_size_safely(value: str) -> None:
    client = SmtpClient("relay.example.test")
    client.extensions["SIZE"] = value
    limit = client.size_limit
    if value.isascii() and value.isdigit() and len(value) <= 20 and int(value) > 0:
        assert limit == int(value)
    else:
        assert limit is None


@settings(max_examples=100, deadline=None)
@given(NUMBERISH, NUMBERISH)
def test_pop3_message_numbers_and_line_counts(number: str, count: str) -> None:
    engine = Pop3Server(Pop3Settings(hostname="pop.example.test", allow_plaintext_auth=True))
    engine.greet()
    engine.receive_data(b"USER u\r\nPASS p\r\n")
    assert isinstance(engine.next_event(), pop3_events.Verify)
    engine.answered(True)
    assert isinstance(engine.next_event(), pop3_events.OpenMaildrop)
    engine.maildrop_opened([pop3_events.MaildropEntry(1, 10, "1.1")])
    engine.data_to_send()
    for line in (f"RETR {number}", f"TOP {number} {count}", f"LIST {number}", f"DELE {number}"):
        engine.receive_data(line.encode() + b"\r\n")
        event = engine.next_event()
        if isinstance(event, pop3_events.FetchMessage):
            engine.message_fetched(b"Subject: x\r\n\r\nbody\r\n")
            event = engine.next_event()
        assert isinstance(event, pop3_events.NeedData), event
        reply = engine.data_to_send()
        assert reply.startswith((b"+OK", b"-ERR")), reply


@pytest.mark.parametrize("digits", ["9" * 5000, "0" * 5000 + "1", "12345678901"])
def test_rfc2231_section_numbers_of_delivered_mail(digits: str) -> None:
    """A message is parsed at delivery: such a header must not make delivery fail."""
    raw = f"Content-Type: text/plain; name*{digits}=x; name*0=y\r\n\r\nbody\r\n".encode()
    structure = summarise(raw).bodystructure
    assert f'"name*{digits}" "x"'.encode() in structure
    assert b'"name" "y"' in structure  # a lone name*0 is the whole value


def test_in_range_numbers_still_parse() -> None:
    fetch = cmd(b"t FETCH 0004294967295 FLAGS")
    assert isinstance(fetch, g.Fetch)
    assert str(fetch.sequence) == "4294967295"
    assert error(b"t FETCH 4294967296 FLAGS").message == "number out of range: 4294967296"
