"""Delivery status notifications: structure, RFC 3464 fields, returned content and byte hygiene."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.queue.bounce import ReportRecipient, build_report

ARRIVAL = 1_700_000_000.0
NOW = ARRIVAL + 3600.0
ORIGINAL = (
    b"Received: from client.example.org by mail.example.org\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net, carol@example.com\r\n"
    b"Subject: lunch\r\n"
    b"Message-ID: <orig-1@example.org>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
    b"-- \r\n"
    b"Alice\r\n"
)
FAILED = ReportRecipient(
    final_recipient="bob@example.net",
    original_recipient="rfc822;bob@example.net",
    action="failed",
    status="5.1.1",
    remote_mta="mx.example.net",
    diagnostic="550 5.1.1 <bob@example.net>: no such user",
    last_attempt=ARRIVAL + 1800.0,
)


def report(**overrides: Any) -> bytes:
    args: dict[str, Any] = {
        "kind": "failure",
        "reporting_mta": "mail.example.org",
        "original_sender": "alice@example.org",
        "envid": "QQ314159",
        "arrival": ARRIVAL,
        "recipients": [FAILED],
        "original": ORIGINAL,
        "ret": None,
        "now": NOW,
        "message_id": "20231114.dsn1@mail.example.org",
    }
    args.update(overrides)
    return build_report(**args)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(raw: bytes) -> list[Message]:
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/report"
    payload = msg.get_payload()
    assert isinstance(payload, list)
    return payload


def status_groups(raw: bytes) -> list[Message]:
    part = parts(raw)[1]
    assert part.get_content_type() == "message/delivery-status"
    groups = part.get_payload()
    assert isinstance(groups, list)
    return groups


def boundary_of(raw: bytes) -> bytes:
    found = re.search(rb'boundary="([^"]+)"', raw)
    assert found
    return found.group(1)


def returned_bytes(raw: bytes) -> bytes:
    """The raw content of the third part, between its header block and the closing delimiter."""
    boundary = boundary_of(raw)
    third = raw.split(b"\r\n--" + boundary)[3]
    return third.split(b"\r\n\r\n", 1)[1]


def assert_wire_clean(raw: bytes) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    assert raw.endswith(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


# -- the envelope of the report -------------------------------------------------------------------


def test_top_level_headers() -> None:
    msg = parse(report())
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mail.example.org>"
    assert msg["To"] == "alice@example.org"
    assert b"\r\nTo: <alice@example.org>\r\n" in report()
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Message-ID"] == "<20231114.dsn1@mail.example.org>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert parsedate_to_datetime(msg["Date"]).timestamp() == NOW
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        ("failure", "Undelivered Mail Returned to Sender"),
        ("delay", "Delayed Mail (still being retried)"),
        ("success", "Successful Mail Delivery Report"),
    ],
)
def test_subject_by_kind(kind: str, subject: str) -> None:
    assert parse(report(kind=kind))["Subject"] == subject


def test_three_parts_in_order() -> None:
    text, status, returned = parts(report())
    assert text.get_content_type() == "text/plain"
    assert text.get_content_charset() == "us-ascii"
    assert status.get_content_type() == "message/delivery-status"
    assert returned.get_content_type() == "message/rfc822"


def test_human_part_lists_recipient_and_diagnostic() -> None:
    text = parts(report())[0].get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"This is the mail system at host mail.example.org." in text
    assert b"could not\r\nbe delivered" in text
    assert (
        b"<bob@example.net>: host mx.example.net said: 550 5.1.1 <bob@example.net>: no such user"
        in text.replace(b"\r\n    ", b" ")
    )


# -- message/delivery-status ----------------------------------------------------------------------


def test_per_message_fields() -> None:
    per_message = status_groups(report())[0]
    assert per_message["Reporting-MTA"] == "dns; mail.example.org"
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == ARRIVAL


def test_per_recipient_fields() -> None:
    rcpt = status_groups(report())[1]
    assert rcpt["Original-Recipient"] == "rfc822;bob@example.net"
    assert rcpt["Final-Recipient"] == "rfc822; bob@example.net"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mx.example.net"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: no such user"
    assert parsedate_to_datetime(rcpt["Last-Attempt-Date"]).timestamp() == ARRIVAL + 1800
    assert rcpt["Will-Retry-Until"] is None


def test_optional_fields_left_out() -> None:
    bare = ReportRecipient("bob@example.net", None, "failed", "5.4.4")
    groups = status_groups(report(envid=None, recipients=[bare]))
    assert groups[0]["Original-Envelope-Id"] is None
    for name in ("Original-Recipient", "Remote-MTA", "Diagnostic-Code", "Last-Attempt-Date"):
        assert groups[1][name] is None
    assert groups[1]["Final-Recipient"] == "rfc822; bob@example.net"
    assert groups[1]["Status"] == "5.4.4"


def test_orcpt_written_as_given() -> None:
    forwarded = ReportRecipient(
        "bob@example.net", "utf-8;b+C3+A9b@example.com", "failed", "5.2.2", diagnostic="552 full"
    )
    raw = report(recipients=[forwarded])
    assert status_groups(raw)[1]["Original-Recipient"] == "utf-8;b+C3+A9b@example.com"
    assert b"\r\nOriginal-Recipient: utf-8;b+C3+A9b@example.com\r\n" in raw


def test_forwarded_recipient_shows_original_address() -> None:
    forwarded = ReportRecipient("bob@example.net", "rfc822;robert@example.org", "failed", "5.1.1")
    text = parts(report(recipients=[forwarded]))[0].get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"<bob@example.net> (expanded from <robert@example.org>): delivery failed" in text


def test_only_the_given_recipients_are_listed() -> None:
    other = ReportRecipient(
        "dave@example.com",
        None,
        "failed",
        "5.7.1",
        remote_mta="mx.example.com",
        diagnostic="554 5.7.1 rejected",
    )
    raw = report(recipients=[FAILED, other])
    groups = status_groups(raw)
    assert [g["Final-Recipient"] for g in groups[1:]] == [
        "rfc822; bob@example.net",
        "rfc822; dave@example.com",
    ]
    # carol appears in the returned To: header but was delivered, so she is not reported on.
    text = parts(raw)[0].get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"carol" not in text
    assert b"carol" not in parts(raw)[1].as_bytes()
    assert b"<dave@example.com>: host mx.example.com said: 554 5.7.1 rejected" in text


def test_delay_notice_fields_and_text() -> None:
    delayed = ReportRecipient(
        "bob@example.net",
        None,
        "delayed",
        "4.4.1",
        remote_mta="mx.example.net",
        diagnostic="421 4.4.1 try later",
        last_attempt=NOW - 60,
        will_retry_until=ARRIVAL + 5 * 86400,
    )
    raw = report(kind="delay", recipients=[delayed], now=ARRIVAL + 4 * 3600, ret="FULL")
    rcpt = status_groups(raw)[1]
    assert rcpt["Action"] == "delayed"
    assert rcpt["Status"] == "4.4.1"
    assert parsedate_to_datetime(rcpt["Will-Retry-Until"]).timestamp() == ARRIVAL + 5 * 86400
    text = parts(raw)[0].get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"THIS IS A WARNING ONLY" in text
    assert b"more than 4 hour(s)" in text
    assert b"until it is 5 day(s) old" in text
    # A delay notice returns only the headers, even with RET=FULL.
    assert parts(raw)[2].get_content_type() == "text/rfc822-headers"


def test_will_retry_until_only_for_delayed() -> None:
    odd = ReportRecipient("bob@example.net", None, "failed", "5.0.0", will_retry_until=NOW)
    assert status_groups(report(recipients=[odd]))[1]["Will-Retry-Until"] is None


# -- the returned message -------------------------------------------------------------------------


@pytest.mark.parametrize("ret", [None, "FULL"])
def test_failure_returns_full_message(ret: str | None) -> None:
    raw = report(ret=ret)
    returned = parts(raw)[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned_bytes(raw) == ORIGINAL
    inner = returned.get_payload()[0]
    assert isinstance(inner, Message)
    assert inner["Subject"] == "lunch"


def test_ret_hdrs_returns_header_section_only() -> None:
    raw = report(ret="HDRS")
    returned = parts(raw)[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    content = returned_bytes(raw)
    assert content == ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"noon" not in content


def test_too_big_falls_back_to_headers() -> None:
    raw = report(ret="FULL", max_returned=len(ORIGINAL) - 1)
    assert parts(raw)[2].get_content_type() == "text/rfc822-headers"
    assert b"noon" not in raw
    fits = report(ret="FULL", max_returned=len(ORIGINAL))
    assert parts(fits)[2].get_content_type() == "message/rfc822"


@pytest.mark.parametrize(
    ("ret", "ctype"),
    [(None, "text/rfc822-headers"), ("HDRS", "text/rfc822-headers"), ("FULL", "message/rfc822")],
)
def test_success_returns_headers_unless_ret_full(ret: str | None, ctype: str) -> None:
    ok = ReportRecipient("bob@example.net", None, "delivered", "2.0.0", remote_mta="mx.example.net")
    raw = report(kind="success", recipients=[ok], ret=ret)
    assert parts(raw)[2].get_content_type() == ctype
    assert status_groups(raw)[1]["Action"] == "delivered"
    text = parts(raw)[0].get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"successfully delivered" in text


def test_lf_only_original_is_returned_with_crlf() -> None:
    raw = report(original=ORIGINAL.replace(b"\r\n", b"\n"))
    assert_wire_clean(raw)
    assert returned_bytes(raw) == ORIGINAL


def test_boundary_not_in_returned_content() -> None:
    first = report()
    boundary = boundary_of(first)
    hostile = ORIGINAL + b"--" + boundary + b"\r\n" + b"--" + boundary + b"--\r\n"
    raw = report(original=hostile)
    new_boundary = boundary_of(raw)
    assert new_boundary != boundary
    assert new_boundary not in returned_bytes(raw)
    assert returned_bytes(raw) == hostile
    assert len(parts(raw)) == 3
    assert raw.count(b"--" + new_boundary) == 4  # three delimiters and the close


# -- internationalised mail -----------------------------------------------------------------------


def test_non_ascii_recipient_uses_global_delivery_status() -> None:
    rcpt = ReportRecipient(
        "josé@exemple.fr", "utf-8;jos\\x{E9}@exemple.fr", "failed", "5.1.1", diagnostic="550 nope"
    )
    raw = report(recipients=[rcpt])
    text, status, _returned = parts(raw)
    assert status.get_content_type() == "message/global-delivery-status"
    assert b"\r\nFinal-Recipient: utf-8; jos\xc3\xa9@exemple.fr\r\n" in raw
    assert b"\r\nOriginal-Recipient: utf-8;jos\\x{E9}@exemple.fr\r\n" in raw
    assert text.get_content_charset() == "utf-8"
    body = text.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert "<josé@exemple.fr>: 550 nope" in body.decode("utf-8")
    assert_wire_clean(raw)


def test_unitext_escapes_specials() -> None:
    rcpt = ReportRecipient("jö+tag=1@example.de", None, "failed", "5.1.1")
    raw = report(recipients=[rcpt])
    assert "Final-Recipient: utf-8; jö\\x{2B}tag\\x{3D}1@example.de".encode() in raw


def test_ascii_recipients_keep_plain_delivery_status() -> None:
    assert b"message/global" not in report()
    assert b"Content-Transfer-Encoding: 8bit" not in report()


@pytest.mark.parametrize(
    ("ret", "ctype"), [("FULL", "message/global"), ("HDRS", "message/global-headers")]
)
def test_utf8_headers_returned_as_global(ret: str, ctype: str) -> None:
    original = "From: José <jose@exemple.fr>\r\nSubject: café\r\n\r\nbonjour\r\n".encode()
    raw = report(original=original, ret=ret)
    assert parts(raw)[2].get_content_type() == ctype
    assert f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: 8bit\r\n".encode() in raw
    assert "Subject: café".encode() in returned_bytes(raw)
    assert_wire_clean(raw)


def test_8bit_body_returned_as_rfc822_8bit() -> None:
    original = "Subject: x\r\n\r\nm\u00e9t\u00e9o\r\n".encode()
    raw = report(original=original)
    assert parts(raw)[2].get_content_type() == "message/rfc822"
    assert b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n" in raw


# -- wire hygiene ---------------------------------------------------------------------------------


def test_long_diagnostic_folded_and_lines_bounded() -> None:
    reply = "550-5.7.1 first line\r\n550 5.7.1 " + " ".join(["word"] * 600) + " " + "x" * 2500
    rcpt = ReportRecipient("bob@example.net", None, "failed", "5.7.1", diagnostic=reply)
    raw = report(recipients=[rcpt])
    assert_wire_clean(raw)
    diag = status_groups(raw)[1]["Diagnostic-Code"]
    assert diag.startswith("smtp; 550-5.7.1 first line 550 5.7.1 word word")
    assert "x" * 900 in diag


def test_over_long_original_lines_fall_back_to_headers() -> None:
    original = b"Subject: " + b"s" * 2000 + b"\r\n\r\n" + b"b" * 1500 + b"\r\n"
    raw = report(original=original, ret="FULL")
    assert parts(raw)[2].get_content_type() == "text/rfc822-headers"
    assert_wire_clean(raw)


@pytest.mark.parametrize("kind", ["failure", "delay", "success"])
@pytest.mark.parametrize("ret", [None, "FULL", "HDRS"])
def test_crlf_everywhere(kind: str, ret: str | None) -> None:
    assert_wire_clean(report(kind=kind, ret=ret))


@settings(max_examples=60, deadline=None)
@given(
    original=st.binary(max_size=3000),
    diagnostic=st.text(max_size=1500),
    address=st.text(min_size=1, max_size=60).filter(lambda s: s.strip() != ""),
    ret=st.sampled_from([None, "FULL", "HDRS"]),
)
def test_any_input_yields_clean_wire_format(
    original: bytes, diagnostic: str, address: str, ret: str | None
) -> None:
    rcpt = ReportRecipient(address, None, "failed", "5.0.0", diagnostic=diagnostic or None)
    raw = report(original=original, recipients=[rcpt], ret=ret)
    assert_wire_clean(raw)
    boundary = boundary_of(raw)
    assert raw.count(b"--" + boundary) == 4
    assert len(parts(raw)) == 3


# -- refusals -------------------------------------------------------------------------------------


def test_refuses_null_sender() -> None:
    with pytest.raises(ValueError, match="null reverse-path"):
        report(original_sender="")


def test_refuses_no_recipients() -> None:
    with pytest.raises(ValueError, match="at least one"):
        report(recipients=[])


@pytest.mark.parametrize("status", ["550", "5.1", "6.1.1", "5.1.1 "])
def test_refuses_bad_status(status: str) -> None:
    rcpt = ReportRecipient("bob@example.net", None, "failed", status)
    with pytest.raises(ValueError, match="RFC 3463"):
        report(recipients=[rcpt])


def test_deterministic() -> None:
    assert report() == report()
