"""The abuse defences over real sockets, against the real server: DNS block and allow lists
served by a real nsd (clients come from chosen 127.0.0.x source addresses), greylisting across
a restart, login throttling on SMTP AUTH, IMAP and POP3, sending limits with the CLI, the
greeting delay, and recipient guessing."""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import smtplib
import socket
import time
from collections.abc import Callable

import pytest

from . import dns_server as dns_server_module
from .conftest import ALICE, BOB, Postroom, wait_until
from .dns_server import DnsServerFactory

dns_server = dns_server_module.dns_server

TIMEOUT = 30
SOA = """$TTL 60
@       IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 60
@       IN NS  ns.{origin}.
ns      IN A   127.0.0.1
"""
BLOCK_LIST = SOA.format(origin="bl.test") + (
    "2.0.0.127 IN A 127.0.0.2\n"  # RFC 5782 §5: the test entry
    "4.0.0.127 IN A 127.255.255.254\n"  # the list refuses the query: not a listing
)
ALLOW_LIST = SOA.format(origin="wl.test") + "3.0.0.127 IN A 127.0.10.2\n"


def smtp_from(server: Postroom, source: str) -> smtplib.SMTP:
    client = smtplib.SMTP(
        server.host,
        server.smtp_port,
        local_hostname="client.example.net",
        source_address=(source, 0),
        timeout=TIMEOUT,
    )
    client.ehlo()
    return client


def rcpt_from(
    server: Postroom, source: str, recipient: str, sender: str = "s@remote.example"
) -> tuple[int, bytes]:
    with smtp_from(server, source) as client:
        assert client.mail(sender)[0] == 250
        return client.rcpt(recipient)


def test_dns_lists_and_greylisting_across_a_restart(
    postroom_factory: Callable[..., Postroom], dns_server: DnsServerFactory
) -> None:
    nsd = dns_server({"bl.test": BLOCK_LIST, "wl.test": ALLOW_LIST})
    server = postroom_factory(
        services=("smtp",),
        extra=(
            f'[dns]\nnameservers = ["{nsd.nameserver}"]\n\n'
            '[antispam]\ndnsbl = ["bl.test"]\ndnswl = ["wl.test"]\ngreylist = "2s"\n'
        ),
    )
    server.run_cli("alias", "add", "postmaster@example.test", ALICE)
    # Listed: 554 at RCPT, naming the list; postmaster@ stays reachable (RFC 5321 §4.5.1).
    with smtp_from(server, "127.0.0.2") as client:
        assert client.mail("s@remote.example")[0] == 250
        code, text = client.rcpt(ALICE)
        assert (code, text) == (
            554,
            b"5.7.1 Service unavailable; client [127.0.0.2] listed at bl.test",
        )
        assert client.rcpt("postmaster@example.test")[0] == 250
        assert client.rcpt("<postmaster>")[0] == 250
    server.wait_for_log(r"dnsbl client=127\.0\.0\.2 zone=bl\.test codes=127\.0\.0\.2")
    # Allow-listed: not greylisted.
    assert rcpt_from(server, "127.0.0.3", ALICE)[0] == 250
    # A refused query is no listing (logged); the client is greylisted like anyone unknown.
    code, text = rcpt_from(server, "127.0.0.4", ALICE)
    assert code == 451 and text.startswith(b"4.7.1 Greylisted, try again in ")
    server.wait_for_log(r"zone=bl\.test client=127\.0\.0\.4 taken as not listed: .*refused")
    assert rcpt_from(server, "127.0.0.5", BOB, "other@remote.example")[0] == 451
    # The triplet survives a restart; a retry after the delay passes.
    server.stop()
    server.start()
    wait_until(
        lambda: rcpt_from(server, "127.0.0.5", BOB, "other@remote.example")[0] == 250,
        15,
        "the greylisted triplet to pass",
        interval=0.5,
    )
    server.wait_for_log(r"greylisting passed client=127\.0\.0\.5 network=127\.0\.0\.0/24")
    # The network is remembered: another sender from it passes at once.
    assert rcpt_from(server, "127.0.0.6", ALICE, "new@remote.example")[0] == 250
    # Unlisted client from another network: greylisted; refusals never stop local delivery.
    assert rcpt_from(server, "127.0.1.1", ALICE)[0] == 451


class SourcedImap(imaplib.IMAP4):
    def __init__(self, host: str, port: int, source: str) -> None:
        self.source = source
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


class SourcedPop3(poplib.POP3):
    def __init__(self, host: str, port: int, source: str) -> None:
        self.source = source
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


def imap_login(server: Postroom, source: str, user: str, password: str) -> str:
    client = SourcedImap(server.host, server.ports["imap"], source)
    client.starttls(ssl_context=server.tls_context())
    try:
        client.login(user, password)
        return "OK"
    except imaplib.IMAP4.error as error:
        return str(error)
    finally:
        client.shutdown()


def pop3_login(server: Postroom, source: str, user: str, password: str) -> str:
    client = SourcedPop3(server.host, server.ports["pop3"], source)
    client.stls(context=server.tls_context())
    try:
        client.user(user)
        return client.pass_(password).decode()
    except poplib.error_proto as error:
        return str(error)
    finally:
        client.close()


def smtp_login(server: Postroom, source: str, user: str, password: str) -> tuple[int, bytes]:
    with smtplib.SMTP(
        server.host, server.submission_port, source_address=(source, 0), timeout=TIMEOUT
    ) as client:
        client.starttls(context=server.tls_context())
        client.ehlo()
        blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return client.docmd("AUTH", "PLAIN " + blob)


def test_login_guessing_is_slowed_then_blocked_per_account_and_address(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(
        services=("smtp", "submission", "imap", "pop3"),
        limits={"auth_failures": 4, "auth_block": "1h"},
    )
    password = server.passwords[ALICE]
    started = time.monotonic()
    answers = [imap_login(server, "127.0.0.2", ALICE, f"guess{n}") for n in range(4)]
    assert all("AUTHENTICATIONFAILED" in a for a in answers)
    assert time.monotonic() - started >= 0.25 + 0.5  # the 3rd and 4th answers were slowed
    server.wait_for_log(r"login blocked client=127\.0\.0\.2 user=<alice@example\.test>")
    # Blocked there, even with the right password, on every service: a temporary failure.
    assert "[UNAVAILABLE]" in imap_login(server, "127.0.0.2", ALICE, password)
    assert "[SYS/TEMP]" in pop3_login(server, "127.0.0.2", ALICE, password)
    assert smtp_login(server, "127.0.0.2", ALICE, password)[0] == 454
    # Not blocked: the account from elsewhere, another account from there.
    assert imap_login(server, "127.0.0.3", ALICE, password) == "OK"
    assert imap_login(server, "127.0.0.2", BOB, server.passwords[BOB]) == "OK"
    assert smtp_login(server, "127.0.0.3", ALICE, password)[0] == 235
    # The block outlives a restart, is shown by the CLI, and lifted by it.
    server.stop()
    server.start()
    assert "[UNAVAILABLE]" in imap_login(server, "127.0.0.2", ALICE, password)
    shown = json.loads(server.run_cli("limits", "show", "127.0.0.2", "--json").stdout)
    assert [(b["kind"], b["client"], b["account"]) for b in shown["blocks"]] == [
        ("login", "127.0.0.2", ALICE)
    ]
    assert "cleared 1 block" in server.run_cli("limits", "clear", ALICE).stdout
    assert imap_login(server, "127.0.0.2", ALICE, password) == "OK"
    # The failed-login lines are still there for fail2ban.
    assert "login failed service=imap client=127.0.0.2 user=<alice@example.test>" in server.log()


def test_sending_limits_of_authenticated_users(postroom_factory: Callable[..., Postroom]) -> None:
    server = postroom_factory(limits={"messages_per_hour": 2, "recipients_per_hour": 3})
    message = b"Subject: hi\r\n\r\nhello\r\n"
    with server.submission() as client:
        client.sendmail(ALICE, [BOB], message)
        client.sendmail(ALICE, [BOB, "carol@remote.example"], message)
        code, text = client.mail(ALICE)
        assert (code, text[:5]) == (451, b"4.7.0")
        client.rset()
    server.wait_for_log(r"sending limit reached user=alice@example\.test messages=2/h")
    # Bob is not limited by Alice's mail; his third recipient is his last this hour.
    with server.submission(BOB) as client:
        assert client.mail(BOB)[0] == 250
        assert [client.rcpt(r)[0] for r in ("a@remote.example", "b@remote.example")] == [250, 250]
        assert client.rcpt("c@remote.example")[0] == 250
        assert client.rcpt("d@remote.example")[0] == 451
    out = wait_until(
        lambda: server.run_cli("limits", "show", ALICE).stdout, 10, "the count to be written"
    )
    assert out.startswith(f"sent\t{ALICE}\t2/2\t3/3\t")
    server.stop()
    server.start()
    with server.submission() as client:
        assert client.mail(ALICE)[0] == 451  # the count survived the restart
    server.run_cli("limits", "clear", ALICE)
    with server.submission() as client:
        assert client.mail(ALICE)[0] == 250
    bad = server.run_cli("limits", "clear", "nonsense", check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "nonsense" in bad.stderr


def test_a_client_talking_before_the_greeting_is_refused(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(services=("smtp",), extra='[antispam]\ngreet_delay = "1s"\n')
    with socket.create_connection((server.host, server.smtp_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"EHLO spambot\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received == (
        b"220-mx.example.test ESMTP postroom\r\n"
        b"554 5.5.1 Protocol error: talking before the greeting\r\n"
    )
    server.wait_for_log(r"pregreet client=127\.0\.0\.1 bytes=14 result=554 5\.5\.1")
    # A client that waits (smtplib) only sees a slower, multi-line greeting.
    started = time.monotonic()
    with server.smtp(timeout=TIMEOUT) as client:
        assert time.monotonic() - started >= 0.9
        client.sendmail("s@remote.example", [ALICE], b"Subject: hi\r\n\r\nhello\r\n")
    server.wait_for_messages(ALICE, 1)


def test_recipient_guessing_is_slowed_then_the_network_refused(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(services=("smtp",))
    with smtp_from(server, "127.0.0.2") as client:
        assert client.mail("s@remote.example")[0] == 250
        for n in range(3):
            started = time.monotonic()
            assert client.rcpt(f"nobody{n}@example.test")[0] == 550
            assert time.monotonic() - started < 0.9
        started = time.monotonic()
        assert client.rcpt("nobody3@example.test")[0] == 550
        assert time.monotonic() - started >= 0.9  # the tarpit
        assert client.rcpt(ALICE)[0] == 250
    for session in range(4):
        with smtp_from(server, f"127.0.0.{session + 3}") as client:
            assert client.mail("s@remote.example")[0] == 250
            for n in range(3):
                assert client.rcpt(f"x{session}-{n}@example.test")[0] == 550
    server.wait_for_log(r"recipient guessing: network blocked client=127\.0\.0\.6")
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtp_from(server, "127.0.0.9")
    assert refused.value.smtp_code == 421
    assert b"4.7.0" in refused.value.smtp_error
    # Another network is served.
    assert rcpt_from(server, "127.0.1.1", ALICE)[0] == 250
