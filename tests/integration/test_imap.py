"""IMAP over real sockets with Python's imaplib: login rules, mailboxes, FETCH/STORE/SEARCH,
COPY/MOVE/EXPUNGE, APPEND, IDLE pushes, and SMTP-delivered mail read back byte for byte."""

from __future__ import annotations

import contextlib
import imaplib
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from .conftest import ALICE, BOB, PASSWORDS, Postroom, wait_until
from .wire import new_token, simple_message

SERVICES = ("smtp", "submission", "imap", "imaps")


@pytest.fixture
def server(postroom_factory: Callable[..., Postroom]) -> Postroom:
    return postroom_factory(services=SERVICES)


def connect(server: Postroom, login: str | None = ALICE) -> imaplib.IMAP4:
    client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=30)
    client.starttls(ssl_context=server.tls_context())
    if login:
        client.login(login, PASSWORDS[login])
    return client


@pytest.fixture
def alice(server: Postroom) -> Iterator[imaplib.IMAP4]:
    client = connect(server)
    yield client
    with contextlib.suppress(imaplib.IMAP4.error, OSError):
        client.logout()


def deliver(server: Postroom, to: str = ALICE, body: bytes | None = None) -> bytes:
    token = new_token()
    message = body or simple_message(token, BOB, to)
    with server.smtp() as s:
        s.sendmail(BOB, [to], message)
    return message


def test_login_needs_tls(server: Postroom) -> None:
    client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=30)
    caps = client.capabilities
    assert "STARTTLS" in caps and "LOGINDISABLED" in caps and "IMAP4REV1" in caps
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login(ALICE, PASSWORDS[ALICE])
    client.starttls(ssl_context=server.tls_context())
    assert "LOGINDISABLED" not in client.capabilities
    assert "AUTH=PLAIN" in client.capabilities
    client.login(ALICE, PASSWORDS[ALICE])
    client.logout()


def test_wrong_password_is_refused_with_a_code(server: Postroom) -> None:
    client = connect(server, login=None)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(ALICE, "wrong")
    client.logout()


def test_implicit_tls_and_authenticate_plain(server: Postroom) -> None:
    client = imaplib.IMAP4_SSL(
        server.host, server.ports["imaps"], ssl_context=server.tls_context(), timeout=30
    )
    typ, _ = client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORDS[ALICE]}".encode())
    assert typ == "OK"
    typ, data = client.select("INBOX")
    assert typ == "OK" and data == [b"0"]
    client.logout()


def test_default_mailboxes_with_special_use(alice: imaplib.IMAP4) -> None:
    typ, data = alice.list()
    assert typ == "OK"
    lines = [d.decode() for d in data if isinstance(d, bytes)]
    assert any(line.endswith(' "/" INBOX') for line in lines), lines
    for name, use in (
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ):
        assert any(use in line and line.endswith(f'"/" {name}') for line in lines), (name, lines)


def test_smtp_delivery_then_fetch_body_byte_for_byte(
    server: Postroom, alice: imaplib.IMAP4
) -> None:
    sent = deliver(server)
    server.wait_for_messages(ALICE, 1)
    typ, data = alice.select("INBOX")
    assert data == [b"1"]
    typ, data = alice.fetch("1", "(BODY.PEEK[] FLAGS RFC822.SIZE)")
    assert typ == "OK"
    first = data[0]
    assert isinstance(first, tuple)
    stored = first[1]
    # What was stored is the message after our trace headers, unchanged.
    assert stored.endswith(sent.replace(b"\r\n", b"\r\n")), stored[-200:]
    assert stored.startswith(b"Return-Path: <" + BOB.encode() + b">\r\nReceived: ")
    rest = b"".join(d for d in data[1:] if isinstance(d, bytes))
    assert f"RFC822.SIZE {len(stored)}".encode() in rest, data
    assert b"\\Seen" not in rest
    # A non-PEEK fetch sets \Seen and says so.
    typ, data = alice.fetch("1", "(BODY[TEXT])")
    assert b"\\Seen" in b"".join(d[0] if isinstance(d, tuple) else d for d in data)


def test_envelope_and_bodystructure(server: Postroom, alice: imaplib.IMAP4) -> None:
    deliver(server)
    server.wait_for_messages(ALICE, 1)
    alice.select("INBOX")
    typ, data = alice.fetch("1", "(ENVELOPE BODYSTRUCTURE)")
    assert typ == "OK"
    text = data[0] if isinstance(data[0], bytes) else data[0][0]
    assert b'ENVELOPE ("' in text
    assert b'(("bob" NIL "bob" "example.test"))' in text or b'"bob" "example.test"' in text
    assert b'BODYSTRUCTURE ("text" "plain"' in text


def test_store_search_copy_move_expunge(server: Postroom, alice: imaplib.IMAP4) -> None:
    for _ in range(3):
        deliver(server)
    server.wait_for_messages(ALICE, 3)
    alice.select("INBOX")
    typ, data = alice.store("2", "+FLAGS", "(\\Flagged $Important)")
    assert typ == "OK" and b"\\Flagged" in data[0] and b"$Important" in data[0]
    assert alice.search(None, "FLAGGED") == ("OK", [b"2"])
    assert alice.search(None, "UNFLAGGED") == ("OK", [b"1 3"])
    assert alice.search(None, "KEYWORD", "$Important") == ("OK", [b"2"])
    typ, data = alice.uid("SEARCH", "FROM", "bob")  # type: ignore[arg-type]
    assert data == [b"1 2 3"]
    typ, data = alice.copy("1:2", "Archive")
    assert typ == "OK"
    assert re.search(rb"COPYUID \d+ 1:2 1:2", data[0] or b""), data
    typ, data = alice.uid("MOVE", "3", "Trash")  # type: ignore[arg-type]
    assert typ == "OK"
    assert alice.select("INBOX")[1] == [b"2"]
    alice.store("1", "+FLAGS", "(\\Deleted)")
    typ, data = alice.expunge()
    assert data == [b"1"]
    assert alice.select("Archive")[1] == [b"2"]
    assert alice.select("Trash")[1] == [b"1"]


def test_create_rename_delete_and_status(alice: imaplib.IMAP4) -> None:
    assert alice.create("Projects/2026")[0] == "OK"
    assert alice.create("Projects/2026")[0] == "NO"
    assert alice.rename("Projects", "Work")[0] == "OK"
    typ, data = alice.list('""', "Work*")
    names = b" ".join(d for d in data if isinstance(d, bytes))
    assert b"Work/2026" in names and b"Projects" not in names
    typ, data = alice.status("Work/2026", "(MESSAGES UIDNEXT UNSEEN)")
    assert typ == "OK" and b"MESSAGES 0" in data[0]
    assert alice.delete("Work")[0] == "NO"  # it has a child
    assert alice.delete("Work/2026")[0] == "OK"
    assert alice.delete("Work")[0] == "OK"
    assert alice.delete("INBOX")[0] == "NO"


def test_append_with_flags_and_date_returns_appenduid(alice: imaplib.IMAP4) -> None:
    message = b"From: alice@example.test\r\nSubject: draft\r\n\r\nwork in progress\r\n"
    typ, data = alice.append("Drafts", "(\\Draft)", '"01-Jan-2026 10:00:00 +0000"', message)
    assert typ == "OK"
    assert re.search(rb"APPENDUID \d+ 1", data[0] or b""), data
    alice.select("Drafts")
    typ, data = alice.fetch("1", "(FLAGS INTERNALDATE BODY.PEEK[])")
    head, body = data[0]  # type: ignore[misc]
    assert body == message
    assert b"\\Draft" in head and b'INTERNALDATE " 1-Jan-2026 10:00:00 +0000"' in head


def test_append_to_a_missing_mailbox_says_trycreate(alice: imaplib.IMAP4) -> None:
    typ, data = alice.append("Nowhere", None, None, b"Subject: x\r\n\r\ny\r\n")
    assert typ == "NO" and b"TRYCREATE" in (data[0] or b"")


def test_idle_pushes_new_mail(server: Postroom, alice: imaplib.IMAP4) -> None:
    alice.select("INBOX")
    sock = alice.socket()
    tag = b"I1"
    sock.sendall(tag + b" IDLE\r\n")
    assert alice.readline().startswith(b"+ ")
    deliver(server)
    started = time.monotonic()
    line = alice.readline()
    assert line == b"* 1 EXISTS\r\n", line
    assert time.monotonic() - started < 10
    # A command pipelined right after DONE is handled (Apple Mail does this).
    sock.sendall(b"DONE\r\nN1 NOOP\r\n")
    rest = b""
    while b"N1 OK" not in rest:
        rest += alice.readline()
    assert tag + b" OK" in rest


def test_idle_is_told_bye_at_shutdown(server: Postroom, alice: imaplib.IMAP4) -> None:
    # SIGTERM wakes a session waiting in IDLE: it is told why it ends (RFC 3501 §7.1.5),
    # rather than being cut off once the shutdown grace time has passed.
    alice.select("INBOX")
    alice.socket().sendall(b"I1 IDLE\r\n")
    assert alice.readline().startswith(b"+ ")
    server.signal(signal.SIGTERM)
    assert alice.readline() == b"* BYE [UNAVAILABLE] Server shutting down.\r\n"
    assert alice.readline() == b""  # and the connection closes
    assert server.wait_exit(timeout=30) == 0


def test_second_session_sees_flag_changes_and_expunges(
    server: Postroom, alice: imaplib.IMAP4
) -> None:
    deliver(server)
    deliver(server)
    server.wait_for_messages(ALICE, 2)
    other = connect(server)
    alice.select("INBOX")
    other.select("INBOX")
    alice.store("1", "+FLAGS", "(\\Deleted \\Seen)")
    alice.expunge()
    _typ, _data = other.noop()
    untagged = other.untagged_responses
    assert untagged.get("EXPUNGE") == [b"1"], untagged
    other.logout()


def test_unknown_command_and_wrong_state_are_bad(server: Postroom) -> None:
    with socket.create_connection((server.host, server.ports["imap"]), timeout=30) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"* OK [CAPABILITY ")
        stream.write(b"a1 FROB\r\na2 SELECT INBOX\r\na3 LOGOUT\r\n")
        stream.flush()
        replies = b"".join(stream.readline() for _ in range(4))
    assert b"a1 BAD" in replies
    assert b"a2 BAD" in replies
    assert b"a3 OK" in replies


def test_messages_delivered_while_selected_arrive_with_noop(
    server: Postroom, alice: imaplib.IMAP4
) -> None:
    alice.select("INBOX")
    deliver(server)
    server.wait_for_messages(ALICE, 1)

    def exists() -> bool:
        alice.noop()
        return alice.untagged_responses.get("EXISTS", [b""])[-1] == b"1"

    wait_until(exists, 10, "EXISTS after NOOP")


def raw_command(client: imaplib.IMAP4, line: str) -> list[bytes]:
    """Send one command on an imaplib connection and collect lines up to its tagged reply."""
    tag = client._new_tag().decode()
    client.send(f"{tag} {line}\r\n".encode())
    lines = []
    while True:
        reply = client.readline()
        lines.append(reply)
        if reply.startswith(tag.encode() + b" "):
            return lines


def test_list_status_and_subscribed_return(alice: imaplib.IMAP4) -> None:
    lines = raw_command(alice, 'LIST "" "*" RETURN (SUBSCRIBED STATUS (MESSAGES UIDNEXT))')
    text = b"".join(lines)
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX' in text, text
    assert b"* STATUS INBOX (MESSAGES 0 UIDNEXT 1)" in text, text
    assert b"* STATUS Sent (MESSAGES 0 UIDNEXT 1)" in text, text
    assert lines[-1].split()[1] == b"OK"


def test_qresync_reports_what_vanished_and_what_changed(
    server: Postroom, alice: imaplib.IMAP4
) -> None:
    for _ in range(3):
        deliver(server)
    server.wait_for_messages(ALICE, 3)
    assert raw_command(alice, "ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC\r\n"
    selected = b"".join(raw_command(alice, "SELECT INBOX"))
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", selected).group(1))  # type: ignore[union-attr]
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", selected).group(1))  # type: ignore[union-attr]
    raw_command(alice, "UNSELECT")
    # Another session changes a flag on message 3 and expunges message 1.
    other = connect(server)
    other.select("INBOX")
    other.store("3", "+FLAGS", "(\\Flagged)")
    other.store("1", "+FLAGS", "(\\Deleted)")
    other.expunge()
    other.logout()
    text = b"".join(raw_command(alice, f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))"))
    assert b"* VANISHED (EARLIER) 1\r\n" in text, text
    assert re.search(rb"\* 2 FETCH \(UID 3 FLAGS \(\\Flagged[^)]*\) MODSEQ \(\d+\)\)", text), text
    # UID FETCH ... (CHANGEDSINCE m VANISHED) lists expunged UIDs too.
    text = b"".join(raw_command(alice, f"UID FETCH 1:* FLAGS (CHANGEDSINCE {modseq} VANISHED)"))
    assert b"* VANISHED (EARLIER) 1\r\n" in text, text
    # Our own expunge now comes as VANISHED, not EXPUNGE (RFC 7162 §3.2.10).
    raw_command(alice, "STORE 1 +FLAGS (\\Deleted)")
    text = b"".join(raw_command(alice, "EXPUNGE"))
    assert b"* VANISHED 2\r\n" in text and b"EXPUNGE\r\n" not in text.split(b"\r\n")[0], text


def test_multiappend_is_all_or_nothing(alice: imaplib.IMAP4) -> None:
    one = b"Subject: one\r\n\r\n1\r\n"
    two = b"Subject: two\r\n\r\n2\r\n"
    command = (
        f"APPEND Archive {{{len(one)}+}}\r\n{one.decode()}"
        f" (\\Seen) {{{len(two)}+}}\r\n{two.decode()}"
    )
    lines = raw_command(alice, command)
    assert re.match(rb"\S+ OK \[APPENDUID \d+ 1:2\]", lines[-1]), lines
    # A second APPEND whose second message is empty adds nothing at all.
    lines = raw_command(alice, f"APPEND Archive {{{len(one)}+}}\r\n{one.decode()} {{0+}}\r\n")
    assert lines[-1].split()[1] == b"NO", lines
    assert alice.select("Archive")[1] == [b"2"]


def test_sessions_per_user_are_bounded(postroom_factory: Callable[..., Postroom]) -> None:
    server = postroom_factory(services=SERVICES, limits={"imap_sessions_per_user": 2})
    first, second = connect(server), connect(server)
    third = connect(server, login=None)
    with pytest.raises(imaplib.IMAP4.error, match="LIMIT"):
        third.login(ALICE, PASSWORDS[ALICE])
    third.login(BOB, PASSWORDS[BOB])  # another user is not affected
    first.logout()
    fourth = connect(server, login=None)

    def logged_in() -> bool:
        try:
            return fourth.login(ALICE, PASSWORDS[ALICE])[0] == "OK"
        except imaplib.IMAP4.error:
            return False  # the first session's slot is not free yet

    wait_until(logged_in, 10, "a freed session slot")
    for client in (second, third, fourth):
        client.logout()


def test_flag_changes_reach_an_idling_session(server: Postroom, alice: imaplib.IMAP4) -> None:
    deliver(server)
    server.wait_for_messages(ALICE, 1)
    alice.select("INBOX")
    alice.send(b"I2 IDLE\r\n")
    assert alice.readline().startswith(b"+ ")
    other = connect(server)
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Answered)")
    other.logout()
    line = alice.readline()
    assert line.startswith(b"* 1 FETCH (FLAGS (") and b"\\Answered" in line, line
    alice.send(b"DONE\r\n")
    assert alice.readline().startswith(b"I2 OK")


def test_append_acknowledged_survives_kill_9(server: Postroom, alice: imaplib.IMAP4) -> None:
    message = b"Subject: keep me\r\n\r\nacknowledged before the crash\r\n"
    typ, _ = alice.append("INBOX", None, None, message)
    assert typ == "OK"
    server.kill()
    server.restart()
    client = connect(server)
    client.select("INBOX")
    typ, data = client.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == message  # type: ignore[index]
    # Its summary is written just after the answer: whether or not the crash came first, the
    # envelope and the subject search have it.
    typ, data = client.fetch("1", "(ENVELOPE)")
    assert b'"keep me"' in data[0]  # type: ignore[operator]
    assert client.search(None, "SUBJECT", "keep") == ("OK", [b"1"])
    client.logout()


def test_large_appended_message_is_searchable_and_fetched_whole(alice: imaplib.IMAP4) -> None:
    """Over 256 KiB: the literal streams to disk and the blob lives in a file."""
    body = b"".join(b"line %06d of a long message\r\n" % i for i in range(12000))
    message = b"Subject: big attachment\r\n\r\n" + body + b"needle-at-the-end\r\n"
    assert len(message) > 256 * 1024
    assert alice.append("INBOX", None, None, message)[0] == "OK"
    alice.select("INBOX")
    assert alice.search(None, "SUBJECT", "attachment") == ("OK", [b"1"])
    assert alice.search(None, "SUBJECT", "needle-at-the-end") == ("OK", [b""])
    assert alice.search(None, "BODY", "needle-at-the-end") == ("OK", [b"1"])
    _, data = alice.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == message  # type: ignore[index]


def test_header_search_reaches_our_trace_headers(server: Postroom, alice: imaplib.IMAP4) -> None:
    deliver(server)
    server.wait_for_messages(ALICE, 1)
    alice.select("INBOX")
    # Received: is stamped by postroom in the per-copy prefix, not in the stored message.
    assert alice.search(None, "HEADER", "Received", server.hostname) == ("OK", [b"1"])
    assert alice.search(None, "HEADER", "Received", "nowhere.invalid") == ("OK", [b""])


def test_with_qresync_every_fetch_response_carries_the_uid(
    server: Postroom, alice: imaplib.IMAP4
) -> None:
    deliver(server)
    server.wait_for_messages(ALICE, 1)
    raw_command(alice, "ENABLE QRESYNC")
    raw_command(alice, "SELECT INBOX")
    stored = b"".join(raw_command(alice, "STORE 1 +FLAGS (\\Flagged)"))
    assert re.search(rb"\* 1 FETCH \(.*UID 1.*MODSEQ", stored), stored
    fetched = b"".join(raw_command(alice, "FETCH 1 (FLAGS)"))
    assert b"UID 1" in fetched, fetched


def test_plaintext_logins_when_configured(postroom_factory: Callable[..., Postroom]) -> None:
    """[auth] plaintext = true (a TLS-terminating proxy in front): LOGIN without STARTTLS."""
    server = postroom_factory(services=SERVICES, extra="[auth]\nplaintext = true\n")
    client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=30)
    assert "LOGINDISABLED" not in client.capabilities
    assert client.login(ALICE, PASSWORDS[ALICE])[0] == "OK"
    client.logout()


def _uid_flags(client: imaplib.IMAP4) -> dict[int, set[str]]:
    lines = raw_command(client, "FETCH 1:* (UID FLAGS)")
    found = re.findall(rb"\* \d+ FETCH \(UID (\d+) FLAGS \(([^)]*)\)\)", b"".join(lines))
    return {int(uid): set(flags.decode().split()) - {"\\Recent"} for uid, flags in found}


def test_select_of_a_big_mailbox_after_changes_shows_the_store_exactly(
    server: Postroom, alice: imaplib.IMAP4
) -> None:
    # Mailboxes of 1000+ messages are kept between SELECTs and only brought up to date.
    count = 1100
    literals = "".join(
        f" {{{len(m)}+}}\r\n{m.decode()}"
        for m in (simple_message(f"big-{i}", BOB, ALICE) for i in range(count))
    )
    assert raw_command(alice, "APPEND INBOX" + literals)[-1].split()[1] == b"OK"
    assert alice.select("INBOX")[1] == [str(count).encode()]  # read whole, then kept

    other = connect(server)
    other.select("INBOX")
    other.store("1:10", "+FLAGS", "($Work \\Seen)")
    other.store("20", "+FLAGS", "(\\Deleted)")
    other.expunge()
    deliver(server)

    fresh = connect(server)
    assert fresh.select("INBOX")[1] == [str(count).encode()]  # one expunged, one delivered
    assert b"$Work" in fresh.untagged_responses["FLAGS"][0]
    expected = {uid: set() for uid in range(1, count + 1) if uid != 20}
    expected.update({uid: {"$Work", "\\Seen"} for uid in range(1, 11)})
    expected[count + 1] = set()
    assert _uid_flags(fresh) == expected
    # Searches read the store in batches (1024 messages without bodies, 256 with): sequence
    # numbers and flags stay right past the batch edges (UID 20 is gone: sequence = UID - 1).
    assert fresh.search(None, "SUBJECT", "big-1050") == ("OK", [b"1050"])
    assert fresh.search(None, "BODY", "big-1099.") == ("OK", [b"1099"])
    assert fresh.search(None, "KEYWORD", "$Work", "SUBJECT", "big-9") == ("OK", [b"10"])
    assert fresh.search(None, "1020:1030", "SUBJECT", "big-10") == (
        "OK",
        [b" ".join(b"%d" % n for n in range(1020, 1031))],
    )

    other.store("1:10", "-FLAGS", "($Work)")
    again = connect(server)
    again.select("INBOX")
    assert b"$Work" not in again.untagged_responses["FLAGS"][0]
    expected.update({uid: {"\\Seen"} for uid in range(1, 11)})
    assert _uid_flags(again) == expected
    for client in (other, fresh, again):
        client.logout()


def _pipelined(client: imaplib.IMAP4, *commands: str) -> list[bytes]:
    """Send several commands in one write; the lines up to the last one's tagged reply."""
    tags = [client._new_tag().decode() for _ in commands]
    client.send(b"".join(f"{t} {c}\r\n".encode() for t, c in zip(tags, commands, strict=True)))
    lines = []
    while True:
        reply = client.readline()
        lines.append(reply)
        if reply.startswith(tags[-1].encode() + b" "):
            return lines


def _flags_seen_by_another_session(server: Postroom) -> dict[int, set[str]]:
    other = connect(server)
    try:
        other.select("INBOX", readonly=True)
        return _uid_flags(other)
    finally:
        other.logout()


def _three_messages_selected(server: Postroom, client: imaplib.IMAP4) -> None:
    for _ in range(3):
        deliver(server)
    client.select("INBOX")


def test_commands_right_behind_a_flag_change_see_it(server: Postroom, alice: imaplib.IMAP4) -> None:
    # STORE and FETCH answer flags before the store has written them; what comes next on
    # the connection, even in the same packet, must still see them.
    _three_messages_selected(server, alice)
    lines = _pipelined(
        alice,
        "STORE 1 +FLAGS (\\Deleted)",
        "FETCH 2 BODY[TEXT]",
        "STATUS INBOX (UNSEEN)",
        "EXPUNGE",
        "SEARCH SEEN",
    )
    text = b"".join(lines)
    assert b"* 1 FETCH (FLAGS (\\Deleted \\Recent))" in text, text
    assert b"* STATUS INBOX (UNSEEN 2)" in text, text  # message 2 was seen by the FETCH
    assert b"* 1 EXPUNGE" in text, text
    assert b"* SEARCH 1\r\n" in text, text  # the former message 2, now number 1
    assert _flags_seen_by_another_session(server) == {2: {"\\Seen"}, 3: set()}


def test_seen_set_by_fetch_reaches_the_store_in_order_and_on_logout(
    server: Postroom, alice: imaplib.IMAP4
) -> None:
    _three_messages_selected(server, alice)
    # \Seen set by FETCHes is written a little later, in one go: others see it soon after.
    alice.fetch("1", "(BODY[])")
    wait_until(lambda: "\\Seen" in _flags_seen_by_another_session(server)[1], 10, "\\Seen on 1")
    # A STORE right behind a FETCH comes after it in the store too: \Seen ends up removed.
    _pipelined(alice, "FETCH 2 BODY[]", "STORE 2 -FLAGS (\\Seen)")
    # And a FETCH just before LOGOUT is not lost.
    _pipelined(alice, "FETCH 3 BODY[]", "LOGOUT")
    wait_until(
        lambda: _flags_seen_by_another_session(server) == {1: {"\\Seen"}, 2: set(), 3: {"\\Seen"}},
        10,
        "the flags of all three",
    )


def test_imap_timeout_logs_out_idle_sessions(postroom_factory: Callable[..., Postroom]) -> None:
    """[limits] imap_timeout (RFC 3501 §5.4's autologout timer): before login and in IDLE."""
    server = postroom_factory(services=SERVICES, limits={"imap_timeout": 1})
    with socket.create_connection((server.host, server.ports["imap"]), timeout=15) as sock:
        stream = sock.makefile("rb")
        started = time.monotonic()
        assert stream.readline().startswith(b"* OK ")
        assert stream.readline() == b"* BYE Autologout; idle for too long\r\n"
        assert stream.readline() == b""
        assert 0.9 <= time.monotonic() - started < 15
    client = connect(server)
    client.sock.settimeout(15)
    client.send(client._new_tag() + b" IDLE\r\n")
    assert client.readline() == b"+ idling\r\n"
    assert client.readline() == b"* BYE Autologout; idle for too long\r\n"
    assert client.readline() == b""
