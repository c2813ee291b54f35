"""The PROXY protocol (issue 16 §2) behind a real HAProxy (Debian's), started on free loopback
ports with `send-proxy` (version 1) and `send-proxy-v2` in front of postroom's SMTP, IMAP,
implicit-TLS IMAP and HTTPS listeners. HAProxy connects from 127.0.0.66, the only trusted
address; the clients connect from 127.0.0.5, so the address postroom reports can only come
from the header: the Received header, the log lines (fail2ban's included) and SPF (nsd serves
a record that allows 127.0.0.5 alone, with DMARC p=reject) all see 127.0.0.5. A direct
connection to a PROXY listener from anywhere else is closed unheard, a header from an
untrusted client is not believed, and a trusted peer must send a well-formed header (LOCAL
keeps its own address) or be closed."""

from __future__ import annotations

import http.client
import imaplib
import re
import smtplib
import socket
import struct
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest

from postroom.proto.proxy import V2_SIGNATURE

from . import dns_server as dns_server_module
from .conftest import (
    ALICE,
    BOB,
    DOMAIN,
    HOSTNAME,
    PASSWORDS,
    Postroom,
    free_ports,
)
from .dns_server import DnsServerFactory
from .haproxy import BALANCER, Balancer, accept_proxy, start_haproxy

dns_server = dns_server_module.dns_server

CLIENT = "127.0.0.5"  # the original client, as HAProxy sees it
STRANGER = "127.0.0.7"  # neither
TIMEOUT = 15.0
SERVICES = ("smtp", "submission", "imap", "imaps", "pop3", "https")

SOA = """$TTL 300
@       IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 120
@       IN NS  ns.{origin}.
ns      IN A   127.0.0.1
"""
ZONES = {
    "sender.test": SOA.format(origin="sender.test")
    + f'@ IN TXT "v=spf1 ip4:{CLIENT} -all"\n_dmarc IN TXT "v=DMARC1; p=reject"\n',
    DOMAIN: SOA.format(origin=DOMAIN),
    "test": SOA.format(origin="test"),
}

Behind = tuple[Postroom, Balancer[tuple[str, int]]]


def _haproxy_config(server: Postroom, ports: dict[tuple[str, int], int]) -> str:
    lines = [
        "global",
        "    maxconn 200",
        "defaults",
        "    mode tcp",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
    ]
    for (service, version), port in ports.items():
        send = "send-proxy" if version == 1 else "send-proxy-v2"
        lines += [
            f"frontend {service}_v{version}",
            f"    bind 127.0.0.1:{port}",
            f"    default_backend {service}_v{version}",
            f"backend {service}_v{version}",
            f"    server postroom 127.0.0.1:{server.ports[service]} {send} source {BALANCER}",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def behind(
    dns_server: DnsServerFactory, postroom_factory: Callable[..., Postroom], tmp_path: Path
) -> Iterator[Behind]:
    nsd = dns_server(ZONES)
    server = postroom_factory(
        services=SERVICES,
        start=False,
        extra=f'[dns]\nnameservers = ["{nsd.nameserver}"]\n\n[verify]\nenabled = true\n'
        "\n[auth]\nplaintext = true\n",  # LOGIN on the plain IMAP listener
    )
    accept_proxy(server, SERVICES)
    server.start()
    wanted = [(service, version) for service in SERVICES for version in (1, 2)]
    ports = dict(zip(wanted, free_ports(len(wanted)), strict=True))
    balancer = start_haproxy(tmp_path / "haproxy", _haproxy_config(server, ports), ports)
    try:
        yield server, balancer
    finally:
        balancer.stop()


def _message(sender: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = BOB
    message["Subject"] = "through the balancer"
    message.set_content("hello\n")
    return message.as_bytes(policy=SMTP)


def _connect(port: int, source: str = CLIENT) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), TIMEOUT, source_address=(source, 0))


def _closed_unheard(sock: socket.socket) -> bool:
    """The server closed the connection without sending a byte."""
    with sock:
        sock.settimeout(TIMEOUT)
        try:
            return sock.recv(1024) == b""
        except ConnectionResetError:
            return True


def _smtp_through(port: int, sender: str) -> None:
    with smtplib.SMTP(
        "127.0.0.1", port, local_hostname="client.example.net", source_address=(CLIENT, 0)
    ) as client:
        client.sendmail(sender, [BOB], _message(sender))


@pytest.mark.parametrize("version", [1, 2])
def test_smtp_through_haproxy_sees_the_client(behind: Behind, version: int) -> None:
    server, balancer = behind
    _smtp_through(balancer.ports["smtp", version], "someone@sender.test")
    server.wait_for_messages(BOB, 1)
    (stored,) = server.export(BOB)
    head = stored.split(b"\n\n", 1)[0].decode()
    assert f"[{CLIENT}]" in head, head
    assert "spf=pass smtp.mailfrom=someone@sender.test" in head, head
    assert BALANCER not in head and "127.0.0.1]" not in head, head
    server.wait_for_log(rf"queued id=\S+ client={CLIENT} from=<someone@sender\.test>")


def test_submission_with_starttls_through_haproxy(behind: Behind) -> None:
    """STARTTLS after the header: the upgrade and the login happen on the relayed connection."""
    server, balancer = behind
    with smtplib.SMTP(
        "127.0.0.1",
        balancer.ports["submission", 2],
        local_hostname="client.example.net",
        source_address=(CLIENT, 0),
        timeout=TIMEOUT,
    ) as client:
        client.starttls(context=server.tls_context())
        client.login(ALICE, PASSWORDS[ALICE])
        client.sendmail(ALICE, [BOB], _message(ALICE))
    server.wait_for_messages(BOB, 1)
    (stored,) = server.export(BOB)
    assert f"[{CLIENT}]" in stored.split(b"\n\n", 1)[0].decode()
    server.wait_for_log(rf"authenticated client={CLIENT} user={ALICE}")


def test_pop3_with_an_ipv6_client_in_a_version_1_header(
    behind: Behind,
) -> None:
    server, _balancer = behind
    with _connect(server.ports["pop3"], BALANCER) as sock, sock.makefile("rb") as replies:
        sock.sendall(b"PROXY TCP6 2001:db8::9 ::1 5555 110\r\n")
        assert replies.readline().startswith(b"+OK")
        sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORDS[ALICE]}\r\nQUIT\r\n".encode())
        assert all(replies.readline().startswith(b"+OK") for _ in range(3))
    server.wait_for_log(rf"pop3 login service=pop3 client=2001:db8::9 user={ALICE}")


def test_spf_fails_for_the_balancers_own_address(behind: Behind) -> None:
    """The same mail sent with a LOCAL header (postroom keeps the socket peer, 127.0.0.66)
    fails SPF and DMARC rejects it: the pass above came from the header's address."""

    server, _balancer = behind
    with _connect(server.smtp_port, BALANCER) as sock:
        sock.sendall(V2_SIGNATURE + b"\x20\x00\x00\x00")
        client = smtplib.SMTP(local_hostname="client.example.net")
        client.sock = sock
        client.file = None
        code, _ = client.getreply()
        assert code == 220
        client.ehlo()
        client.mail("someone@sender.test")
        client.rcpt(BOB)
        code, text = client.data(_message("someone@sender.test"))
        assert code == 550, text
        client.quit()
    server.wait_for_log(rf"rejected client={BALANCER} from=<someone@sender\.test> result=550")


class SourcedImap(imaplib.IMAP4):
    """imaplib's client, connecting from CLIENT."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return _connect(self.port)


class SourcedImapTls(imaplib.IMAP4_SSL):
    """imaplib's implicit-TLS client, connecting from CLIENT."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return self.ssl_context.wrap_socket(_connect(self.port), server_hostname=self.host)


@pytest.mark.parametrize("version", [1, 2])
def test_imap_through_haproxy_sees_the_client(behind: Behind, version: int) -> None:
    server, balancer = behind
    with SourcedImap("127.0.0.1", balancer.ports["imap", version], timeout=TIMEOUT) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("nobody@example.test", "wrong")
        imap.login(ALICE, PASSWORDS[ALICE])
        imap.select("INBOX")
        imap.logout()
    server.wait_for_log(rf"login client={CLIENT} user={ALICE}")
    # The fail2ban line (contrib/fail2ban/) names the client, not the balancer.
    server.wait_for_log(rf"login failed service=imap client={CLIENT} user=<nobody@")


def test_implicit_tls_through_haproxy_in_tcp_mode(behind: Behind) -> None:
    server, balancer = behind
    for version in (1, 2):
        with SourcedImapTls(
            "127.0.0.1", balancer.ports["imaps", version], ssl_context=server.tls_context()
        ) as imap:
            imap.login(ALICE, PASSWORDS[ALICE])
            imap.select("INBOX")
            imap.logout()
    log = server.log(current=True)
    assert log.count(f"login client={CLIENT} user={ALICE}") == 2, log


def _https(
    server: Postroom, port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, str, list[str]]:
    """One request from CLIENT: status, body, Set-Cookie values."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", port, context=server.tls_context(), timeout=TIMEOUT, source_address=(CLIENT, 0)
    )
    try:
        sent = {"Host": f"{HOSTNAME}:{port}", **headers}
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        return response.status, text, response.headers.get_all("set-cookie") or []
    finally:
        connection.close()


def test_web_login_through_haproxy_sees_the_client(behind: Behind) -> None:
    """HTTPS in TCP mode: the web admin's failed login is logged (the fail2ban line) and
    throttled under the client's address."""
    server, balancer = behind
    for version in (1, 2):
        port = balancer.ports["https", version]
        status, page, cookies = _https(server, port, "GET", "/login", None, {})
        assert status == 200, page
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token, page
        jar = "; ".join(
            f"{name}={morsel.value}"
            for value in cookies
            for name, morsel in SimpleCookie(value).items()
        )
        form = {"csrf": token[1], "address": ALICE, "password": "not-the-password"}
        status, page, _ = _https(
            server,
            port,
            "POST",
            "/login",
            urlencode(form).encode(),
            {"Content-Type": "application/x-www-form-urlencoded", "Cookie": jar},
        )
        assert status == 403, page
    log = server.log(current=True)
    line = f"login failed service=web client={CLIENT} user=<{ALICE}> method=PASSWORD"
    assert log.count(line) == 2, log


def test_direct_connections_to_a_proxy_listener_are_refused(
    behind: Behind,
) -> None:
    server, _balancer = behind
    for service in SERVICES:
        assert _closed_unheard(_connect(server.ports[service], STRANGER)), service
    server.wait_for_log(rf"untrusted peer refused service=imaps peer={STRANGER}")
    # A forged header from an untrusted address: refused before it is read.
    sock = _connect(server.smtp_port, STRANGER)
    sock.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 1234 25\r\n")
    assert _closed_unheard(sock)
    assert "192.0.2.1" not in server.log(current=True)


def test_a_header_from_the_client_behind_haproxy_is_not_believed(
    behind: Behind,
) -> None:
    server, balancer = behind
    sock = _connect(balancer.ports["smtp", 2])
    with sock, sock.makefile("rb") as replies:
        assert replies.readline().startswith(b"220")
        sock.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 1234 25\r\n")
        assert replies.readline()[:1] == b"5"  # an unknown SMTP command
        sock.sendall(b"HELO forger.example\r\nMAIL FROM:<x@sender.test>\r\nQUIT\r\n")
        while not replies.readline().startswith(b"221"):
            pass
    assert "192.0.2.1" not in server.log(current=True)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"EHLO client.example.net\r\n", "other bytes"),
        (b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 25\r\n", "port"),
        (V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8), "too short"),
        (b"PROXY TCP4 192.0.2.1 127.0.0.1 1234 25", "connection closed before the end"),
    ],
)
def test_a_trusted_peer_with_a_bad_header_is_closed(
    behind: Behind, data: bytes, reason: str
) -> None:
    server, _balancer = behind
    sock = _connect(server.smtp_port, BALANCER)
    sock.sendall(data)
    if data.endswith(b"25"):
        sock.shutdown(socket.SHUT_WR)
    assert _closed_unheard(sock)
    server.wait_for_log(rf"header refused service=smtp peer={BALANCER}: .*{reason}")


def test_a_silent_trusted_peer_is_closed_after_the_header_timeout(
    behind: Behind,
) -> None:
    server, _balancer = behind
    started = time.monotonic()
    assert _closed_unheard(_connect(server.smtp_port, BALANCER))
    assert 4.0 <= time.monotonic() - started < TIMEOUT
    server.wait_for_log(rf"header refused service=smtp peer={BALANCER}: no complete header")


def test_a_header_in_pieces_and_data_right_behind_it(behind: Behind) -> None:
    """A version 2 header sent in three segments, the client's first command in the same
    segment as its end: the header is taken whole and nothing more, so the command is
    answered, and the session's client is the header's."""
    server, _balancer = behind
    address = socket.inet_aton("198.51.100.23") + socket.inet_aton("127.0.0.1")
    header = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 12) + address + b"\x30\x39\x00\x8f"
    with _connect(server.ports["imap"], BALANCER) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(header[:5])
        time.sleep(0.05)  # separate segments: the server must wait for the rest
        sock.sendall(header[5:20])
        time.sleep(0.05)
        sock.sendall(header[20:] + b'a LOGIN nobody@example.test "wrong"\r\n')
        with sock.makefile("rb") as replies:
            assert replies.readline().startswith(b"* OK")
            assert replies.readline().startswith(b"a NO")
    server.wait_for_log(r"login failed service=imap client=198\.51\.100\.23 user=<nobody@")
