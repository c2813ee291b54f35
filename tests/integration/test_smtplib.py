"""The real server driven by Python's smtplib (and raw sockets where smtplib cannot go)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import smtplib
import ssl
from pathlib import Path

import pytest

from .conftest import ALICE, BOB, HOST, Factory, Postroom, free_ports
from .wire import (
    Wire,
    header_value,
    new_token,
    open_session,
    simple_message,
    split_trace,
    to_lf,
    with_token,
)

REMOTE = "carol@remote.test"


def only(messages: list[bytes], token: str) -> bytes:
    found = with_token(messages, token)
    assert len(found) == 1, f"expected exactly one message with {token}, found {len(found)}"
    return found[0]


def crlf_size(lf_content: bytes) -> int:
    return len(lf_content.replace(b"\n", b"\r\n"))


# --- plain MX delivery ---------------------------------------------------------------------------


def test_plain_send_to_local_user_arrives_byte_for_byte(postroom: Postroom) -> None:
    token = new_token()
    original = (
        b"From: Sender <x@y.test>\r\n"
        b"To: Alice <alice@example.test>\r\n"
        b"Subject: " + token.encode() + b"\r\n"
        b"Message-ID: <" + token.encode() + b"@y.test>\r\n"
        b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        b"X-Folded: first part\r\n\tsecond part\r\n"
        b"\r\n"
        b"Line one\r\n"
        b".leading dot\r\n"
        b"..two leading dots\r\n"
        b".\r\n"
        b"(the line above was a lone dot)\r\n"
        b"From the start of a line\r\n"
        b">From already quoted\r\n"
        b"trailing spaces   \r\n"
        b"\ttab indented\r\n"
        b"" + b"x" * 990 + b"\r\n"
        b"\r\n"
        b"\r\n"
        b"end\r\n"
    )
    with postroom.smtp() as client:
        client.ehlo()
        assert client.has_extn("pipelining")
        refused = client.sendmail("x@y.test", [ALICE], original)
    assert refused == {}

    status = postroom.wait_for_messages(ALICE, 1)
    assert status["messages"] == 1
    assert status["unseen"] == 1
    [stored] = postroom.export_maildir(ALICE)
    trace, rest = split_trace(stored)
    assert rest == to_lf(original), "content changed between smtplib and the mailbox"
    assert trace[0] == b"Return-Path: <x@y.test>\n"
    assert len(trace) == 2 and trace[1].startswith(b"Received: ")
    received = b" ".join(trace[1].split())
    assert b"from client.example.net" in received
    assert b"by mx.example.test" in received
    assert b"with ESMTP " in received
    assert b"for <alice@example.test>" in received
    # The size the store reports is the CRLF size of what a client would fetch.
    assert status["size"] == crlf_size(stored)
    # The mbox export carries the same bytes once the mboxrd quoting is undone.
    assert postroom.export(ALICE) == [stored]


def test_helo_client_gets_received_with_smtp(postroom: Postroom) -> None:
    token = new_token()
    with postroom.smtp() as client:
        client.helo("old.example.net")
        client.sendmail("x@y.test", [ALICE], simple_message(token))
    postroom.wait_for_messages(ALICE, 1)
    [stored] = postroom.export(ALICE)
    received = b" ".join(header_value(stored, "received")[0].split())
    assert b"with SMTP id" in received


# --- submission (587, STARTTLS) and submissions (465, implicit TLS) ---------------------------


@pytest.mark.parametrize("initial_response", [True, False], ids=["initial", "no-initial"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_submission_starttls_login_and_send(
    postroom: Postroom, mechanism: str, initial_response: bool
) -> None:
    token = new_token()
    message = (
        f"From: Alice <{ALICE}>\r\nTo: Bob <{BOB}>\r\nSubject: {token}\r\n\r\nHi Bob.\r\n"
    ).encode()
    with smtplib.SMTP(HOST, postroom.submission_port, local_hostname="laptop.example.net") as s:
        s.ehlo()
        assert s.has_extn("starttls")
        assert not s.has_extn("auth"), "AUTH must not be offered before TLS"
        code, _ = s.starttls(context=postroom.tls_context())
        assert code == 220
        s.ehlo()
        assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS"
        mechanisms = s.esmtp_features["auth"].upper().split()
        assert {"PLAIN", "LOGIN", "SCRAM-SHA-256"} <= set(mechanisms)
        s.user, s.password = ALICE, postroom.passwords[ALICE]
        code, text = s.auth(
            mechanism,
            getattr(s, f"auth_{mechanism.lower()}"),
            initial_response_ok=initial_response,
        )
        assert code == 235, text
        assert text.startswith(b"2.7.0")
        assert s.sendmail(ALICE, [BOB], message) == {}

    postroom.wait_for_messages(BOB, 1)
    stored = only(postroom.export(BOB), token)
    trace, rest = split_trace(stored)
    received = b" ".join(trace[1].split())
    assert b"with ESMTPSA" in received
    # RFC 6409 §8: the submission server adds Message-ID and Date when they are missing.
    assert len(header_value(rest, "message-id")) == 1
    assert len(header_value(rest, "date")) == 1
    assert rest.endswith(b"Subject: " + token.encode() + b"\n\nHi Bob.\n")


def test_submission_keeps_existing_message_id_and_date(postroom: Postroom) -> None:
    token = new_token()
    with postroom.submission() as s:
        s.sendmail(ALICE, [BOB], simple_message(token, ALICE, BOB))
    postroom.wait_for_messages(BOB, 1)
    stored = only(postroom.export(BOB), token)
    assert header_value(stored, "message-id") == [f"<{token}@y.test>".encode()]
    assert len(header_value(stored, "date")) == 1


def test_submissions_implicit_tls(postroom: Postroom) -> None:
    token = new_token()
    with postroom.submissions(login=None) as s:
        s.ehlo()
        assert not s.has_extn("starttls"), "STARTTLS offered on an implicit-TLS port"
        assert "PLAIN" in s.esmtp_features["auth"].upper().split()
        version = s.sock.version()  # type: ignore[union-attr]
        assert version in ("TLSv1.2", "TLSv1.3")
        s.login(ALICE, postroom.passwords[ALICE])
        assert s.sendmail(ALICE, [BOB], simple_message(token, ALICE, BOB)) == {}
    postroom.wait_for_messages(BOB, 1)
    stored = only(postroom.export(BOB), token)
    received = b" ".join(header_value(stored, "received")[0].split())
    assert b"with ESMTPSA" in received
    assert b"TLSv1." in received


def test_submission_requires_auth_before_mail(postroom: Postroom) -> None:
    with postroom.submission(login=None) as s:
        code, text = s.mail(ALICE)
        assert (code, text[:5]) == (530, b"5.7.0")
        # Local recipients do not bypass it either.
        code, _ = s.rcpt(BOB)
        assert code == 503


def test_wrong_password_is_535(postroom: Postroom) -> None:
    with postroom.submission(login=None) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            s.login(ALICE, "not-the-password")
        assert failure.value.smtp_code == 535
        assert failure.value.smtp_error.startswith(b"5.7.8")
        # Unknown users get the very same answer (no user enumeration).
        with pytest.raises(smtplib.SMTPAuthenticationError) as unknown:
            s.login("nobody@example.test", "whatever")
        assert unknown.value.smtp_code == 535
        assert unknown.value.smtp_error == failure.value.smtp_error
        # The session survives and a correct login still works.
        code, _ = s.login(ALICE, postroom.passwords[ALICE])
        assert code == 235


def test_scram_sha_256_over_starttls(postroom: Postroom) -> None:
    """RFC 5802/7677 by hand: the client proves the password and checks the server signature."""
    password = postroom.passwords[ALICE].encode()
    with open_session(postroom.submission_port) as wire:
        wire.cmd("STARTTLS", 220)
        wire.starttls(postroom.tls_context())
        ehlo = wire.cmd("EHLO client.example.net", 250)
        assert any("SCRAM-SHA-256" in line for line in ehlo.lines)
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={ALICE},r={nonce}"
        first = base64.b64encode(f"n,,{first_bare}".encode()).decode()
        challenge = wire.cmd(f"AUTH SCRAM-SHA-256 {first}", 334)
        server_first = base64.b64decode(challenge.lines[0]).decode()
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        assert fields["r"].startswith(nonce)
        salted = hashlib.pbkdf2_hmac(
            "sha256", password, base64.b64decode(fields["s"]), int(fields["i"])
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        final_bare = f"c=biws,r={fields['r']}"
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        final = f"{final_bare},p={base64.b64encode(proof).decode()}"
        reply = wire.cmd(base64.b64encode(final.encode()).decode())
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        expected = "v=" + base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode()
        if reply.code == 334:  # server-final as a challenge, then an empty response
            assert base64.b64decode(reply.lines[0]).decode() == expected
            reply = wire.cmd("")
        assert reply.code == 235, reply
        wire.cmd(f"MAIL FROM:<{ALICE}>", 250)
        wire.cmd(f"RCPT TO:<{REMOTE}>", 250)  # authenticated: relaying allowed
        wire.cmd("QUIT", 221)


# --- relay policy --------------------------------------------------------------------------------


def test_relay_denied_without_auth(postroom: Postroom) -> None:
    token = new_token()
    with postroom.smtp() as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("x@y.test", [REMOTE], simple_message(token, to=REMOTE))
        code, text = refused.value.recipients[REMOTE]
        assert (code, text[:5]) == (554, b"5.7.1")
        # Mixed recipients: the local one is accepted, the remote one refused.
        problems = client.sendmail("x@y.test", [REMOTE, ALICE], simple_message(token))
        assert problems == {REMOTE: (554, problems[REMOTE][1])}
    postroom.wait_for_messages(ALICE, 1)
    queue = postroom.queue_list()
    assert REMOTE not in queue, f"an unauthenticated relay attempt was queued:\n{queue}"


def test_relay_accepted_with_auth_stays_in_queue(postroom: Postroom) -> None:
    token = new_token()
    with postroom.submission() as s:
        s.mail(ALICE)
        code, _ = s.rcpt(REMOTE)
        assert code == 250
        code, text = s.data(simple_message(token, ALICE, REMOTE))
        assert code == 250, text
    queue_id = text.decode().rsplit(" ", 1)[-1]
    assert queue_id, text
    listing = postroom.queue_list()
    assert queue_id in listing, listing
    assert REMOTE in listing
    assert "\tqueued\t" in listing or "\tdeferred\t" in listing  # waiting (no DNS in tests)
    # It stays there: it is not delivered locally, and is still listed a moment later.
    assert postroom.mailbox_status(ALICE)["messages"] == 0
    assert queue_id in postroom.queue_list()


def test_unknown_local_user_is_550_5_1_1(postroom: Postroom) -> None:
    token = new_token()
    with postroom.smtp() as client:
        client.ehlo()
        client.mail("x@y.test")
        code, text = client.rcpt("nobody@example.test")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, _ = client.rcpt(ALICE)
        assert code == 250
        code, _ = client.data(simple_message(token))
        assert code == 250
    postroom.wait_for_messages(ALICE, 1)
    only(postroom.export(ALICE), token)


def test_recipient_case_does_not_matter(postroom: Postroom) -> None:
    token = new_token()
    with postroom.smtp() as client:
        assert client.sendmail("x@y.test", ["Alice@Example.TEST"], simple_message(token)) == {}
    postroom.wait_for_messages(ALICE, 1)


# --- aliases and multiple recipients -----------------------------------------------------------


def test_alias_expands_to_two_local_users_one_copy_each(postroom: Postroom) -> None:
    postroom.run_cli("alias", "add", "team@example.test", ALICE, BOB)
    first, second = new_token("alias1"), new_token("alias2")
    with postroom.smtp() as client:
        assert client.sendmail("x@y.test", ["team@example.test"], simple_message(first)) == {}
        # The alias and one of its members in the same transaction: still one copy each.
        recipients = ["team@example.test", ALICE]
        assert client.sendmail("x@y.test", recipients, simple_message(second)) == {}
    for user in (ALICE, BOB):
        postroom.wait_for_messages(user, 2)
        messages = postroom.export(user)
        assert len(messages) == 2, f"{user} has {len(messages)} messages, expected 2"
        only(messages, first)
        only(messages, second)


def test_message_to_several_local_users_is_stored_once(postroom: Postroom) -> None:
    token = new_token()
    # Large enough to be stored as a file (bigger than any sensible in-memory threshold).
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"
    original = simple_message(token) + line * 8000
    with postroom.smtp() as client:
        assert client.sendmail("x@y.test", [ALICE, BOB], original) == {}
    copies = []
    for user in (ALICE, BOB):
        postroom.wait_for_messages(user, 1)
        [stored] = postroom.export_maildir(user)
        trace, rest = split_trace(stored)
        assert rest == to_lf(original)
        assert trace[0] == b"Return-Path: <x@y.test>\n"
        copies.append(trace[1:])
    # One queue entry: the same Received header (same queue ID) in both, without a "for".
    assert copies[0] == copies[1]
    assert b"for <" not in copies[0][0]
    blob_root = postroom.data_dir / "blobs"
    files = [
        path
        for path in blob_root.rglob("*")
        if path.is_file() and "tmp" not in path.relative_to(blob_root).parts
    ]
    assert len(files) <= 1, f"the body was stored more than once: {files}"


# --- 8BITMIME, SMTPUTF8, SIZE --------------------------------------------------------------------


def test_8bitmime_and_smtputf8_message_accepted(postroom: Postroom) -> None:
    token = new_token()
    sender = "jörg@beispiel.test"
    original = (
        f"From: Jörg Müller <{sender}>\r\n"
        f"To: <{ALICE}>\r\n"
        f"Subject: Grüße {token} ✉\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Schöne Grüße aus Köln — 日本語のテキスト.\r\n"
    ).encode()
    with postroom.smtp() as client:
        client.ehlo()
        assert client.has_extn("8bitmime")
        assert client.has_extn("smtputf8")
        refused = client.sendmail(
            sender, [ALICE], original, mail_options=["BODY=8BITMIME", "SMTPUTF8"]
        )
    assert refused == {}
    postroom.wait_for_messages(ALICE, 1)
    [stored] = postroom.export_maildir(ALICE)
    trace, rest = split_trace(stored)
    assert rest == to_lf(original)
    assert trace[0] == f"Return-Path: <{sender}>\n".encode()


@pytest.mark.parametrize("domain", ["bücher.test", "münchen.example", "日本.test"])
def test_smtputf8_sender_with_idn_domain(postroom: Postroom, domain: str) -> None:
    """RFC 6531 §3.3: with SMTPUTF8 the domain may be a U-label such as "bücher"."""
    sender = f"jörg@{domain}"
    with open_session(postroom.smtp_port) as wire:
        reply = wire.cmd(f"MAIL FROM:<{sender}> SMTPUTF8")
        assert reply.code == 250, f"MAIL FROM:<{sender}> SMTPUTF8 refused: {reply}"
        wire.cmd(f"RCPT TO:<{ALICE}>", 250)
        token = new_token()
        wire.cmd("DATA", 354)
        wire.send(simple_message(token) + b".\r\n")
        wire.expect(250)
    postroom.wait_for_messages(ALICE, 1)
    [stored] = postroom.export(ALICE)
    assert stored.startswith(f"Return-Path: <{sender}>\n".encode())


def test_smtputf8_recipient_mailbox(postroom: Postroom) -> None:
    user = "zoë@example.test"
    postroom.add_user(user, "zoe-secret")
    token = new_token()
    with postroom.smtp() as client:
        assert client.sendmail("x@y.test", [user], simple_message(token), ["SMTPUTF8"]) == {}
    postroom.wait_for_messages(user, 1)
    # Without SMTPUTF8 a non-ASCII address is refused (RFC 6531 §3.4).
    with open_session(postroom.smtp_port) as wire:
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        reply = wire.cmd(f"RCPT TO:<{user}>")
        assert reply.code in (553, 501, 550), reply
        assert reply.code != 250


def test_ehlo_advertises_the_configured_size(postroom: Postroom) -> None:
    with postroom.smtp() as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "52428800"
        code, text = client.mail("x@y.test", ["SIZE=999999999"])
        assert (code, text[:5]) == (552, b"5.3.4")
        code, _ = client.mail("x@y.test", ["SIZE=52428800"])
        assert code == 250


def test_size_parameter_over_small_limit_is_552(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(limits={"message_size": 10000})
    with server.smtp() as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "10000"
        code, text = client.mail("x@y.test", ["SIZE=10001"])
        assert (code, text[:5]) == (552, b"5.3.4")
        code, _ = client.mail("x@y.test", ["SIZE=10000"])
        assert code == 250
        client.rset()
        # smtplib sends SIZE= itself; an oversize message is refused at MAIL.
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("x@y.test", [ALICE], simple_message("big") + b"y" * 20000 + b"\r\n")
        assert refused.value.smtp_code == 552


def test_oversize_body_is_552_and_nothing_queued(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(limits={"message_size": 10000})
    big, small = new_token("big"), new_token("small")
    body = simple_message(big) + (b"z" * 76 + b"\r\n") * 300  # ~23 KB, no SIZE= declared
    with server.smtp() as client:
        client.ehlo()
        code, _ = client.mail("x@y.test")
        assert code == 250
        assert client.rcpt(ALICE)[0] == 250
        code, text = client.data(body)
        assert (code, text[:5]) == (552, b"5.3.4"), text
        # The session goes on: a small message in the same session is accepted.
        assert client.sendmail("x@y.test", [ALICE], simple_message(small)) == {}
    server.wait_for_messages(ALICE, 1)
    messages = server.export(ALICE)
    assert len(messages) == 1
    only(messages, small)
    assert not with_token(messages, big)
    assert server.queue_list() == ""


# --- CHUNKING (BDAT) over a raw socket ----------------------------------------------------------


def test_bdat_chunks_arrive_unmodified(postroom: Postroom) -> None:
    token = new_token()
    chunk1 = (
        f"From: <x@y.test>\r\nTo: <{ALICE}>\r\nSubject: {token}\r\n\r\n"
        ".this line starts with a dot and BDAT does no unstuffing\r\n"
        ".\r\n"
        "the lone dot above does not end anything in BDAT\r\n"
    ).encode()
    chunk2 = b"..two dots stay two dots\r\nlast line\r\n"
    with open_session(postroom.smtp_port) as wire:
        ehlo_keywords = wire.cmd("EHLO client.example.net", 250).keywords
        assert "CHUNKING" in ehlo_keywords
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        wire.cmd(f"RCPT TO:<{ALICE}>", 250)
        wire.send(f"BDAT {len(chunk1)}\r\n".encode() + chunk1)
        reply = wire.expect(250)
        assert reply.enhanced == "2.0.0"
        wire.send(f"BDAT {len(chunk2)} LAST\r\n".encode() + chunk2)
        reply = wire.expect(250)
        assert reply.queue_id, reply
        # Pipelined: MAIL, RCPT and a single BDAT LAST in one write (RFC 2920 + RFC 3030).
        token2 = new_token()
        content = simple_message(token2)
        wire.send(
            f"MAIL FROM:<x@y.test>\r\nRCPT TO:<{BOB}>\r\nBDAT {len(content)} LAST\r\n".encode()
            + content
        )
        assert [wire.reply().code for _ in range(3)] == [250, 250, 250]
        # BDAT 0 LAST ends a message whose content came in earlier chunks.
        token3 = new_token()
        content3 = simple_message(token3)
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        wire.cmd(f"RCPT TO:<{BOB}>", 250)
        wire.send(f"BDAT {len(content3)}\r\n".encode() + content3)
        wire.expect(250)
        assert wire.cmd("BDAT 0 LAST", 250).queue_id
        wire.cmd("QUIT", 221)
    postroom.wait_for_messages(ALICE, 1)
    [stored] = postroom.export_maildir(ALICE)
    _, rest = split_trace(stored)
    assert rest == to_lf(chunk1 + chunk2)
    postroom.wait_for_messages(BOB, 2)
    bob = postroom.export_maildir(BOB)
    assert [split_trace(m)[1] for m in bob] == [to_lf(content), to_lf(content3)]


def test_data_after_bdat_is_refused(postroom: Postroom) -> None:
    with open_session(postroom.smtp_port) as wire:
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        wire.cmd(f"RCPT TO:<{ALICE}>", 250)
        wire.send(b"BDAT 5\r\nHello")
        wire.expect(250)
        assert wire.cmd("DATA").code == 503
        wire.cmd("RSET", 250)
        wire.cmd("QUIT", 221)


def test_vrfy_does_not_reveal_users(postroom: Postroom) -> None:
    with Wire(postroom.smtp_port) as wire:
        wire.expect(220)
        wire.cmd("EHLO client.example.net", 250)
        known = wire.cmd(f"VRFY {ALICE}")
        unknown = wire.cmd("VRFY nobody@example.test")
        assert known.code == unknown.code == 252
        assert wire.cmd("EXPN team").code == 252


# --- more of RFC 5321 over the wire ---------------------------------------------------------------


def test_large_message_round_trip(postroom: Postroom) -> None:
    """A few MB stream through DATA, the spool and the store without a changed byte."""
    token = new_token("large")
    lines = [base64.b64encode(os.urandom(57)) + b"\r\n" for _ in range(40000)]  # ~3.1 MB
    original = simple_message(token) + b"".join(lines)
    with postroom.smtp(timeout=60) as client:
        assert client.sendmail("x@y.test", [ALICE], original) == {}
    postroom.wait_for_messages(ALICE, 1)
    [stored] = postroom.export_maildir(ALICE)
    assert split_trace(stored)[1] == to_lf(original)


def test_two_transactions_pipelined_in_one_write(postroom: Postroom) -> None:
    first, second = new_token("p1"), new_token("p2")
    with open_session(postroom.smtp_port) as wire:
        wire.send(
            f"MAIL FROM:<x@y.test>\r\nRCPT TO:<{ALICE}>\r\nDATA\r\n".encode()
            + simple_message(first)
            + f".\r\nMAIL FROM:<x@y.test>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode()
            + simple_message(second)
            + b".\r\nQUIT\r\n"
        )
        codes = [wire.reply().code for _ in range(9)]
        assert codes == [250, 250, 354, 250, 250, 250, 354, 250, 221], wire
    postroom.wait_for_messages(ALICE, 1)
    postroom.wait_for_messages(BOB, 1)
    only(postroom.export(ALICE), first)
    only(postroom.export(BOB), second)


def test_recipient_limit_is_452(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(limits={"recipients": 2})
    with open_session(server.smtp_port) as wire:
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        wire.cmd(f"RCPT TO:<{ALICE}>", 250)
        wire.cmd(f"RCPT TO:<{BOB}>", 250)
        third = wire.cmd("RCPT TO:<postmaster@example.test>")
        assert (third.code, third.enhanced) == (452, "4.5.3"), third
        wire.cmd("DATA", 354)
        wire.send(simple_message(new_token()) + b".\r\n")
        assert wire.reply().code == 250
        wire.cmd("QUIT", 221)


def test_dsn_parameters_are_accepted(postroom: Postroom) -> None:
    token = new_token()
    with postroom.smtp() as client:
        client.ehlo()
        assert client.has_extn("dsn")
        refused = client.sendmail(
            "x@y.test",
            [ALICE],
            simple_message(token),
            mail_options=["RET=HDRS", "ENVID=QQ314159+2Bx"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;alice@example.test"],
        )
        assert refused == {}
        code, text = client.mail("x@y.test", ["RET=EVERYTHING"])
        assert code == 501, text
    postroom.wait_for_messages(ALICE, 1)


def test_catch_all_and_forwarding_aliases(postroom: Postroom) -> None:
    postroom.run_cli("alias", "add", "@example.test", BOB)
    postroom.run_cli("alias", "add", "fwd@example.test", "dave@remote.test", ALICE)
    caught, forwarded = new_token("catch"), new_token("fwd")
    with postroom.smtp() as client:
        assert client.sendmail("x@y.test", ["anything@example.test"], simple_message(caught)) == {}
        # An alias owner may forward outside: that is not an open relay.
        assert client.sendmail("x@y.test", ["fwd@example.test"], simple_message(forwarded)) == {}
    postroom.wait_for_messages(BOB, 1)
    only(postroom.export(BOB), caught)
    postroom.wait_for_messages(ALICE, 1)
    only(postroom.export(ALICE), forwarded)
    assert "dave@remote.test" in postroom.queue_list()


def test_postmaster_without_domain_is_accepted(postroom: Postroom) -> None:
    """RFC 5321 §4.5.1: <Postmaster> (no domain) must be accepted; here it is an alias of alice."""
    postroom.run_cli("alias", "add", "postmaster@example.test", ALICE)
    token = new_token()
    with open_session(postroom.smtp_port) as wire:
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        wire.cmd("RCPT TO:<Postmaster>", 250)
        wire.cmd("DATA", 354)
        wire.send(simple_message(token) + b".\r\n")
        wire.expect(250)
    postroom.wait_for_messages(ALICE, 1)


def test_every_transaction_is_logged_on_one_line(postroom: Postroom) -> None:
    token = new_token()
    with postroom.smtp() as client:
        client.ehlo()
        client.mail("x@y.test")
        client.rcpt(ALICE)
        code, text = client.data(simple_message(token))
        assert code == 250
        client.mail("x@y.test")
        assert client.rcpt("nobody@example.test")[0] == 550
    queue_id = text.decode().rsplit(" ", 1)[-1]
    line = postroom.wait_for_log(
        rf"queued id={queue_id} client=127\.0\.0\.1 from=<x@y\.test> "
        rf"to=<alice@example\.test> size=\d+ result=250"
    )
    assert line
    postroom.wait_for_log(r"nobody@example\.test.*550|550.*nobody@example\.test")


def test_same_recipient_twice_in_different_case_is_stored_once(postroom: Postroom) -> None:
    token = new_token()
    with postroom.smtp() as client:
        recipients = [ALICE, "ALICE@example.test", "alice@EXAMPLE.TEST"]
        assert client.sendmail("x@y.test", recipients, simple_message(token)) == {}
        sentinel = new_token("sentinel")
        assert client.sendmail("x@y.test", [ALICE], simple_message(sentinel)) == {}
    postroom.wait_for_messages(ALICE, 2)
    messages = postroom.export(ALICE)
    assert len(messages) == 2, f"{len(messages)} copies instead of one message + sentinel"
    only(messages, token)


def test_message_size_limit_boundary(postroom_factory: Factory) -> None:
    limit = 10000
    server: Postroom = postroom_factory(limits={"message_size": limit})
    head = simple_message(new_token("exact"))
    exact = head + b"x" * (limit - len(head) - 2) + b"\r\n"
    assert len(exact) == limit
    with server.smtp() as client:
        client.ehlo()
        client.mail("x@y.test")
        client.rcpt(ALICE)
        code, text = client.data(exact)
        assert code == 250, f"a message of exactly message_size octets was refused: {text!r}"
        client.mail("x@y.test")
        client.rcpt(ALICE)
        code, _ = client.data(exact[:-2] + b"x\r\n")
        assert code == 552
    server.wait_for_messages(ALICE, 1)


def test_trailing_dot_local_domain_is_not_relayed(postroom: Postroom) -> None:
    """`bob@example.test.` is bob@example.test written as an absolute domain name.

    It must be delivered to bob (or refused outright), never queued for outbound delivery to a
    "remote" domain that is this very server (which would loop back here later).
    """
    token = new_token()
    with postroom.submission() as s:
        s.mail(ALICE)
        code, text = s.rcpt("bob@example.test.")
        if code == 250:
            code, text = s.data(simple_message(token, ALICE, BOB))
            assert code == 250, text
    listing = postroom.queue_list()
    assert "bob@example.test." not in listing, (
        f"a local recipient was queued for remote delivery:\n{listing}"
    )
    if code == 250:
        postroom.wait_for_messages(BOB, 1)


def test_quoted_local_part_is_the_same_mailbox(postroom: Postroom) -> None:
    """RFC 5322 §3.2.4: a quoted-string is semantically identical to the atom ("alice" = alice)."""
    token = new_token()
    with open_session(postroom.smtp_port) as wire:
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        reply = wire.cmd('RCPT TO:<"alice"@example.test>')
        assert reply.code == 250, f'<"alice"@example.test> refused: {reply}'
        wire.cmd("DATA", 354)
        wire.send(simple_message(token) + b".\r\n")
        wire.expect(250)
    postroom.wait_for_messages(ALICE, 1)


def test_ipv6_listener_and_received_literal(postroom_factory: Factory) -> None:
    try:
        free_ports(1, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server: Postroom = postroom_factory(host="::1", services=("smtp",))
    token = new_token()
    with server.smtp() as client:
        assert client.sendmail("x@y.test", [ALICE], simple_message(token)) == {}
    server.wait_for_messages(ALICE, 1)
    [stored] = server.export(ALICE)
    received = b" ".join(header_value(stored, "received")[0].split())
    assert b"[IPv6:::1]" in received, received
    server.wait_for_log(r"queued id=\S+ client=::1 ")


def test_alias_change_takes_effect_for_the_next_message(postroom: Postroom) -> None:
    """`alias add` through the CLI while the server runs: the next mail follows the new alias."""
    postroom.run_cli("alias", "add", "team@example.test", ALICE)
    first, second = new_token("before"), new_token("after")
    with postroom.smtp() as client:
        assert client.sendmail("x@y.test", ["team@example.test"], simple_message(first)) == {}
    postroom.run_cli("alias", "add", "team@example.test", BOB)
    with postroom.smtp() as client:
        assert client.sendmail("x@y.test", ["team@example.test"], simple_message(second)) == {}
    postroom.wait_for_messages(ALICE, 2)
    sentinel = new_token("sentinel")
    with postroom.smtp() as client:
        client.sendmail("x@y.test", [BOB], simple_message(sentinel))
    postroom.wait_for_messages(BOB, 1)
    bob = postroom.export(BOB)
    assert with_token(bob, second), "bob, added to the alias before the mail was sent, got nothing"


# --- configured certificate ([tls] cert/key) ---------------------------------------------------


def test_configured_certificate_is_used(postroom_factory: Factory, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    issued = ca.issue_cert("mx.example.test", "127.0.0.1")
    cert, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    issued.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    server: Postroom = postroom_factory(tls={"cert": str(cert), "key": str(key)})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    token = new_token()
    with smtplib.SMTP(HOST, server.submission_port, local_hostname="client.example.net") as s:
        s.starttls(context=context)  # verifies the chain and 127.0.0.1 against our CA
        s.ehlo()
        s.login(ALICE, server.passwords[ALICE])
        assert s.sendmail(ALICE, [BOB], simple_message(token, ALICE, BOB)) == {}
    with smtplib.SMTP_SSL(HOST, server.submissions_port, context=context) as s:
        s.login(BOB, server.passwords[BOB])
    server.wait_for_messages(BOB, 1)
    assert not (server.data_dir / "tls" / "cert.pem").exists(), "a self-signed cert was made"


def test_unusable_certificate_is_one_line_error(postroom_factory: Factory, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    server: Postroom = postroom_factory(
        start=False, tls={"cert": str(missing), "key": str(missing)}
    )
    result = server.run_cli("serve", check=False, timeout=30)
    output = result.stderr + result.stdout
    assert result.returncode == 1, output
    assert "Traceback" not in output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing.pem" in lines[0], result.stderr
