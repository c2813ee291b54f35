"""SEARCH key evaluation (proto/imap/search.py), including its raw-bytes shortcut, which must
never hide a match that decoding would find."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from postroom.proto.imap.grammar_search import DateKey, HeaderKey, NotKey, TextKey
from postroom.proto.imap.search import SearchMessage, matches


def message(content: bytes) -> SearchMessage:
    return SearchMessage(
        seq=1, uid=1, flags=(), internal_date=0.0, size=len(content), modseq=1, content=content
    )


PLAIN = b"Subject: Quarterly report\r\nFrom: Ann <ann@example.test>\r\n\r\nThe numbers are in.\r\n"
BASE64 = (
    b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode("Grüße, numbers".encode())
)
ENCODED_SUBJECT = b"Subject: =?utf-8?q?Quarterly_r=C3=A9port?=\r\n\r\nbody\r\n"
FOLDED = b"Subject: Quarterly\r\n report\r\n\r\nbody\r\n"
B_SUBJECT = b"Subject: =?utf-8?b?%s?=\r\n\r\nbody =?x\r\n" % base64.b64encode(b"hidden treasure")
MIXED = (
    b"Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Caf=E9 au lait, quok=\r\nkas welcome\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"hidden wombat inside a file")
    + b"\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"forwarded platypus text")
    + b"\r\n--b--\r\n"
)


@pytest.mark.parametrize(
    ("content", "key", "expected"),
    [
        (PLAIN, HeaderKey("SUBJECT", "quarterly"), True),
        (PLAIN, HeaderKey("SUBJECT", "annual"), False),
        (PLAIN, HeaderKey("SUBJECT", "numbers"), False),  # in the body, not the header
        (PLAIN, TextKey("BODY", "NUMBERS"), True),
        (PLAIN, TextKey("BODY", "quarterly"), False),  # BODY excludes the header
        (PLAIN, TextKey("TEXT", "quarterly"), True),
        (BASE64, TextKey("BODY", "numbers"), True),  # only visible once decoded
        (BASE64, TextKey("BODY", "grüße"), True),
        (ENCODED_SUBJECT, HeaderKey("SUBJECT", "réport"), True),
        (ENCODED_SUBJECT, HeaderKey("SUBJECT", "quarterly"), True),
        (FOLDED, HeaderKey("SUBJECT", "quarterly report"), True),  # across the fold
        (PLAIN, HeaderKey("FROM", "ann@example.test"), True),
        (PLAIN, HeaderKey("X-MISSING", ""), False),
        (PLAIN, HeaderKey("SUBJECT", ""), True),  # RFC 3501: "" matches a present field
        (PLAIN, NotKey(TextKey("BODY", "numbers")), False),
        (MIXED, TextKey("BODY", "café"), True),  # quoted-printable, ISO-8859-1
        (MIXED, TextKey("BODY", "quokkas"), True),  # across a soft line break
        (MIXED, TextKey("BODY", "platypus"), True),  # an attached message's text
        (MIXED, TextKey("TEXT", "wombat"), False),  # inside an attachment: not text
        (B_SUBJECT, TextKey("TEXT", "treasure"), True),  # in an encoded word of the header
        (B_SUBJECT, TextKey("TEXT", "missing"), False),  # "=?" in a body hides nothing
    ],
)
def test_string_keys(content: bytes, key: object, expected: bool) -> None:
    assert matches(key, message(content), exists=1, max_uid=1) is expected  # type: ignore[arg-type]


def test_sent_dates_use_the_date_headers_own_day() -> None:
    late = message(b"Date: Sun, 25 Mar 2007 23:30:00 -0500\r\n\r\nx\r\n")  # 26 Mar in UTC
    on = DateKey("SENT", "ON", dt.date(2007, 3, 25))
    assert matches(on, late, exists=1, max_uid=1)


def test_header_needle_only_when_every_match_must_carry_it() -> None:
    from postroom.proto.imap.grammar_search import AndKey, OrKey
    from postroom.proto.imap.search import header_needle

    subject = HeaderKey("SUBJECT", "Zanzibar")
    assert header_needle(subject) == ("subject", "zanzibar")
    assert header_needle(AndKey((TextKey("BODY", "x"), subject))) == ("subject", "zanzibar")
    assert header_needle(OrKey(subject, TextKey("BODY", "x"))) is None  # not required
    assert header_needle(NotKey(subject)) is None
    assert header_needle(HeaderKey("FROM", "ann")) is None  # addresses compare normalised
    assert header_needle(HeaderKey("X-TAG", "two words")) is None  # may span a fold
    assert header_needle(HeaderKey("X-TAG", "réport")) is None
    # The store's subject index is decoded, unfolded and case-folded, as the match compares.
    assert header_needle(HeaderKey("SUBJECT", "Report 2424")) == ("subject", "report 2424")
    assert header_needle(HeaderKey("SUBJECT", "Grüße")) == ("subject", "grüsse")
    assert header_needle(AndKey((HeaderKey("X-TAG", "a"), subject))) == ("subject", "zanzibar")


def test_subject_index_holds_every_subject_decoded() -> None:
    from postroom.proto.imap.search import subject_index

    header = b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nSubject: Second\r\n\r\n"
    assert subject_index(header) == "grüsse\nsecond"
