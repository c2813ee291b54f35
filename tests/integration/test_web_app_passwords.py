"""App passwords made on `/account/` of a real `postroom serve` (real HTTPS): shown once, kept
as argon2 hashes, logging in over IMAP, SMTP AUTH, POP3 and ManageSieve with the real imaplib,
smtplib, poplib and sievelib, never on the web login form; revoked, they log in nowhere;
changes need the CSRF token."""

from __future__ import annotations

import poplib
import re
import smtplib
import sqlite3

import pytest
from sievelib.managesieve import Client

from .conftest import BOB, Factory, Postroom
from .test_web_admin import imap_login
from .web_client import WebClient

SERVICES = ("smtp", "submission", "imap", "pop3", "managesieve", "http", "https")
SHOWN = re.compile(r'<code id="new-app-password">([a-z2-9-]+)</code>')


@pytest.fixture
def server(postroom_factory: Factory) -> Postroom:
    return postroom_factory(services=SERVICES)


def smtp_login(server: Postroom, address: str, password: str) -> bool:
    with smtplib.SMTP(server.host, server.submission_port, timeout=30) as client:
        client.starttls(context=server.tls_context())
        try:
            client.login(address, password)
        except smtplib.SMTPAuthenticationError:
            return False
        return True


def pop3_login(server: Postroom, address: str, password: str) -> bool:
    client = poplib.POP3(server.host, server.ports["pop3"], timeout=30)
    try:
        client.stls(context=server.tls_context())
        client.user(address)
        client.pass_(password)
    except poplib.error_proto:
        return False
    finally:
        client.close()
    return True


def managesieve_login(server: Postroom, address: str, password: str) -> bool:
    client = Client(server.host, server.ports["managesieve"])
    ok = bool(client.connect(address, password, starttls=True, authmech="PLAIN"))
    if ok:
        client.logout()
    return ok


def test_an_app_password_logs_in_to_mail_services_until_revoked(
    server: Postroom, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sievelib verifies with the default trust store: let it trust the server's certificate.
    monkeypatch.setenv("SSL_CERT_FILE", str(server.data_dir / "tls" / "cert.pem"))
    client = WebClient(server)
    client.login(BOB, server.passwords[BOB])
    token = client.csrf_of("/account/")
    made = client.post("/account/app-passwords", {"csrf": token, "name": "phone"})
    assert made.status == 201 and made.headers["cache-control"] == "no-store"
    match = SHOWN.search(made.body)
    assert match, made.body
    password = match[1]
    assert len(password) == 29  # six groups of four, five dashes
    # Shown once: the page lists its name, never the password again; the store has a hash.
    page = client.get("/account/")
    assert "phone" in page.body and password not in page.body
    with sqlite3.connect(server.data_dir / "postroom.db") as db:
        (stored,) = db.execute("SELECT password_hash FROM app_passwords").fetchone()
    assert stored.startswith("$argon2") and password not in stored
    again = client.post("/account/app-passwords", {"csrf": token, "name": "phone"})
    assert again.status == 400 and "already" in again.body
    # It logs in to IMAP and SMTP; the main password still does too.
    assert imap_login(server, BOB, password)
    assert smtp_login(server, BOB, password)
    assert pop3_login(server, BOB, password)
    assert managesieve_login(server, BOB, password)
    assert imap_login(server, BOB, server.passwords[BOB])
    # Not to the web login form.
    WebClient(server).login(BOB, password, expect=403)
    # Revoke: without the token refused and nothing changes; with it, logins fail.
    assert client.post("/account/app-passwords/revoke", {"name": "phone"}).status == 403
    assert imap_login(server, BOB, password)
    revoked = client.post("/account/app-passwords/revoke", {"csrf": token, "name": "phone"})
    assert (revoked.status, revoked.location) == (303, "/account/?done=revoked")
    assert not imap_login(server, BOB, password)
    assert not smtp_login(server, BOB, password)
    assert not pop3_login(server, BOB, password)
    assert not managesieve_login(server, BOB, password)
    assert "You have no app passwords" in client.get("/account/").body
    missing = client.post("/account/app-passwords/revoke", {"csrf": token, "name": "phone"})
    assert missing.status == 404


def test_making_an_app_password_needs_the_csrf_token_and_a_name(server: Postroom) -> None:
    client = WebClient(server)
    client.login(BOB, server.passwords[BOB])
    token = client.csrf_of("/account/")
    assert client.post("/account/app-passwords", {"name": "laptop"}).status == 403
    forged = client.post("/account/app-passwords", {"csrf": "x", "name": "laptop"})
    assert forged.status == 403
    unnamed = client.post("/account/app-passwords", {"csrf": token, "name": "  "})
    assert unnamed.status == 400
    with sqlite3.connect(server.data_dir / "postroom.db") as db:
        assert db.execute("SELECT count(*) FROM app_passwords").fetchone() == (0,)
