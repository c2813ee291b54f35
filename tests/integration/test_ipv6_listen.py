"""IPv4 and IPv6 side by side: a real `postroom serve` with every [listen] key a list of
127.0.0.1 and [::1] on the same port answers smtplib, imaplib and http.client on both; the
IPv6 client's address is the one SPF judges and the Received header and the log name; and in
a network namespace of its own (so no real interface is bound) 0.0.0.0 and [::] share a port,
each family on its own socket, IPv4 clients never seen as ::ffff: addresses."""

from __future__ import annotations

import http.client
import imaplib
import shutil
import smtplib
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from . import dns_server as dns_server_module
from .conftest import (
    ALICE,
    DOMAIN,
    HOSTNAME,
    PASSWORDS,
    STRICT,
    Postroom,
    postroom_executable,
    require_program,
    toml_value,
)
from .dns_server import DnsServerFactory
from .wire import HOST, header_value, new_token, simple_message, with_token

dns_server = dns_server_module.dns_server

V6 = "::1"
SERVICES = ("smtp", "imap", "imaps", "http", "https")
SOA = """$TTL 300
@       IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 120
@       IN NS  ns.{origin}.
ns      IN A   127.0.0.1
"""
ZONES = {
    # Only the IPv6 loopback may send for six.test, and it publishes no DMARC record: mail
    # from 127.0.0.1 fails SPF and goes to Junk ([verify] spf_fail), mail from ::1 passes.
    "six.test": SOA.format(origin="six.test") + '@ IN TXT "v=spf1 ip6:::1 -all"\n',
    DOMAIN: SOA.format(origin=DOMAIN),
    "test": SOA.format(origin="test"),
}


def require_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind((V6, 0))
    except OSError as error:
        pytest.fail(f"no IPv6 loopback on this machine: {error}", pytrace=False)


@pytest.fixture
def dual(dns_server: DnsServerFactory, postroom_factory: Callable[..., Postroom]) -> Postroom:
    require_ipv6_loopback()
    nsd = dns_server(ZONES)
    return postroom_factory(
        services=SERVICES,
        also=(V6,),
        extra=f'[dns]\nnameservers = ["{nsd.nameserver}"]\n\n[verify]\nenabled = true\n',
    )


def test_every_service_answers_on_both_families(dual: Postroom) -> None:
    config = dual.config_path.read_text()
    assert f'smtp = ["127.0.0.1:{dual.ports["smtp"]}", "[::1]:{dual.ports["smtp"]}"]' in config
    tokens = {}
    for host in (HOST, V6):
        tokens[host] = new_token()
        with smtplib.SMTP(host, dual.ports["smtp"], local_hostname="client.test") as client:
            message = simple_message(tokens[host], sender="bob@six.test")
            assert client.sendmail("bob@six.test", [ALICE], message) == {}
    dual.wait_for_log(r"queued id=\S+ client=::1 ")
    dual.wait_for_log(r"queued id=\S+ client=127\.0\.0\.1 ")

    # From ::1: SPF judged the IPv6 address (pass), the Received header names it as an
    # RFC 5321 §4.1.3 IPv6 address literal; from 127.0.0.1 the same sender fails into Junk.
    dual.wait_for_messages(ALICE, 1)
    [inbox] = with_token(dual.export(ALICE), tokens[V6])
    results = b" ".join(header_value(inbox, "authentication-results")[0].split())
    assert b"spf=pass smtp.mailfrom=bob@six.test" in results, results
    received = b" ".join(header_value(inbox, "received")[0].split())
    assert b"[IPv6:::1]" in received, received
    [junk] = with_token(dual.export_mailbox(ALICE, "Junk"), tokens[HOST])
    results = b" ".join(header_value(junk, "authentication-results")[0].split())
    assert b"spf=fail smtp.mailfrom=bob@six.test" in results, results
    assert b"[127.0.0.1]" in b" ".join(header_value(junk, "received")[0].split())

    context = dual.tls_context()  # the generated certificate names 127.0.0.1 and ::1 too
    for host in (HOST, V6):
        plain = imaplib.IMAP4(host, dual.ports["imap"], timeout=10)
        plain.starttls(ssl_context=context)
        plain.login(ALICE, PASSWORDS[ALICE])
        assert plain.select("INBOX") == ("OK", [b"1"])
        plain.logout()
        implicit = imaplib.IMAP4_SSL(host, dual.ports["imaps"], ssl_context=context, timeout=10)
        implicit.login(ALICE, PASSWORDS[ALICE])
        assert implicit.select("Junk") == ("OK", [b"1"])
        implicit.logout()

        # /metrics answers loopback clients only: ::1 is one.
        for connection in (
            http.client.HTTPConnection(host, dual.ports["http"], timeout=10),
            http.client.HTTPSConnection(host, dual.ports["https"], context=context, timeout=10),
        ):
            literal = f"[{host}]" if ":" in host else host
            connection.request("GET", "/metrics", headers={"Host": literal})
            response = connection.getresponse()
            body = response.read().decode()
            assert response.status == 200, body
            assert "postroom_smtp_connections_total" in body
            connection.close()


# The client half of the namespace test: runs inside it, starts the server, talks to it on
# both wildcards' loopback addresses, stops it. argv: postroom, config, port.
INSIDE = """
import smtplib, socket, subprocess, sys, time
postroom, config, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = subprocess.Popen([postroom, "--config", config, "serve"], stdin=subprocess.DEVNULL)
try:
    deadline = time.monotonic() + 30
    for host in ("127.0.0.1", "::1"):
        while True:
            assert server.poll() is None, "serve exited"
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"no listener on {host}"
                time.sleep(0.05)
        with smtplib.SMTP(host, port, local_hostname="client.example.net", timeout=10) as c:
            assert c.sendmail("x@y.test", ["alice@example.test"], b"Subject: " + host.encode()
                              + b"\\r\\n\\r\\nhi\\r\\n") == {}
finally:
    server.terminate()
    sys.exit(server.wait(timeout=45))
"""


def test_wildcards_of_both_families_share_a_port(tmp_path: Path, user_template: Path) -> None:
    """What quickstart writes, ["0.0.0.0:25", "[::]:25"]: in a network namespace of its own
    (only its loopback, so any port is free and nothing outside is reached)."""
    unshare = require_program("unshare")
    require_program("ip")
    probe = subprocess.run(
        [unshare, "--net", "--map-root-user", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        why = f"unshare: no network namespace of its own: {probe.stderr.decode().strip()}"
        if STRICT:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    data = tmp_path / "data"
    shutil.copytree(user_template, data)
    port = 2525
    config = tmp_path / "postroom.toml"
    config.write_text(
        f"hostname = {toml_value(HOSTNAME)}\ndata_dir = {toml_value(str(data))}\n"
        f"domains = {toml_value([DOMAIN])}\n\n[listen]\n"
        f'smtp = ["0.0.0.0:{port}", "[::]:{port}"]\n\n'
        '[dns]\nnameservers = ["127.0.0.1:9"]\n\n[verify]\nenabled = false\n'
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        inside = subprocess.run(
            [
                *(unshare, "--net", "--map-root-user"),
                *("sh", "-ec", 'ip link set lo up; exec "$@"', "sh"),
                *(sys.executable, "-c", INSIDE, postroom_executable(), str(config), str(port)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    text = log.read_text(errors="replace")
    assert inside.returncode == 0, text
    assert f"listening service=smtp address=0.0.0.0:{port}" in text
    assert f"listening service=smtp address=[::]:{port}" in text
    # Each family on its own socket: the IPv4 client is 127.0.0.1, never ::ffff:127.0.0.1.
    assert " client=127.0.0.1 " in text and " client=::1 " in text, text
    assert "::ffff:" not in text


def test_bad_ipv6_listen_address_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "postroom.toml"
    config.write_text('[listen]\nsmtp = ["127.0.0.1:2525", "::1:2525"]\n')
    result = subprocess.run(
        [postroom_executable(), "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"{config}: listen.smtp: entry 2: '::1:2525' is ambiguous" in line, line
    assert 'put the IPv6 address in brackets, the port after them: "[::1]:2525"' in line, line
    assert not (tmp_path / "postroom-data").exists()  # nothing made
