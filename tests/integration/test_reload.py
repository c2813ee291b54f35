"""SIGHUP: the config, the accounts and the certificate are read again; no session is dropped.

Against the real server: an IMAP session opened before the signal goes on after it; a new
TLS connection after cert.pem and key.pem were replaced sees the new certificate (one opened
before keeps the old); a broken config is one logged line and the server goes on serving;
[limits] apply to the next session; a changed [listen] is named as needing a restart.
"""

from __future__ import annotations

import imaplib
import re
import signal
import smtplib
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from .conftest import ALICE, BOB, Factory, Postroom, wait_until
from .wire import HOST

trustme = pytest.importorskip("trustme")

SERVICES = ("smtp", "submission", "submissions", "imap", "imaps")


def reload(server: Postroom, expect: str = r"reloaded ") -> None:
    """SIGHUP, then wait for the log line (a regular expression) that says it was handled."""
    server.wait_for_log(r"postroom ready")
    start = len(server.log())
    server.signal(signal.SIGHUP)
    pattern = re.compile(expect)

    def handled() -> bool:
        server.check_alive()
        return pattern.search(server.log()[start:]) is not None

    wait_until(handled, 15, f"log line /{expect}/ after SIGHUP")


def peer_serial(port: int, context: ssl.SSLContext) -> int:
    with (
        socket.create_connection((HOST, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="mx.example.test") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def issue(ca: object, cert: Path, key: Path) -> int:
    issued = ca.issue_cert("mx.example.test", "127.0.0.1")  # type: ignore[attr-defined]
    key.write_bytes(issued.private_key_pem.bytes())
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()).serial_number


def test_open_imap_session_survives_a_reload(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(services=SERVICES)
    client = imaplib.IMAP4(HOST, server.ports["imap"], timeout=15)
    client.starttls(ssl_context=server.tls_context())
    client.login(ALICE, server.passwords[ALICE])
    assert client.select("INBOX")[0] == "OK"
    reload(server)
    assert client.noop()[0] == "OK"
    with server.submission(BOB) as smtp:
        smtp.sendmail(BOB, [ALICE], b"Subject: after reload\r\n\r\nhello\r\n")
    server.wait_for_messages(ALICE, 1)
    assert client.noop()[0] == "OK"
    assert client.search(None, "ALL")[1] == [b"1"]
    client.logout()


def test_new_certificate_after_reload(postroom_factory: Factory, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = issue(ca, cert, key)
    pair = {"cert": str(cert), "key": str(key)}
    server: Postroom = postroom_factory(services=(*SERVICES, "https"), tls=pair)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    assert peer_serial(server.ports["imaps"], context) == first
    before = imaplib.IMAP4_SSL(HOST, server.ports["imaps"], ssl_context=context, timeout=15)
    before.login(ALICE, server.passwords[ALICE])

    second = issue(ca, cert, key)
    assert second != first
    reload(server)
    assert peer_serial(server.ports["imaps"], context) == second
    assert peer_serial(server.ports["submissions"], context) == second
    assert peer_serial(server.ports["https"], context) == second
    with smtplib.SMTP(HOST, server.submission_port, local_hostname="client.example.net") as s:
        s.starttls(context=context)
        assert s.sock is not None
        der = s.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert der is not None and x509.load_der_x509_certificate(der).serial_number == second
    # The session from before goes on, on its old certificate.
    assert before.noop()[0] == "OK"
    before.logout()


def test_broken_certificate_keeps_the_old_one(postroom_factory: Factory, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = issue(ca, cert, key)
    server: Postroom = postroom_factory(services=SERVICES, tls={"cert": str(cert), "key": str(key)})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    other = ca.issue_cert("mx.example.test")
    key.write_bytes(other.private_key_pem.bytes())  # not the certificate's key
    reload(server, "reload failed, going on with the running config")
    assert "cannot load certificate and key" in server.log()
    assert peer_serial(server.ports["imaps"], context) == first


def test_broken_config_keeps_serving(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(services=SERVICES)
    good = server.config_path.read_text()
    server.config_path.write_text(good + "\n[limits]\nmessage_size = -1\n")
    reload(server, "reload failed, going on with the running config")
    failed = [line for line in server.log().splitlines() if "reload failed" in line]
    assert len(failed) == 1 and str(server.config_path) in failed[0], failed
    assert "TOML syntax error" in failed[0]
    with server.submission(ALICE) as client:
        client.sendmail(ALICE, [BOB], b"Subject: still here\r\n\r\nserving\r\n")
    server.config_path.write_text(good)  # for the CLI that counts the messages
    server.wait_for_messages(BOB, 1)


def test_limits_apply_to_the_next_session(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(services=SERVICES)
    open_before = server.smtp()
    assert open_before.ehlo()[0] == 250
    assert open_before.esmtp_features["size"] == "52428800"
    server.limits["message_size"] = 123456
    server.write_config()
    reload(server)
    with server.smtp() as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "123456"
    assert open_before.noop()[0] == 250
    open_before.quit()


def test_sending_limit_applies_after_reload(postroom_factory: Factory) -> None:
    """[limits] messages_per_hour reaches the running abuse defences (Defences.reconfigure)."""
    server: Postroom = postroom_factory(services=SERVICES)
    message = b"Subject: hi\r\n\r\nhello\r\n"
    with server.submission() as client:
        client.sendmail(ALICE, [BOB], message)
        assert client.mail(ALICE)[0] == 250  # the default allows 500 an hour
        client.rset()
    server.limits["messages_per_hour"] = 1
    server.write_config()
    reload(server)
    with server.submission() as client:
        code, text = client.mail(ALICE)
        assert (code, text[:5]) == (451, b"4.7.0")


def test_listen_change_is_named_for_a_restart(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(services=SERVICES)
    ports = dict(server.ports)
    server.ports["imap"] = ports["imap"] + 1 if ports["imap"] < 65535 else ports["imap"] - 1
    server.write_config()
    reload(server, r"reload: listen changed in .*takes effect after a restart")
    server.ports = ports
    with socket.create_connection((HOST, ports["imap"]), timeout=10) as still:
        assert still.recv(100).startswith(b"* OK")
