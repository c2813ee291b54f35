"""IMAP response encoding: strings, flags, dates, sequence sets, response lines."""

from __future__ import annotations

import datetime as dt

import pytest

from postroom.proto.imap import encode as e


def test_strings_quoted_or_literal() -> None:
    assert e.string("hello world") == b'"hello world"'
    assert e.string('say "hi" \\o/') == b'"say \\"hi\\" \\\\o/"'
    assert e.string("") == b'""'
    assert e.string("two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert e.string("für") == b"{4}\r\nf\xc3\xbcr"
    assert e.string("für", utf8=True) == '"für"'.encode()
    assert e.string(b"\xff", utf8=True) == b"{1}\r\n\xff"
    assert e.string("x" * (e.MAX_QUOTED + 1)).startswith(b"{1025}\r\n")
    assert e.literal(b"a\x00b", binary=True) == b"~{3}\r\na\x00b"


def test_astring_and_nstring() -> None:
    assert e.astring("INBOX") == b"INBOX"
    assert e.astring("Sent Items") == b'"Sent Items"'
    assert e.astring("a]b") == b"a]b"
    assert e.astring("NIL") == b'"NIL"'
    assert e.astring("%") == b'"%"'
    assert e.nstring(None) == b"NIL"
    assert e.nstring("x") == b'"x"'


def test_flag_list() -> None:
    assert e.flag_list(["\\Seen", "$Label"]) == b"(\\Seen $Label)"
    assert e.flag_list([]) == b"()"


def test_internal_date() -> None:
    pdt = dt.timezone(-dt.timedelta(hours=7))
    assert e.internal_date(dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=pdt)) == (
        b'"17-Jul-1996 02:44:25 -0700"'
    )
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert e.internal_date(dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=ist)) == (
        b'" 2-Jan-2024 03:04:05 +0530"'
    )
    with pytest.raises(ValueError):
        e.internal_date(dt.datetime(2024, 1, 2))


def test_sequence_set_compaction() -> None:
    assert e.sequence_set([1, 2, 3, 7]) == "1:3,7"
    assert e.sequence_set([7, 3, 2, 1, 3, 9, 10]) == "1:3,7,9:10"
    assert e.sequence_set([]) == ""
    assert e.sequence_set([5]) == "5"


def test_nested_values() -> None:
    envelope = ["Mon, 7 Feb 1994", "hi", [["Fred", None, "fred", "example.org"]], None, 42]
    assert e.value(envelope) == (
        b'("Mon, 7 Feb 1994" "hi" (("Fred" NIL "fred" "example.org")) NIL 42)'
    )
    assert e.value([e.Atom("\\Seen"), ()]) == b"(\\Seen ())"
    with pytest.raises(TypeError):
        e.value(True)


def test_response_lines() -> None:
    assert e.untagged("3", "EXISTS") == b"* 3 EXISTS\r\n"
    assert e.untagged("1", "FETCH", b"(FLAGS " + e.flag_list(["\\Seen"]) + b")") == (
        b"* 1 FETCH (FLAGS (\\Seen))\r\n"
    )
    assert e.tagged("a1", "OK", "done") == b"a1 OK done\r\n"
    assert e.tagged("a1", "NO", "nope", "TRYCREATE") == b"a1 NO [TRYCREATE] nope\r\n"
    assert e.tagged("a1", "BAD", "evil\r\na2 OK injected") == b"a1 BAD evil  a2 OK injected\r\n"
    assert e.untagged_status("OK", "ready", "CAPABILITY IMAP4rev1") == (
        b"* OK [CAPABILITY IMAP4rev1] ready\r\n"
    )
    assert e.continuation() == b"+ \r\n"
    assert e.continuation("Ready") == b"+ Ready\r\n"
