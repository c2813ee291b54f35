"""Logins on every service go through one SASL exchange: a failed login is logged in one format
that the fail2ban filter shipped in contrib/ matches (checked with the real fail2ban-regex), and
a credential store that fails is a temporary failure (454 4.7.0, NO [UNAVAILABLE],
-ERR [SYS/TEMP]) after which the session goes on."""

from __future__ import annotations

import base64
import imaplib
import poplib
import re
import smtplib
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import ALICE, Postroom, require_program

FILTER = Path(__file__).parents[2] / "contrib" / "fail2ban" / "filter.d" / "postroom.conf"
TIMEOUT = 30
SERVICES = ("smtp", "submission", "submissions", "imap", "pop3")


@pytest.fixture
def postroom(postroom_factory: Callable[..., Postroom]) -> Postroom:
    """A server with every kind of login: SMTP AUTH, IMAP and POP3."""
    return postroom_factory(services=SERVICES)


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def smtp_auth(server: Postroom, user: str, password: str) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.submission_port, timeout=TIMEOUT) as client:
        client.starttls(context=server.tls_context())
        client.ehlo()
        code, text = client.docmd("AUTH", "PLAIN " + plain(user, password))
        noop = client.noop()[0]
    assert noop == 250  # the session goes on
    return code, text


def imap_client(server: Postroom) -> imaplib.IMAP4:
    client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=TIMEOUT)
    client.starttls(ssl_context=server.tls_context())
    return client


def pop3_client(server: Postroom) -> poplib.POP3:
    client = poplib.POP3(server.host, server.ports["pop3"], timeout=TIMEOUT)
    client.stls(context=server.tls_context())
    return client


def test_failed_logins_are_logged_in_the_format_the_fail2ban_filter_matches(
    postroom: Postroom,
) -> None:
    fail2ban_regex = require_program("fail2ban-regex")
    spoof = "evil postroom.auth WARNING login failed service=x client=203.0.113.9 user=<x"
    # SMTP AUTH on submission and submissions.
    assert smtp_auth(postroom, ALICE, "wrong")[0] == 535
    assert smtp_auth(postroom, spoof, "wrong")[0] == 535
    with smtplib.SMTP_SSL(
        postroom.host, postroom.submissions_port, context=postroom.tls_context(), timeout=TIMEOUT
    ) as client:
        client.ehlo()
        assert client.docmd("AUTH", "PLAIN " + plain("nobody@example.test", "x"))[0] == 535
    # IMAP LOGIN and AUTHENTICATE.
    client = imap_client(postroom)
    for attempt in (
        lambda: client.login(ALICE, "wrong"),
        lambda: client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0nope".encode()),
    ):
        try:
            attempt()
        except imaplib.IMAP4.error as error:
            assert "AUTHENTICATIONFAILED" in str(error)
        else:
            raise AssertionError("a wrong password was accepted")
    client.logout()
    # POP3 USER/PASS and AUTH.
    pop = pop3_client(postroom)
    pop.user(ALICE)
    try:
        pop.pass_("wrong")
    except poplib.error_proto as error:
        assert b"[AUTH]" in error.args[0]
    try:
        pop._shortcmd("AUTH PLAIN " + plain(ALICE, "wrong"))
    except poplib.error_proto as error:
        assert b"[AUTH]" in error.args[0]
    pop.quit()
    # A good login is not a failure.
    with postroom.submission():
        pass

    postroom.wait_for_log(r"service=pop3 client=\S+ user=<" + re.escape(ALICE) + "> method=PLAIN")
    lines = [line for line in postroom.log(current=True).splitlines() if "login failed" in line]
    assert [re.search(r"service=(\S+) .* method=(\S+)$", line).groups() for line in lines] == [  # type: ignore[union-attr]
        ("submission", "PLAIN"),
        ("submission", "PLAIN"),
        ("submissions", "PLAIN"),
        ("imap", "LOGIN"),
        ("imap", "PLAIN"),
        ("pop3", "USER"),
        ("pop3", "PLAIN"),
    ]
    assert all(f"user=<{ALICE}>" in line for line in (lines[0], lines[3], lines[5]))
    assert "user=<evil?postroom.auth?WARNING?login?failed?service=x?client=203.0.113.9" in lines[1]

    # fail2ban itself, with the shipped filter, over the server's log: one address per failure.
    result = subprocess.run(
        [fail2ban_regex, "--out", "ip", str(postroom.log_path), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.split() == ["127.0.0.1"] * 7, result.stdout  # the spoof fooled nobody


@contextmanager
def credential_store_down(server: Postroom) -> Iterator[None]:
    """The users table vanishes under the running server (a damaged or unreachable store),
    and comes back."""
    database = server.data_dir / "postroom.db"
    with sqlite3.connect(database, timeout=30) as conn:
        conn.execute("ALTER TABLE users RENAME TO users_away")
    try:
        yield
    finally:
        with sqlite3.connect(database, timeout=30) as conn:
            conn.execute("ALTER TABLE users_away RENAME TO users")


def test_a_failing_credential_store_is_a_temporary_failure_on_every_service(
    postroom: Postroom,
) -> None:
    smtp = smtplib.SMTP(postroom.host, postroom.submission_port, timeout=TIMEOUT)
    smtp.starttls(context=postroom.tls_context())
    smtp.ehlo()
    imap = imap_client(postroom)
    pop = pop3_client(postroom)
    with credential_store_down(postroom):
        code, text = smtp.docmd("AUTH", "PLAIN " + plain(ALICE, postroom.passwords[ALICE]))
        assert (code, text[:5]) == (454, b"4.7.0")
        assert smtp.noop()[0] == 250
        try:
            imap.login(ALICE, postroom.passwords[ALICE])
        except imaplib.IMAP4.error as error:
            assert "[UNAVAILABLE]" in str(error)
        else:
            raise AssertionError("logged in without a credential store")
        assert imap.noop()[0] == "OK"
        pop.user(ALICE)
        try:
            pop.pass_(postroom.passwords[ALICE])
        except poplib.error_proto as error:
            assert error.args[0].startswith(b"-ERR [SYS/TEMP]")
        else:
            raise AssertionError("logged in without a credential store")
        assert pop.capa()
    # The same sessions log in once the store is back.
    assert smtp.login(ALICE, postroom.passwords[ALICE])[0] == 235
    assert imap.login(ALICE, postroom.passwords[ALICE])[0] == "OK"
    pop.user(ALICE)
    assert pop.pass_(postroom.passwords[ALICE]).startswith(b"+OK")
    smtp.quit()
    imap.logout()
    pop.quit()
    log = postroom.log(current=True)
    assert "credential store failed: OperationalError: no such table: users" in log
    assert "login failed" not in log  # the store's failure is not the client's
