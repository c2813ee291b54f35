"""postroom ↔ REAL Postfix, both directions, over loopback (issue 3 §6).

- postroom relays (`[routes]`, opportunistic STARTTLS) into a private Postfix whose virtual(8)
  writes Maildirs: the files must hold exactly what was submitted below the trace headers the
  two MTAs add.
- The same Postfix with 8BITMIME withdrawn on one port (`smtpd_discard_ehlo_keywords`): an
  8-bit message must arrive 7-bit clean and decode to the original text (RFC 6152 §3).
- A private Postfix relays (`relayhost`, opportunistic STARTTLS) into postroom's MX port: the
  message lands in the users' INBOXes, again byte for byte below the trace headers.
- Postfix refuses one recipient with 550 while taking another on a second domain: postroom
  delivers the good one and returns exactly one failure report naming only the refused one;
  a 450 instead leaves that recipient deferred, with no report.

The receiving Postfix is shared by the module (each test looks for the messages carrying its
own token); each test gets its own postroom. Maildir files and `mailbox export` use LF line
ends, so the comparisons are against the submitted message with CRLF turned into LF.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import smtplib
from collections.abc import Callable, Iterator

import pytest

from .conftest import ALICE, BOB, Postroom, wait_until
from .postfix_instance import HOST, Postfix
from .test_outbound import reports, status_part
from .wire import new_token, to_lf

ONE = "pf-one.test"  # routed to the Postfix port that offers 8BITMIME
TWO = "pf-two.test"  # same port, a second domain
SEVEN = "pf-seven.test"  # routed to the port where 8BITMIME is withdrawn
CAROL, DAN, ERIN, GRACE = f"carol@{ONE}", f"dan@{ONE}", f"erin@{TWO}", f"grace@{SEVEN}"
REFUSED = f"nobody@{ONE}"
LATER = f"later@{ONE}"
REFUSAL = "550 5.1.1 <nobody@pf-one.test>: Recipient address rejected: no such user here"
DEFERRAL = "450 4.2.1 <later@pf-one.test>: Recipient address rejected: try again later"

# RFC 5321 §4.4 (Received, Return-Path) and what Postfix's virtual(8) prepends at delivery.
TRACE = frozenset({b"received", b"return-path", b"delivered-to", b"x-original-to"})

TEXT = (
    "Grüße aus Köln — ein Test für 8BITMIME.\n"
    "日本語のテキストも少し。\n"
    ".A line starting with a dot, and one with only a dot below.\n"
    ".\n"
    "From the start of a line (no '>From' quoting over SMTP).\n"
    "Trailing spaces stay:   \n"
    "Equals = signs = and a tab\there.\n"
    f"Long line of ümlauts: {'äöü' * 40}\n"
    "Last line.\n"
)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Postfix]:
    """Postfix taking mail for ONE, TWO and SEVEN into Maildirs; 550 for REFUSED, 450 for LATER."""
    with Postfix(
        listeners={"plain": {}, "seven_bit": {"smtpd_discard_ehlo_keywords": "8bitmime"}},
        main={
            "smtpd_recipient_restrictions": (
                "check_recipient_access {recipient_access}, permit_mynetworks, "
                "reject_unauth_destination"
            )
        },
        tables={"recipient_access": {REFUSED: REFUSAL, LATER: DEFERRAL}},
        mailboxes=(CAROL, DAN, ERIN, GRACE),
        tls=True,
    ) as postfix:
        yield postfix


def sender(factory: Callable[..., Postroom], receiver: Postfix) -> Postroom:
    """A postroom whose mail for ONE and TWO goes to Postfix's plain port, SEVEN to the other.

    It signs nothing: these tests compare what arrives with what was submitted byte for byte
    below the trace; the DKIM signatures added on the way, and that they verify after Postfix,
    are tested in test_mail_auth_e2e.py."""
    plain, seven = receiver.ports["plain"], receiver.ports["seven_bit"]
    return factory(
        extra=(
            "[routes]\n"
            f'"{ONE}" = "{HOST}:{plain}"\n'
            f'"{TWO}" = "{HOST}:{plain}"\n'
            f'"{SEVEN}" = "{HOST}:{seven}"\n'
            "[dkim]\nsign = false\n"
        )
    )


def tricky_message(token: str, sender: str, recipients: list[str]) -> bytes:
    """Folded headers, a 998-octet line, lines of dots, a body line starting with "From "."""
    long_line = ("0123456789" * 100)[:998]
    return (
        f"From: Alice Example <{sender}>\r\n"
        f"To: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        f"Subject: {token} interop with a header that is folded\r\n"
        "\tonto a second line\r\n"
        f"Message-ID: <{token}@interop.example>\r\n"
        "Date: Tue, 02 Jan 2024 03:04:05 +0000\r\n"
        "X-Long-Header: " + "h" * 900 + "\r\n"
        "\r\n"
        ".\r\n"
        "..\r\n"
        ".leading dot\r\n"
        "From the start of a line\r\n"
        f"{long_line}\r\n"
        f".{long_line[1:]}\r\n"
        "\r\n"
        " indented line with trailing space \r\n"
        "last line\r\n"
    ).encode()


def eight_bit_message(token: str, sender: str, recipient: str) -> bytes:
    return (
        f"From: Alice <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= {token}\r\n"
        f"Message-ID: <{token}@interop.example>\r\n"
        "Date: Tue, 02 Jan 2024 03:04:05 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n"
        "X-After-Cte: stays where it was\r\n"
        "\r\n"
    ).encode() + TEXT.replace("\n", "\r\n").encode("utf-8")


def header_fields(message: bytes) -> tuple[list[bytes], bytes]:
    """An LF message's header fields (each with its continuation lines) and the rest."""
    head, blank, body = message.partition(b"\n\n")
    assert blank, f"no end of header in {message[:200]!r}"
    fields: list[bytes] = []
    for line in (head + b"\n").splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            assert fields, f"continuation line first: {line!r}"
            fields[-1] += line
        else:
            fields.append(line)
    return fields, b"\n" + body


def field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def strip_trace(message: bytes) -> tuple[bytes, list[bytes]]:
    """The message without the trace fields at its top, and those fields' names in order."""
    fields, rest = header_fields(message)
    names = []
    while fields and field_name(fields[0]) in TRACE:
        names.append(field_name(fields.pop(0)))
    return b"".join(fields) + rest, names


def assert_same_below_trace(received: bytes, submitted: bytes, what: str) -> list[bytes]:
    """`received` is `submitted` (LF) byte for byte once the top trace fields are removed."""
    stripped, names = strip_trace(received)
    assert stripped == to_lf(submitted), (
        f"{what}: content changed in transit\n--- submitted\n{to_lf(submitted)!r}\n"
        f"--- received (trace removed)\n{stripped!r}"
    )
    return names


def submit(server: Postroom, recipients: list[str], content: bytes, **kwargs: object) -> None:
    with server.submission() as client:
        refused = client.sendmail(ALICE, recipients, content, **kwargs)  # type: ignore[arg-type]
    assert refused == {}


def wait_queue_empty(server: Postroom, peer: Postfix, timeout: float = 20.0) -> None:
    """Wait until postroom's queue is empty; on timeout, show the queue and both logs."""
    try:
        wait_until(lambda: server.queue_list() == "", timeout, "an empty queue")
    except AssertionError as error:
        raise AssertionError(
            f"{error}\n{server.queue_list()}\npostroom log tail:\n{server.log_tail()}\n"
            f"postfix log tail:\n{peer.log_tail()}"
        ) from None


def ehlo_keywords(port: int) -> set[str]:
    with smtplib.SMTP(HOST, port, local_hostname="probe.example.net", timeout=10) as client:
        code, _ = client.ehlo()
        assert code == 250
        return {name.upper() for name in client.esmtp_features}


# --- 1. postroom → Postfix ------------------------------------------------------------------


def test_postroom_relays_into_postfix_maildir_byte_for_byte(
    postroom_factory: Callable[..., Postroom], receiver: Postfix
) -> None:
    server = sender(postroom_factory, receiver)
    token = new_token()
    content = tricky_message(token, ALICE, [CAROL])
    submit(server, [CAROL], content)
    [delivered] = receiver.wait_for_messages(CAROL, 1, token.encode())
    names = assert_same_below_trace(delivered, content, CAROL)
    # virtual(8) prepends the envelope; below it Postfix's Received, then postroom's.
    assert names == [b"return-path", b"x-original-to", b"delivered-to", b"received", b"received"]
    assert delivered.startswith(
        f"Return-Path: <{ALICE}>\nX-Original-To: {CAROL}\nDelivered-To: {CAROL}\n".encode()
    )
    fields, _ = header_fields(delivered)
    postfix_received, postroom_received = (b" ".join(f.split()) for f in fields[3:5])
    # postroom took the STARTTLS Postfix offered (RFC 3207, opportunistic: RFC 7435).
    assert postfix_received.startswith(b"Received: from mx.example.test (unknown [127.0.0.1])")
    assert b"with ESMTPS id" in postfix_received
    assert postroom_received.startswith(b"Received: from client.example.net ([127.0.0.1])")
    assert b"by mx.example.test (postroom)" in postroom_received
    wait_queue_empty(server, receiver)


def test_multi_recipient_message_reaches_every_maildir_unchanged(
    postroom_factory: Callable[..., Postroom], receiver: Postfix
) -> None:
    server = sender(postroom_factory, receiver)
    token = new_token()
    recipients = [CAROL, DAN, ERIN]
    content = tricky_message(token, ALICE, recipients)
    submit(server, recipients, content)
    for recipient in recipients:
        [delivered] = receiver.wait_for_messages(recipient, 1, token.encode())
        assert_same_below_trace(delivered, content, recipient)
        assert f"Delivered-To: {recipient}\n".encode() in delivered
    wait_queue_empty(server, receiver)
    assert reports(server) == []  # nothing failed, no NOTIFY=SUCCESS: no report


# --- 2. 8BITMIME withdrawn by Postfix ---------------------------------------------------------


def test_postfix_ports_offer_and_withdraw_8bitmime(receiver: Postfix) -> None:
    plain, seven_bit = (ehlo_keywords(receiver.ports[name]) for name in ("plain", "seven_bit"))
    assert "8BITMIME" in plain and "STARTTLS" in plain
    assert "8BITMIME" not in seven_bit and "STARTTLS" in seven_bit


def test_8bit_message_passes_unchanged_where_8bitmime_is_offered(
    postroom_factory: Callable[..., Postroom], receiver: Postfix
) -> None:
    server = sender(postroom_factory, receiver)
    token = new_token()
    content = eight_bit_message(token, ALICE, CAROL)
    submit(server, [CAROL], content, mail_options=["BODY=8BITMIME"])
    [delivered] = receiver.wait_for_messages(CAROL, 1, token.encode())
    assert_same_below_trace(delivered, content, CAROL)


def test_8bit_message_is_downgraded_for_a_peer_without_8bitmime(
    postroom_factory: Callable[..., Postroom], receiver: Postfix
) -> None:
    server = sender(postroom_factory, receiver)
    token = new_token()
    content = eight_bit_message(token, ALICE, GRACE)
    submit(server, [GRACE], content, mail_options=["BODY=8BITMIME"])
    [delivered] = receiver.wait_for_messages(GRACE, 1, token.encode())
    assert delivered.isascii(), "8-bit octets reached a peer that did not offer 8BITMIME"

    stripped, _ = strip_trace(delivered)
    got_fields, _ = header_fields(stripped)
    sent_fields, _ = header_fields(to_lf(content))
    cte = b"content-transfer-encoding"
    # RFC 6152 §3: only the encoding changes; every other header field stays as it was.
    assert [f for f in got_fields if field_name(f) != cte] == [
        f for f in sent_fields if field_name(f) != cte
    ]
    [encoding] = [f for f in got_fields if field_name(f) == cte]
    assert encoding.split(b":", 1)[1].strip().lower() in (b"quoted-printable", b"base64")

    parsed = email.message_from_bytes(stripped, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content() == TEXT


# --- 3. Postfix → postroom --------------------------------------------------------------------


def test_postfix_relays_into_postroom_inbox_byte_for_byte(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory()
    relay_settings = {
        "relayhost": f"[{HOST}]:{server.smtp_port}",
        "smtp_tls_security_level": "may",  # RFC 3207 with postroom's self-signed certificate
    }
    with Postfix(listeners={"smtp": {}}, main=relay_settings) as relay:
        token = new_token()
        origin = f"sender-{token}@origin.example"
        content = tricky_message(token, origin, [ALICE, BOB])
        with smtplib.SMTP(HOST, relay.ports["smtp"], local_hostname="client.example.net") as c:
            assert c.sendmail(origin, [ALICE, BOB], content) == {}
        for user in (ALICE, BOB):
            server.wait_for_messages(user, 1, timeout=20)
        log = relay.log()
    for user in (ALICE, BOB):
        [stored] = server.export_maildir(user)
        names = assert_same_below_trace(stored, content, user)
        # postroom's Return-Path and Received, then the Received Postfix's smtpd wrote.
        assert names == [b"return-path", b"received", b"received"], names
        assert stored.startswith(f"Return-Path: <{origin}>\n".encode())
        fields, _ = header_fields(stored)
        postroom_received, postfix_received = (b" ".join(f.split()) for f in fields[1:3])
        # Postfix's smtp client took the STARTTLS postroom offered (RFC 3848: ESMTPS).
        assert postroom_received.startswith(b"Received: from mx.postfix.test ([127.0.0.1])")
        assert b"(using TLS" in postroom_received and b"with ESMTPS id" in postroom_received
        assert postfix_received.startswith(b"Received: from client.example.net (unknown")
        assert b"by mx.postfix.test (Postfix)" in postfix_received
    assert "status=sent" in log, log[-2000:]


# --- 4. a 5xx for one recipient ---------------------------------------------------------------


def test_postfix_refusing_one_recipient_gives_exactly_one_report(
    postroom_factory: Callable[..., Postroom], receiver: Postfix
) -> None:
    server = sender(postroom_factory, receiver)
    token = new_token()
    content = tricky_message(token, ALICE, [REFUSED, ERIN])
    submit(server, [REFUSED, ERIN], content)
    [delivered] = receiver.wait_for_messages(ERIN, 1, token.encode())
    assert_same_below_trace(delivered, content, ERIN)
    wait_queue_empty(server, receiver, 20)
    [report] = wait_until(lambda: reports(server), 20, "the failure report")
    status = status_part(report)
    assert "Action: failed" in status
    assert f"Final-Recipient: rfc822; {REFUSED}" in status
    assert "Status: 5.1.1" in status
    assert "no such user here" in status  # Postfix's own reply text, as Diagnostic-Code
    assert ERIN not in status  # only the failed recipient is listed
    assert token in report.as_string()  # the original (or its headers) is returned
    assert len(reports(server)) == 1
    assert receiver.messages(REFUSED) == []


def test_postfix_450_for_one_recipient_defers_it_without_a_report(
    postroom_factory: Callable[..., Postroom], receiver: Postfix
) -> None:
    server = sender(postroom_factory, receiver)
    token = new_token()
    content = tricky_message(token, ALICE, [LATER, ERIN])
    submit(server, [LATER, ERIN], content)
    [delivered] = receiver.wait_for_messages(ERIN, 1, token.encode())
    assert_same_below_trace(delivered, content, ERIN)

    # RFC 5321 §4.2.1: 4yz is transient; the recipient waits for the next attempt.
    def deferred() -> str | None:
        listing = server.queue_list()
        return listing if f"{LATER}\tdeferred\t" in listing else None

    listing = wait_until(deferred, 15, "the 450 recipient to be deferred")
    assert "4.2.1" in listing and f"{ERIN}\tdelivered\t" in listing
    assert reports(server) == []  # no delay notice before warn_after, no failure
