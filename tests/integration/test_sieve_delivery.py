"""Sieve at local delivery (issue 14 §1), over real sockets: a user's active script files mail
into mailboxes (created with :create, else INBOX), sets flags, edits headers, discards,
redirects (with and without :copy), rejects with a report to the sender, answers with one
vacation reply per sender, and a broken script keeps the mail."""

from __future__ import annotations

import imaplib
import re
import time
from collections.abc import Callable

import pytest

from postroom.storage.backend import direct_store

from .conftest import ALICE, BOB, DOMAIN, PASSWORDS, Postroom
from .mail_auth_world import dkim_signatures, routes
from .milters import Capture

SERVICES = ("smtp", "imaps")


@pytest.fixture
def server(postroom_factory: Callable[..., Postroom]) -> Postroom:
    return postroom_factory(services=SERVICES)


def activate(server: Postroom, address: str, source: str) -> None:
    store = direct_store(server.data_dir)
    try:
        with store.transaction() as tx:
            user = tx.accounts.get_user(address)
            assert user is not None
            tx.sieve.put(user.id, "main", source, time.time())
            tx.sieve.activate(user.id, "main")
    finally:
        store.close()


def send(
    server: Postroom, subject: str, *, sender: str = "ann@remote.test", to: str = ALICE
) -> None:
    data = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\nHello.\r\n"
    )
    with server.smtp() as client:
        client.sendmail(sender, [to], data)


def wait_for(server: Postroom, address: str, mailbox: str, count: int) -> list[bytes]:
    deadline = time.monotonic() + 20
    while True:
        found = server.export_mailbox(address, mailbox)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def flags_in(server: Postroom, mailbox: str) -> list[str]:
    client = imaplib.IMAP4_SSL(
        server.host, server.ports["imaps"], ssl_context=server.tls_context(), timeout=30
    )
    try:
        client.login(ALICE, PASSWORDS[ALICE])
        assert client.select(mailbox, readonly=True)[0] == "OK"
        typ, data = client.fetch("1:*", "(FLAGS)")
        assert typ == "OK"
        return [d.decode() for d in data if isinstance(d, bytes)]
    finally:
        client.logout()


def test_fileinto_create_flags_and_editheader(server: Postroom) -> None:
    activate(
        server,
        ALICE,
        'require ["fileinto", "mailbox", "imap4flags", "editheader"];\n'
        'if header :contains "subject" "report" {\n'
        '  addheader "X-Filed" "by sieve";\n'
        '  fileinto :create :flags "\\\\Flagged" "Reports";\n'
        '} elsif header :contains "subject" "nowhere" {\n'
        '  fileinto "Missing";\n'
        "}\n",
    )
    send(server, "weekly report")
    send(server, "going nowhere")
    send(server, "plain")
    reports = wait_for(server, ALICE, "Reports", 1)
    assert len(reports) == 1 and b"weekly report" in reports[0]
    assert b"\nX-Filed: by sieve\n" in reports[0] or reports[0].startswith(b"X-Filed: by sieve")
    assert any("\\Flagged" in line for line in flags_in(server, "Reports"))
    inbox = server.wait_for_messages(ALICE, 2)
    assert inbox["messages"] == 2  # "going nowhere" fell back to INBOX, "plain" kept
    server.wait_for_log(r"mailbox Missing of alice@example\.test does not exist: filed into INBOX")


def test_discard_redirect_and_copy(server: Postroom) -> None:
    activate(
        server,
        ALICE,
        'require ["copy"];\n'
        'if header :is "subject" "drop" { discard; stop; }\n'
        f'if header :is "subject" "forward" {{ redirect "{BOB}"; }}\n'
        f'if header :is "subject" "share" {{ redirect :copy "{BOB}"; }}\n',
    )
    for subject in ("drop", "forward", "share"):
        send(server, subject)
    bobs = wait_for(server, BOB, "INBOX", 2)
    assert sorted(re.search(rb"Subject: (\w+)", m)[1] for m in bobs) == [b"forward", b"share"]  # type: ignore[index]
    alices = server.export(ALICE)
    assert [re.search(rb"Subject: (\w+)", m)[1] for m in alices] == [b"share"]  # type: ignore[index]
    server.wait_for_log(r"discarded id=\S+ for alice@example\.test by script")


def test_reject_reports_to_the_sender(server: Postroom) -> None:
    activate(server, ALICE, 'require ["reject"];\nreject "I do not take mail from you";\n')
    send(server, "hello", sender=BOB)
    reports = wait_for(server, BOB, "INBOX", 1)
    assert len(reports) == 1
    words = b" ".join(reports[0].split())  # the report folds its lines
    assert b"Status: 5.7.1" in words
    assert b"rejected by the recipient's Sieve script: I do not take mail from you" in words
    assert b"multipart/report" in reports[0]
    assert server.mailbox_status(ALICE)["messages"] == 0


def test_vacation_replies_once_per_sender(server: Postroom) -> None:
    activate(
        server,
        ALICE,
        'require ["vacation"];\n'
        f'vacation :days 7 :addresses ["{ALICE}"] :subject "Away" "Back on Monday.";\n',
    )
    send(server, "first", sender=BOB)
    send(server, "second", sender=BOB)
    wait_for(server, BOB, "INBOX", 1)
    server.wait_for_messages(ALICE, 2)  # each reply is queued as its message is delivered
    replies = server.export(BOB)
    assert len(replies) == 1
    reply = replies[0]
    assert b"Subject: Away" in reply and b"Back on Monday." in reply
    assert b"Auto-Submitted: auto-replied" in reply
    assert b"In-Reply-To: <first@remote.test>" in reply
    assert reply.startswith(b"Return-Path: <>")


def test_a_broken_script_keeps_the_mail(server: Postroom) -> None:
    activate(server, ALICE, 'require ["fileinto"];\nfileinto "Reports"\n')  # no ";"
    send(server, "kept")
    assert server.wait_for_messages(ALICE, 1)["messages"] == 1
    server.wait_for_log(r"script main of alice@example\.test does not compile: .*; kept")


def test_redirect_leaves_with_srs_and_vacation_replies_are_signed(
    postroom_factory: Callable[..., Postroom],
) -> None:
    with Capture() as onward, Capture() as back:
        server = postroom_factory(
            services=SERVICES,
            extra=routes(dest=onward.address, sender=back.address),
        )
        activate(
            server,
            ALICE,
            'require ["vacation", "copy"];\n'
            'redirect :copy "carol@dest.test";\n'
            f'vacation :addresses ["{ALICE}"] :subject "Away" "Back soon.";\n',
        )
        send(server, "hello", sender="ann@sender.test")
        [forwarded] = onward.wait(1, log=server.log_tail)
        assert forwarded.rcpt_tos == ["carol@dest.test"]
        # The envelope sender is foreign: it leaves rewritten (SRS0, our domain), so SPF
        # passes at the next hop; the bounce address leads back to ann.
        assert re.fullmatch(r"SRS0=[^=@]+=\w\w=sender\.test=ann@example\.test", forwarded.mail_from)
        assert b"Subject: hello" in forwarded.data
        [reply] = back.wait(1, log=server.log_tail)
        assert (reply.mail_from, reply.rcpt_tos) == ("<>", ["ann@sender.test"])
        assert b"Auto-Submitted: auto-replied" in reply.data
        signatures = dkim_signatures(reply.data)  # From: is ours, so it is signed
        assert sorted(s["a"] for s in signatures) == ["ed25519-sha256", "rsa-sha256"]
        assert {s["d"] for s in signatures} == {DOMAIN}
    assert server.mailbox_status(ALICE)["messages"] == 1  # :copy kept it
