"""Raw-socket replays of the seed conversations in ../shared/seeds/.

The client lines are sent exactly as the seeds show them (case, spacing, missing angle
brackets, display names), with two adaptations: recipients become users of example.test, and
AUTH happens on the submission port after STARTTLS (postroom never accepts AUTH in plaintext).
Where a seed line is replayed literally, the test also checks that the seed really says so.
"""

from __future__ import annotations

import email
import email.policy
import socket
from pathlib import Path

import pytest

from .conftest import ALICE, BOB, Postroom
from .wire import Reply, Wire, auth_plain, header_value, split_trace

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"

Script = list[tuple[str, int | None]]  # (client line, expected reply code or None for data lines)


def seed_text(prefix: str) -> str | None:
    if not SEEDS.is_dir():
        return None
    matches = sorted(SEEDS.glob(f"{prefix}_*.txt"))
    return matches[0].read_text(encoding="utf-8") if matches else None


def assert_in_seed(prefix: str, *lines: str) -> None:
    """The literal client lines we replay really are in the seed (when the seeds are present)."""
    text = seed_text(prefix)
    if text is None:
        return
    for line in lines:
        assert line in text, f"seed {prefix} does not contain {line!r}"


def replay(wire: Wire, script: Script) -> list[Reply]:
    """Send each line (CRLF-terminated); read and check a reply where one is expected."""
    replies = []
    for line, expected in script:
        wire.send(line.encode("utf-8") + b"\r\n")
        if expected is None:
            continue
        reply = wire.reply()
        assert reply.code == expected, f"{line!r}: expected {expected}, got {reply}\n{wire}"
        replies.append(reply)
    return replies


def connect(port: int) -> Wire:
    wire = Wire(port)
    greeting = wire.expect(220)
    assert greeting.lines[0].startswith("mx.example.test "), greeting
    return wire


def stored_message(server: Postroom, user: str, needle: bytes) -> bytes:
    server.wait_for_messages(user, 1)
    found = [m for m in server.export(user) if needle in m]
    assert len(found) == 1, f"{user}: {len(found)} messages contain {needle!r}"
    return found[0]


# --- 001: the Dutch telnet session (smtp01.wxs.nl) and the HowStuffWorks dialog -------------


def test_seed_001_dutch_telnet_session(postroom: Postroom) -> None:
    assert_in_seed("001", "helo wxs.nl", "mail from:test@test.nl", "rcpt to:xxx@wxs.nl")
    with connect(postroom.smtp_port) as wire:
        replies = replay(
            wire,
            [
                ("helo wxs.nl", 250),
                ("mail from:test@test.nl", 250),
                ("rcpt to:alice@example.test", 250),  # seed: rcpt to:xxx@wxs.nl
                ("data", 354),
                ("Dit is een voorbeeld.", None),
                (".", 250),
            ],
        )
        # HELO: one line with our name, no extension list (the seed's "250 smtp01.wxs.nl").
        assert len(replies[0].lines) == 1 and replies[0].lines[0].startswith("mx.example.test")
        assert "test@test.nl" in replies[1].text  # the address, as the seed's server names it
        assert replies[-1].queue_id
        wire.cmd("quit", 221)
    message = stored_message(postroom, ALICE, b"Dit is een voorbeeld.")
    trace, rest = split_trace(message)
    assert trace[0] == b"Return-Path: <test@test.nl>\n"
    assert rest == b"Dit is een voorbeeld.\n"


def test_seed_001_howstuffworks_dialog(postroom: Postroom) -> None:
    assert_in_seed(
        "001",
        "helo test",
        "mail from: test@sample.com",
        "rcpt to: jsmith@mindspring.com",
        "to:jsmith@mindspring.com",
        "John, I am testing...",
    )
    body = ["from: test@sample.com", "to:jsmith@mindspring.com", "subject: testing"]
    body.append("John, I am testing...")
    with connect(postroom.smtp_port) as wire:
        replay(
            wire,
            [
                ("helo test", 250),
                ("mail from: test@sample.com", 250),
                ("rcpt to: bob@example.test", 250),  # seed: rcpt to: jsmith@mindspring.com
                ("data", 354),
                *((line, None) for line in body),
                (".", 250),
                ("quit", 221),
            ],
        )
        assert wire.read_until_closed() == b""
    message = stored_message(postroom, BOB, b"John, I am testing...")
    trace, rest = split_trace(message)
    assert trace[0] == b"Return-Path: <test@sample.com>\n"
    assert rest == ("\n".join(body) + "\n").encode()


# --- 002: fokus.gmd.de, "MAIL From: Bill Clinton <clinton@whitehouse.gov>" -------------------


def test_seed_002_fokus_bill_clinton(postroom: Postroom) -> None:
    assert_in_seed(
        "002",
        "HELO lupus.fokus.gmd.de",
        "MAIL From: Bill Clinton <clinton@whitehouse.gov>",
        "RCPT To: hgs@fokus.gmd.de",
        "Date: Wed, 24 Jan 96 11:49:58 EST",
    )
    body = [
        "To: hgs",
        "From: Bill Clinton <clinton@whitehouse.gov>",
        "Subject: Your new job",
        "Date: Wed, 24 Jan 96 11:49:58 EST",
        "",
        "Welcome to your new job as chief of staff.",
    ]
    with connect(postroom.smtp_port) as wire:
        replies = replay(
            wire,
            [
                ("HELO lupus.fokus.gmd.de", 250),
                ("MAIL From: Bill Clinton <clinton@whitehouse.gov>", 250),
                ("RCPT To: bob@example.test", 250),  # seed: RCPT To: hgs@fokus.gmd.de
                ("DATA", 354),
                *((line, None) for line in body),
                (".", 250),
                ("QUIT", 221),
            ],
        )
        assert "clinton@whitehouse.gov" in replies[1].text
        assert replies[4].enhanced == "2.0.0"
    message = stored_message(postroom, BOB, b"chief of staff")
    trace, rest = split_trace(message)
    # The seed's "mail as received" starts with Return-path: <clinton@whitehouse.gov>.
    assert trace[0] == b"Return-Path: <clinton@whitehouse.gov>\n"
    received = b" ".join(trace[1].split())
    assert received.startswith(b"Received: from lupus.fokus.gmd.de")
    assert b"with SMTP" in received
    assert rest == ("\n".join(body) + "\n").encode()


# --- 003: testingsmtp.com, "MAIL FROM: test@testingsmtp.com" ---------------------------------


def test_seed_003_testingsmtp(postroom: Postroom) -> None:
    assert_in_seed(
        "003",
        "HELO localhost",
        "MAIL FROM: test@testingsmtp.com",
        "RCPT TO: richlowe@internet--tips.net",
        "Message-Id: <02101708262848@testingsmtp.com>",
    )
    body = [
        "Message-Id: <02101708262848@testingsmtp.com>",
        "From: test@testingsmtp.com",
        "To: richlowe@internet--tips.net",
        "Subject: This is a test of SMTP",
        "",
        "",
        "This example shows how SMTP works. Pretty nifty, isn't it?",
        "",
    ]
    with connect(postroom.smtp_port) as wire:
        replies = replay(
            wire,
            [
                ("HELO localhost", 250),
                ("MAIL FROM: test@testingsmtp.com", 250),
                ("RCPT TO: alice@example.test", 250),  # seed: RCPT TO: richlowe@internet--tips.net
                ("DATA", 354),
                *((line, None) for line in body),
                (".", 250),
                ("QUIT", 221),
            ],
        )
        assert replies[0].lines[0].startswith("mx.example.test")
        assert replies[4].queue_id
    message = stored_message(postroom, ALICE, b"Pretty nifty")
    trace, rest = split_trace(message)
    assert trace[0] == b"Return-Path: <test@testingsmtp.com>\n"
    assert rest == ("\n".join(body) + "\n").encode()
    assert header_value(message, "message-id") == [b"<02101708262848@testingsmtp.com>"]


# --- 004: the DE-CIX academy slides -----------------------------------------------------------


def test_seed_004_de_cix(postroom: Postroom) -> None:
    assert_in_seed(
        "004",
        "EHLO mailserver.de-cix.net",
        "MAIL FROM: wolfgang.tremmel@de-cix.net",
        "RCPT TO: academy@de-cix.net",
        "...some email...",
    )
    with connect(postroom.smtp_port) as wire:
        ehlo, mail, rcpt, data, end = replay(
            wire,
            [
                ("EHLO mailserver.de-cix.net", 250),
                ("MAIL FROM: wolfgang.tremmel@de-cix.net", 250),
                ("RCPT TO: alice@example.test", 250),  # seed: RCPT TO: academy@de-cix.net
                ("DATA", 354),
                ("...some email...", None),
                (".", 250),
            ],
        )
        # The keyword list of the seed's "receiver.example.net" (minus VRFY: we never verify).
        assert {
            "PIPELINING",
            "SIZE",
            "ETRN",
            "STARTTLS",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
        } <= ehlo.keywords, ehlo
        assert "AUTH" not in ehlo.keywords, "AUTH offered in plaintext"
        assert mail.enhanced == "2.1.0"
        assert rcpt.enhanced == "2.1.5"
        assert data.code == 354
        assert end.enhanced == "2.0.0" and end.queue_id
        # "After transmitting an email the sender can either transmit the next one ...":
        # the seed's own recipient is not ours, and we are no open relay.
        _, rcpt2 = replay(
            wire,
            [("MAIL FROM: academy@de-cix.net", 250), ("RCPT TO: someone@example.com", 554)],
        )
        assert rcpt2.enhanced == "5.7.1"
        assert wire.cmd("RCPT TO: academy@de-cix.net").code == 554
        wire.cmd("RSET", 250)
        quit_reply = wire.cmd("QUIT", 221)
        assert quit_reply.enhanced == "2.0.0"
    # Sent raw, the line is not dot-stuffed: RFC 5321 §4.5.2 removes its first dot.
    message = stored_message(postroom, ALICE, b"..some email...")
    trace, rest = split_trace(message)
    assert trace[0] == b"Return-Path: <wolfgang.tremmel@de-cix.net>\n"
    assert b"with ESMTP " in b" ".join(trace[1].split())
    assert rest == b"..some email...\n"
    assert "someone@example.com" not in postroom.queue_list()


# --- 000: the hasenstein course (Thunderbird capture, telnet session, rich mail) ------------


def test_seed_000_smtp_1982_and_esmtp_greetings(postroom: Postroom) -> None:
    assert_in_seed("000", "HELO machine", "EHLO machine")
    with connect(postroom.smtp_port) as wire:
        helo, bye = replay(wire, [("HELO machine", 250), ("QUIT", 221)])
        assert len(helo.lines) == 1, "HELO must not list ESMTP extensions"
        assert bye.text.startswith("2.0.0 ")
    with connect(postroom.smtp_port) as wire:
        ehlo, bye = replay(wire, [("EHLO machine", 250), ("QUIT", 221)])
        assert {"PIPELINING", "SIZE", "ETRN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN"} <= (
            ehlo.keywords
        )
        assert "SIZE 52428800" in ehlo.lines  # the seed's limit is our default


SEED_AUTH = "AUTH PLAIN AGZha2VAaGFzZW5zdGVpbi5jb20AaGFoYWhh"  # \0fake@hasenstein.com\0hahaha


def submission_login(server: Postroom, helo: str) -> Wire:
    """The seed's start on the submission port: EHLO, (AUTH refused in plaintext), STARTTLS,
    EHLO again, the seed's own AUTH line (unknown user here: 535), then AUTH as alice."""
    wire = connect(server.submission_port)
    ehlo = wire.cmd(f"EHLO {helo}", 250)
    assert "STARTTLS" in ehlo.keywords
    assert "AUTH" not in ehlo.keywords
    refused = wire.cmd(SEED_AUTH)
    assert refused.code in (530, 538) and refused.enhanced == "5.7.0", refused
    wire.cmd("STARTTLS", 220)
    wire.starttls(server.tls_context())
    ehlo = wire.cmd(f"EHLO {helo}", 250)
    auth_line = next(line for line in ehlo.lines if line.upper().startswith("AUTH "))
    assert {"PLAIN", "LOGIN"} <= set(auth_line.upper().split()[1:])
    failed = wire.cmd(SEED_AUTH, 535)
    assert failed.enhanced == "5.7.8"
    ok = wire.cmd(f"AUTH PLAIN {auth_plain(ALICE, server.passwords[ALICE])}", 235)
    assert ok.enhanced == "2.7.0"
    return wire


THUNDERBIRD = [
    "Message-ID: <472E0104.1090708@hasenstein.com>",
    "Date: Sun, 04 Nov 2007 18:27:32 +0100",
    "From: Michael Hasenstein <mh@hasenstein.com>",
    "Organization: Letexa",
    "User-Agent: Thunderbird 2.0.0.6 (Windows/20070728)",
    "MIME-Version: 1.0",
    "To: Michael Hasenstein <hasenstein@yahoo.com>",
    "Subject: Demo Email",
    "Content-Type: text/plain; charset=UTF-8; format=flowed",
    "Content-Transfer-Encoding: 7bit",
    "",
    "This is a VERY simple Email.",
]


def test_seed_000_thunderbird_capture(postroom: Postroom) -> None:
    assert_in_seed(
        "000",
        "EHLO [192.168.2.102]",
        SEED_AUTH,
        "MAIL FROM:<mh@hasenstein.com> SIZE=414",
        "RCPT TO:<hasenstein@yahoo.com>",
        "This is a VERY simple Email.",
    )
    with submission_login(postroom, "[192.168.2.102]") as wire:
        *_, end = replay(
            wire,
            [
                ("MAIL FROM:<mh@hasenstein.com> SIZE=414", 250),
                # Authenticated, so the seed's own (remote) recipient is accepted and queued ...
                ("RCPT TO:<hasenstein@yahoo.com>", 250),
                # ... and a local copy lets us look at what arrived.
                ("RCPT TO:<alice@example.test>", 250),
                ("DATA", 354),
                *((line, None) for line in THUNDERBIRD),
                (".", 250),
            ],
        )
        queue_id = end.queue_id
        assert queue_id
        wire.cmd("QUIT", 221)
    message = stored_message(postroom, ALICE, b"This is a VERY simple Email.")
    trace, rest = split_trace(message)
    assert trace[0] == b"Return-Path: <mh@hasenstein.com>\n"
    received = b" ".join(trace[1].split())
    assert received.startswith(b"Received: from [192.168.2.102]")
    assert b"with ESMTPSA" in received
    # Message-ID and Date were present: nothing is added, the content is untouched.
    assert rest == ("\n".join(THUNDERBIRD) + "\n").encode()
    listing = postroom.queue_list()
    assert queue_id in listing and "hasenstein@yahoo.com" in listing, listing


def test_seed_000_telnet_george_bush(postroom: Postroom) -> None:
    assert_in_seed(
        "000",
        "EHLO mha",
        "MAIL FROM: <president@whitehouse.gov>",
        "RCPT TO: <mh@hasenstein.com>",
        "Subject: Let's have dinner next week?",
    )
    body = [
        "From: George Bush <president@whitehouse.gov>",
        "To: My Friend Michael <mh@hasenstein.com>",
        "Subject: Let's have dinner next week?",
        "",
        "Hello Mike,",
        "",
        "How about dinner next week in the whitehouse? Everybody hates me, even my own party!",
        "I need somebody to talk to.",
        "",
        "George",
    ]
    with submission_login(postroom, "mha") as wire:
        replies = replay(
            wire,
            [
                ("MAIL FROM: <president@whitehouse.gov>", 250),
                ("RCPT TO: <bob@example.test>", 250),  # seed: RCPT TO: <mh@hasenstein.com>
                ("DATA", 354),
                *((line, None) for line in body),
                (".", 250),
                ("QUIT", 221),
            ],
        )
        assert "president@whitehouse.gov" in replies[0].text
        assert "bob@example.test" in replies[1].text
    message = stored_message(postroom, BOB, b"dinner next week")
    trace, rest = split_trace(message)
    assert trace[0] == b"Return-Path: <president@whitehouse.gov>\n"
    # Submission (RFC 6409 §8): the telnet message had no Message-ID and no Date; both added.
    assert len(header_value(message, "message-id")) == 1
    assert len(header_value(message, "date")) == 1
    assert rest.endswith(("\n".join(body) + "\n").encode())


RICH = [
    "Message-ID: <472E050C.5050706@hasenstein.com>",
    "Date: Sun, 04 Nov 2007 18:44:44 +0100",
    "From: Michael Hasenstein <mh@hasenstein.com>",
    "Organization: Letexa",
    "User-Agent: Thunderbird 2.0.0.6 (Windows/20070728)",
    "MIME-Version: 1.0",
    "To: Michael Hasenstein <hasenstein@yahoo.com>",
    "Subject: Demo Email (rich)",
    "Content-Type: multipart/related;",
    ' boundary="------------080405040301090904010302"',
    "",
    "This is a multi-part message in MIME format.",
    "--------------080405040301090904010302",
    "Content-Type: text/html; charset=UTF-8",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    '<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN">',
    "<html>",
    "<head>",
    "</head>",
    '<body bgcolor=3D"#ffffff" text=3D"#000000">',
    "Hi,<br>",
    "<br>",
    "This is a rich text <b>email </b>with an attachment (picture)!<br>",
    "<br>",
    '<div class=3D"moz-signature"><a href=3D"http://hasenstein.com/"><img src=3D"cid:par=',
    't1.07000905.02010606@hasenstein.com" alt=3D"M=C3=B6rre" border=3D"0"></a></div>',
    "</body>",
    "</html>",
    "",
    "--------------080405040301090904010302",
    "Content-Type: image/gif;",
    ' name="Letexa-Logo_80x60-BW.gif"',
    "Content-Transfer-Encoding: base64",
    "Content-ID: <part1.07000905.02010606@hasenstein.com>",
    "Content-Disposition: inline;",
    ' filename="Letexa-Logo_80x60-BW.gif"',
    "",
    "R0lGODlhUAA8AOeuAAAAAAEBAQICAgMDAwQEBAUFBQYGBgcHBwgICAkJCQoKCgsLCwwMDA0N",
    "DQ4ODg8PDxAQEBERERISEhMTExQUFBUVFRYWFhcXFxgYGBkZGRoaGhsbGxwcHB0dHR4eHh8f",
    "6KYEEMDndjTUgAY4wAE+ioADHjCBCnhINORlAQ6g0AhmfEMc4iAHcjtcq5F9rEMbbkkGKpIx",
    "DWCwoQcpyIAGVqAkMZTBDGeAQx/ogIY05EEQTkoxdGerj1hdlCKC2sc8OpUPcmADs5ZIhmzD",
    "IY5xAAgdUxrHOdJhJUerKnMCUdRqW2vqIqO6Ihp+taxnTeta2/rWuM61rhUSEAA7",
    "--------------080405040301090904010302--",
]


def test_seed_000_rich_mail_with_attachment(postroom: Postroom) -> None:
    assert_in_seed("000", "MAIL FROM:<mh@hasenstein.com> SIZE=5597", "Demo Email (rich)")
    with submission_login(postroom, "[192.168.2.102]") as wire:
        replay(
            wire,
            [
                ("MAIL FROM:<mh@hasenstein.com> SIZE=5597", 250),
                ("RCPT TO:<bob@example.test>", 250),  # seed: RCPT TO:<hasenstein@yahoo.com>
                ("DATA", 354),
                *((line, None) for line in RICH),
                (".", 250),
                ("QUIT", 221),
            ],
        )
    message = stored_message(postroom, BOB, b"Demo Email (rich)")
    _, rest = split_trace(message)
    assert rest == ("\n".join(RICH) + "\n").encode()
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/related"
    html, image = parsed.iter_parts()  # type: ignore[attr-defined]
    assert "rich text <b>email </b>" in html.get_content()
    assert image.get_content_type() == "image/gif"
    assert image.get_content().startswith(b"GIF89a")


@pytest.mark.parametrize("seed", ["000", "001", "002", "003", "004"])
def test_seed_documents_are_present(seed: str) -> None:
    """Guard: the replays above are checked against the seed texts when they are available."""
    if not SEEDS.is_dir():
        pytest.skip(f"{SEEDS} not available")
    assert seed_text(seed) is not None, f"no seed {seed}_*.txt in {SEEDS}"


def test_seed_003_sent_one_byte_at_a_time(postroom: Postroom) -> None:
    """The same conversation trickled byte by byte (a human at telnet, or a hostile client)."""
    body = [
        "Message-Id: <02101708262848@testingsmtp.com>",
        "From: test@testingsmtp.com",
        "Subject: This is a test of SMTP, slowly",
        "",
        ".leading dot, stuffed below",
        "",
    ]
    script = [
        ("HELO localhost", 250),
        ("MAIL FROM: test@testingsmtp.com", 250),
        ("RCPT TO: alice@example.test", 250),
        ("DATA", 354),
        *((("." + line) if line.startswith(".") else line, None) for line in body),
        (".", 250),
        ("QUIT", 221),
    ]
    with connect(postroom.smtp_port) as wire:
        wire.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for line, expected in script:
            for byte in line.encode() + b"\r\n":
                wire.sock.sendall(bytes([byte]))
            if expected is not None:
                reply = wire.reply()
                assert reply.code == expected, (line, reply)
    message = stored_message(postroom, ALICE, b"slowly")
    _, rest = split_trace(message)
    assert rest == ("\n".join(body) + "\n").encode()
