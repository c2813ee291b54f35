"""Attacks over real sockets: SMTP smuggling, STARTTLS command injection, AUTH in plaintext,
error and resource limits."""

from __future__ import annotations

import select
import socket
import ssl
import time

import pytest

from .conftest import ALICE, BOB, HOST, Factory, Postroom, wait_until
from .wire import Wire, auth_plain, new_token, open_session, send_message, simple_message

# --- SMTP smuggling (CVE-2023-51764 class) -------------------------------------------------------

SMUGGLING_SEPARATORS = {
    "LF.LF": b"\n.\n",
    "CRLF.LF": b"\r\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CR": b"\r.\r",
    "CRLF.CR": b"\r\n.\r",
    "CR.CRLF": b"\r.\r\n",
}


def reply_lines(data: bytes) -> list[str]:
    return [line for line in data.decode("utf-8", "replace").split("\r\n") if line]


@pytest.mark.parametrize("separator", SMUGGLING_SEPARATORS.values(), ids=SMUGGLING_SEPARATORS)
def test_smtp_smuggling_is_refused(postroom: Postroom, separator: bytes) -> None:
    outer, smuggled = new_token("outer"), new_token("smuggled")
    payload = (
        f"From: <x@y.test>\r\nTo: <{ALICE}>\r\nSubject: {outer}\r\n\r\nouter body".encode()
        + separator
        + b"MAIL FROM:<attacker@evil.test>\r\n"
        + f"RCPT TO:<{BOB}>\r\n".encode()
        + b"DATA\r\n"
        + f"From: <ceo@example.test>\r\nSubject: {smuggled}\r\n\r\nsmuggled body\r\n".encode()
        + b".\r\n"
    )
    with open_session(postroom.smtp_port) as wire:
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        wire.cmd(f"RCPT TO:<{ALICE}>", 250)
        wire.cmd("DATA", 354)
        wire.send(payload + b"QUIT\r\n")
        lines = reply_lines(wire.buffer + wire.read_until_closed())
    queued = [line for line in lines if "queued as" in line]
    assert len(queued) <= 1, f"more than one message accepted: {lines}"
    assert any(line.startswith("550 5.6.0") for line in lines), f"no 550 5.6.0: {lines}"
    assert not any(line.startswith("354") for line in lines), f"smuggled DATA answered: {lines}"
    assert lines[-1].startswith("221"), lines

    # Absence needs a sentinel: once it has arrived, anything sent before it has too.
    sentinel = new_token("sentinel")
    with postroom.smtp() as client:
        client.sendmail("x@y.test", [ALICE, BOB], simple_message(sentinel))
    for user in (ALICE, BOB):
        postroom.wait_for_messages(user, 1)
        messages = postroom.export(user)
        assert not [m for m in messages if smuggled.encode() in m], f"{user} got smuggled mail"
        assert all(sentinel.encode() in m or outer.encode() in m for m in messages)
    bob = postroom.export(BOB)
    assert len(bob) == 1, "bob must only have the sentinel"
    # A rejected message leaves nothing behind in the queue either.
    assert postroom.queue_list() == ""


def test_only_crlf_dot_crlf_ends_data(postroom: Postroom) -> None:
    """A well-formed message whose body contains '.' lines only ends at CRLF.CRLF."""
    token = new_token()
    with open_session(postroom.smtp_port) as wire:
        reply = send_message(
            wire,
            "x@y.test",
            [ALICE],
            simple_message(token) + b"..\r\n...\r\n.. not the end\r\n",
        )
        assert reply.code == 250, reply
        wire.cmd("QUIT", 221)
    postroom.wait_for_messages(ALICE, 1)
    [stored] = postroom.export(ALICE)
    assert stored.endswith(b"\n.\n..\n. not the end\n")


# --- STARTTLS command injection (CVE-2011-0411 class) -------------------------------------------


@pytest.mark.parametrize("service", ["smtp", "submission"])
def test_starttls_discards_pipelined_plaintext(postroom: Postroom, service: str) -> None:
    with open_session(postroom.ports[service]) as wire:
        wire.send(b"STARTTLS\r\nRSET\r\n")
        ready = wire.expect(220)
        assert ready.enhanced == "2.0.0"
        wire.starttls(postroom.tls_context())  # fails if the RSET was answered in plaintext
        # The first reply inside TLS must be the EHLO's, not the injected RSET's.
        ehlo = wire.cmd("EHLO client.example.net", 250)
        assert ehlo.lines[0].startswith("mx.example.test"), f"injected command answered: {ehlo}"
        assert len(ehlo.lines) > 1
        assert wire.cmd("NOOP", 250).text.startswith("2.0.0")
        wire.cmd("QUIT", 221)


def test_starttls_injected_mail_from_is_not_executed(postroom: Postroom) -> None:
    with open_session(postroom.smtp_port) as wire:
        wire.send(b"STARTTLS\r\nMAIL FROM:<attacker@evil.test>\r\n")
        wire.expect(220)
        wire.starttls(postroom.tls_context())
        wire.cmd("EHLO client.example.net", 250)
        # Had the injected MAIL survived the upgrade, this RCPT would be accepted.
        reply = wire.cmd(f"RCPT TO:<{ALICE}>")
        assert reply.code == 503, f"injected MAIL FROM survived STARTTLS: {reply}"
        wire.cmd("QUIT", 221)


def test_starttls_resets_the_session(postroom: Postroom) -> None:
    """RFC 3207 §4.2: after the handshake the client must EHLO again; nothing carries over."""
    with open_session(postroom.smtp_port) as wire:
        wire.cmd("STARTTLS", 220)
        wire.starttls(postroom.tls_context())
        assert wire.cmd("MAIL FROM:<x@y.test>").code == 503
        wire.cmd("EHLO client.example.net", 250)
        assert wire.cmd("STARTTLS").code == 503  # TLS already active
        wire.cmd("QUIT", 221)


# --- AUTH only inside TLS -------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["smtp", "submission"])
def test_auth_before_tls_is_530(postroom: Postroom, service: str) -> None:
    with open_session(postroom.ports[service]) as wire:
        ehlo = wire.cmd("EHLO client.example.net", 250)
        assert "AUTH" not in ehlo.keywords
        plain = wire.cmd(f"AUTH PLAIN {auth_plain(ALICE, postroom.passwords[ALICE])}")
        assert (plain.code, plain.enhanced) == (530, "5.7.0"), plain
        login = wire.cmd("AUTH LOGIN")
        assert (login.code, login.enhanced) == (530, "5.7.0"), (
            f"no 334 challenge in plaintext: {login}"
        )
        # Still not authenticated: relaying stays closed.
        if service == "smtp":
            wire.cmd("MAIL FROM:<x@y.test>", 250)
            assert wire.cmd("RCPT TO:<carol@remote.test>").code == 554
        else:
            assert wire.cmd("MAIL FROM:<x@y.test>").code == 530
        wire.cmd("QUIT", 221)


# --- limits ---------------------------------------------------------------------------------------


def test_errors_per_session_limit_closes_with_421(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(limits={"errors_per_session": 3})
    with open_session(server.smtp_port) as wire:
        assert wire.cmd("FOO").code == 500
        assert wire.cmd("BAR baz").code == 500
        third = wire.cmd("XYZZY")
        assert third.code == 500
        closing = wire.reply()
        assert closing.code == 421, closing
        assert closing.enhanced and closing.enhanced.startswith("4.")
        assert wire.read_until_closed() == b""
    # A pipelined flood is cut off at the same point.
    with open_session(server.smtp_port) as wire:
        wire.send(b"NONSENSE\r\n" * 10)
        data = wire.buffer + wire.read_until_closed()
        codes = [line[:3] for line in reply_lines(data)]
        assert codes == ["500", "500", "500", "421"], codes
    # Failed RCPTs count too (recipient guessing).
    with open_session(server.smtp_port) as wire:
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        for name in ("a", "b"):
            assert wire.cmd(f"RCPT TO:<{name}@example.test>").code == 550
        assert wire.cmd("RCPT TO:<c@example.test>").code == 550
        assert wire.reply().code == 421
        assert wire.read_until_closed() == b""


def test_overlong_command_line_is_500_and_session_survives(postroom: Postroom) -> None:
    with open_session(postroom.smtp_port) as wire:
        reply = wire.cmd("NOOP " + "x" * 10000)
        assert (reply.code, reply.enhanced) == (500, "5.5.2"), reply
        assert wire.cmd("NOOP").code == 250
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        wire.cmd(f"RCPT TO:<{ALICE}>", 250)
        wire.cmd("QUIT", 221)


def test_connections_per_ip_limit(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(limits={"connections_per_ip": 2})
    first, second = Wire(server.smtp_port), Wire(server.smtp_port)
    try:
        first.expect(220)
        second.expect(220)
        with Wire(server.smtp_port) as third:
            refused = third.reply()
            assert refused.code == 421, refused
            assert third.read_until_closed() == b""
        first.cmd("QUIT", 221)
        first.read_until_closed()

        # Once a slot is free a new session is served again (the count is decremented).
        def greeted() -> bool:
            with Wire(server.smtp_port) as again:
                return again.reply().code == 220

        wait_until(greeted, 10, "a free connection slot")
    finally:
        first.close()
        second.close()


def test_mail_loop_is_554_5_4_6(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(limits={"received_headers": 5})

    def with_hops(count: int, token: str) -> bytes:
        hops = b"".join(
            f"Received: from hop{i}.example.net by hop{i + 1}.example.net; "
            "Mon, 1 Jan 2024 00:00:00 +0000\r\n".encode()
            for i in range(count)
        )
        return hops + simple_message(token)

    below, above = new_token("hops4"), new_token("hops6")
    with open_session(server.smtp_port) as wire:
        assert send_message(wire, "x@y.test", [ALICE], with_hops(4, below)).code == 250
        loop = send_message(wire, "x@y.test", [ALICE], with_hops(6, above))
        assert (loop.code, loop.enhanced) == (554, "5.4.6"), loop
        wire.cmd("QUIT", 221)
    server.wait_for_messages(ALICE, 1)
    messages = server.export(ALICE)
    assert len(messages) == 1 and below.encode() in messages[0]


def test_mail_loop_limit_is_more_than_the_configured_count(postroom_factory: Factory) -> None:
    """The documented contract (LimitsConfig): *more* Received headers than the limit is a loop.

    Exactly `received_headers` Received fields must still be accepted.
    """
    server: Postroom = postroom_factory(limits={"received_headers": 5})
    token = new_token()
    hops = b"".join(
        f"Received: from hop{i}.example.net by hop{i + 1}.example.net; "
        "Mon, 1 Jan 2024 00:00:00 +0000\r\n".encode()
        for i in range(5)
    )
    with open_session(server.smtp_port) as wire:
        reply = send_message(wire, "x@y.test", [ALICE], hops + simple_message(token))
        assert reply.code == 250, f"exactly received_headers=5 hops refused: {reply}"


def test_null_reverse_path_is_accepted(postroom: Postroom) -> None:
    token = new_token()
    with open_session(postroom.smtp_port) as wire:
        wire.cmd("MAIL FROM:<>", 250)
        wire.cmd(f"RCPT TO:<{ALICE}>", 250)
        wire.cmd("DATA", 354)
        wire.send(simple_message(token) + b".\r\n")
        wire.expect(250)
    postroom.wait_for_messages(ALICE, 1)
    [stored] = postroom.export(ALICE)
    assert stored.startswith(b"Return-Path: <>\n")


def test_unknown_and_out_of_sequence_commands(postroom: Postroom) -> None:
    replies = []
    with Wire(postroom.smtp_port) as wire:
        wire.expect(220)
        replies.append(wire.cmd("MAIL FROM:<x@y.test>", 503))  # before HELO
        wire.cmd("EHLO client.example.net", 250)
        unknown = wire.cmd("WHATEVER")
        assert (unknown.code, unknown.enhanced) == (500, "5.5.1")
        replies.append(unknown)
        replies.append(wire.cmd("RCPT TO:<alice@example.test>", 503))
        replies.append(wire.cmd("DATA", 503))
        syntax = wire.cmd("MAIL FROM")
        assert (syntax.code, syntax.enhanced) == (501, "5.5.4")
        replies.append(syntax)
        replies.append(wire.cmd("MAIL FROM:<x@y.test>", 250))
        replies.append(wire.cmd("MAIL FROM:<x@y.test>", 503))  # nested MAIL
        replies.append(wire.cmd("RSET", 250))
        replies.append(wire.cmd("NOOP", 250))
        replies.append(wire.cmd("HELP", 214))
        replies.append(wire.cmd("ETRN example.test", 250))
        replies.append(wire.cmd("QUIT", 221))
    # RFC 2034 / DESIGN rule 3: every reply carries an enhanced status code.
    missing = [str(r) for r in replies if r.enhanced is None]
    assert not missing, f"replies without an enhanced status code: {missing}"


def test_idle_command_timeout_closes_with_421(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(limits={"command_timeout": 1})
    with open_session(server.smtp_port) as wire:
        # No fixed sleep: the read below simply waits (bounded) for the server to give up.
        closing = wire.reply()
        assert (closing.code, closing.enhanced) == (421, "4.4.2"), closing
        assert wire.read_until_closed() == b""


def test_stalled_data_times_out_and_nothing_is_queued(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(limits={"data_timeout": 1})
    token = new_token("stalled")
    with open_session(server.smtp_port) as wire:
        wire.cmd("MAIL FROM:<x@y.test>", 250)
        wire.cmd(f"RCPT TO:<{ALICE}>", 250)
        wire.cmd("DATA", 354)
        wire.send(simple_message(token))  # and never the final "."
        closing = wire.reply()
        assert closing.code == 421, closing
        assert wire.read_until_closed() == b""
    sentinel = new_token("sentinel")
    with server.smtp() as client:
        client.sendmail("x@y.test", [ALICE], simple_message(sentinel))
    server.wait_for_messages(ALICE, 1)
    [only_message] = server.export(ALICE)
    assert sentinel.encode() in only_message


def test_failed_tls_handshakes_do_not_leak_connection_slots(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(limits={"connections_per_ip": 2})
    for _ in range(5):
        with open_session(server.smtp_port) as wire:
            wire.cmd("STARTTLS", 220)
            wire.send(b"this is not a TLS ClientHello\r\n" * 4)
            wire.read_until_closed()
    for _ in range(5):
        with Wire(server.submissions_port) as raw:  # plaintext to the implicit-TLS port
            raw.send(b"EHLO plaintext.example.net\r\n")
            raw.read_until_closed()

    def two_sessions_fit() -> bool:
        first, second = Wire(server.smtp_port), Wire(server.smtp_port)
        try:
            return first.reply().code == 220 and second.reply().code == 220
        finally:
            first.close()
            second.close()

    wait_until(two_sessions_fit, 10, "two free connection slots")


def test_ehlo_and_starttls_pipelined(postroom: Postroom) -> None:
    with Wire(postroom.smtp_port) as wire:
        wire.expect(220)
        wire.send(b"EHLO client.example.net\r\nSTARTTLS\r\n")
        assert "STARTTLS" in wire.expect(250).keywords
        wire.expect(220)
        wire.starttls(postroom.tls_context())
        assert "AUTH" in wire.cmd("EHLO client.example.net", 250).keywords
        wire.cmd("QUIT", 221)


def test_client_that_never_reads_replies_is_timed_out(postroom_factory: Factory) -> None:
    """A 'slow read' client: pipelines commands and never reads the replies.

    The server's replies back up until its writes block; that session must still be bounded
    by a timeout (and free its connection slot), not hang forever in a write.
    """
    server: Postroom = postroom_factory(limits={"connections_per_ip": 1, "command_timeout": 1})
    flood = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood.settimeout(10)
    try:
        flood.connect((HOST, server.smtp_port))
        assert flood.recv(100).startswith(b"220")
        flood.setblocking(False)
        deadline = time.monotonic() + 30
        blocked_since: float | None = None
        # Send until the server stops reading (its replies are stuck): our sends block.
        while time.monotonic() < deadline:
            try:
                flood.send(b"NOOP\r\n" * 1000)
                blocked_since = None
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 0.5:
                    break
                select.select([], [flood], [], 0.1)
            except (BrokenPipeError, ConnectionResetError):
                blocked_since = blocked_since or time.monotonic()
                break  # the server already gave up on us: exactly what we want
        assert blocked_since is not None, "the server kept reading 30 s of unread pipelining"

        def slot_free_again() -> bool:
            with Wire(server.smtp_port) as probe:
                return probe.reply().code == 220

        wait_until(slot_free_again, 15, "the stuck session to time out and free its slot")
    finally:
        flood.close()


def test_pending_implicit_tls_handshakes_count_toward_the_per_ip_limit(
    postroom_factory: Factory,
) -> None:
    """Connections to the implicit-TLS port are connections from that IP before the handshake
    too; otherwise one address can hold any number of sockets open (60 s each) unchecked."""
    server: Postroom = postroom_factory(limits={"connections_per_ip": 2})

    def third_is_refused() -> bool:
        pending = [socket.create_connection((HOST, server.submissions_port)) for _ in range(2)]
        try:
            # The readiness probe's connections may still hold the slots for a moment: then the
            # server closes these two (readable at EOF) and the attempt is repeated.
            readable, _, _ = select.select(pending, [], [], 0.3)
            if readable:
                return False
            third = socket.create_connection((HOST, server.submissions_port), timeout=10)
            try:
                tls = server.tls_context().wrap_socket(third, server_hostname=HOST)
            except (ssl.SSLError, OSError):
                return True  # refused before or during the handshake
            with Wire.adopt(tls, timeout=10) as wire:
                try:
                    greeting = wire.reply()
                except (ssl.SSLError, OSError):
                    return True  # closed without a greeting
                raise AssertionError(f"a third connection from one IP was served: {greeting}")
        finally:
            for sock in pending:
                sock.close()

    wait_until(third_is_refused, 15, "two pending handshakes to hold both per-IP slots")


@pytest.mark.parametrize("size", ["²", "1" * 5000])
def test_size_parameter_of_odd_digits_is_501(postroom_factory: Factory, size: str) -> None:
    """str.isdigit() accepts "²" and int() refuses it; int() also refuses 5,000 digits."""
    server: Postroom = postroom_factory(limits={"line_length": 8192})
    with open_session(server.smtp_port) as wire:
        reply = wire.cmd(f"MAIL FROM:<x@y.test> SIZE={size}")
        assert (reply.code, reply.enhanced) == (501, "5.5.4"), reply
        assert wire.cmd(f"BDAT {size} LAST").code == 501
        wire.cmd("QUIT", 221)
