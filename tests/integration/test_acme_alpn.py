"""tls-alpn-01 (RFC 8737): the validation certificate is given only to a ClientHello offering
acme-tls/1 for a pending name, with the critical acmeIdentifier extension holding the key
authorization's digest; and a real `postroom serve` with no HTTP listener at all gets its
certificate from a real pebble validating on the server's HTTPS port, then serves it."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from postroom.net import tls
from postroom.net.alpn import AlpnChallenges
from postroom.web.server import HttpListener

from . import dns_server as dns_server_module
from .conftest import DOMAIN, HOSTNAME, Factory, free_ports, wait_until
from .pebble import run_pebble
from .test_acme import ISSUE_TIMEOUT, NAMES, ZONE, acme_table, verify_chain

dns_server = dns_server_module.dns_server

ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
KEY_AUTHORIZATION = "tok_en-1.thumbprint-of-the-account-key"


def handshake(
    host: str, port: int, name: str, alpn: list[str] | None, *, ask: bool = False
) -> tuple[x509.Certificate, str | None, bytes]:
    """A TLS handshake with SNI `name` offering `alpn`: the leaf given, the protocol
    negotiated, and (`ask`) the server's answer to an HTTP request (b"": closed unanswered)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    with (
        socket.create_connection((host, port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=name) as connection,
    ):
        der = connection.getpeercert(binary_form=True)
        assert der is not None
        protocol = connection.selected_alpn_protocol()
        rest = b""
        if ask:
            try:
                connection.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
                rest = connection.recv(1000)
            except (ssl.SSLError, ConnectionError):
                rest = b""
    return x509.load_der_x509_certificate(der), protocol, rest


def acme_identifier(leaf: x509.Certificate) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return leaf.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    except x509.ExtensionNotFound:
        return None


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello\n")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, AlpnChallenges, x509.Certificate]]:
    """postroom's HTTPS listener on loopback (in a thread's event loop), its server context
    with tls-alpn-01 attached; its port, its challenges and the certificate it presents."""
    cert, key = tls.ensure_self_signed(tmp_path / "tls", HOSTNAME)
    context = tls.server_context(cert, key)
    challenges = AlpnChallenges()
    challenges.attach(context)
    app = Starlette(routes=[Route("/", hello)])
    listener = HttpListener("https", "127.0.0.1", 0, app, ssl_context=context, max_connections=10)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(listener.start(), loop).result(timeout=10)
    try:
        yield listener.port, challenges, x509.load_pem_x509_certificate(cert.read_bytes())
    finally:
        asyncio.run_coroutine_threadsafe(listener.stop(1.0), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_validation_certificate_only_for_a_pending_name(
    tls_server: tuple[int, AlpnChallenges, x509.Certificate],
) -> None:
    port, challenges, normal = tls_server
    pending = f"mta-sts.{DOMAIN}"
    challenges.publish(pending.upper(), KEY_AUTHORIZATION)  # names compare case-blind

    leaf, protocol, answer = handshake("127.0.0.1", port, pending, ["acme-tls/1"], ask=True)
    assert protocol == "acme-tls/1"
    assert answer == b""  # closed after the handshake: no HTTP on acme-tls/1
    # RFC 8737 §3: self-signed, the validated name as its only SAN, the critical
    # acmeIdentifier extension holding DER OCTET STRING(SHA-256(key authorization)).
    assert leaf.issuer == leaf.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.DNSName(pending)]
    extension = acme_identifier(leaf)
    assert extension is not None and extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    digest = hashlib.sha256(KEY_AUTHORIZATION.encode("ascii")).digest()
    assert extension.value.value == b"\x04\x20" + digest
    # The shared context offers no ALPN: acme-tls/1 above was selected on the challenge
    # context, after the SNI callback. A client naming the pending name without offering
    # acme-tls/1 cannot be told apart there; it is given no HTTP under that certificate.
    leaf, protocol, answer = handshake("127.0.0.1", port, pending, ["http/1.1"], ask=True)
    assert protocol is None and acme_identifier(leaf) is not None and answer == b""

    # acme-tls/1 for a name with no pending challenge: the normal certificate, no ALPN.
    for other in (HOSTNAME, f"autoconfig.{DOMAIN}", "evil.test"):
        leaf, protocol, answer = handshake("127.0.0.1", port, other, ["acme-tls/1"], ask=True)
        assert protocol is None, other
        assert leaf == normal, other
        assert acme_identifier(leaf) is None
        assert answer.startswith(b"HTTP/1.1 200 "), other
    leaf, protocol, answer = handshake("127.0.0.1", port, HOSTNAME, None, ask=True)
    assert leaf == normal and protocol is None and answer.startswith(b"HTTP/1.1 200 ")

    challenges.withdraw(pending)
    assert challenges.pending() == []
    leaf, protocol, _ = handshake("127.0.0.1", port, pending, ["acme-tls/1"])
    assert leaf == normal and protocol is None


def test_https_listener_gives_no_challenge_to_a_name_not_pending(
    postroom_factory: Factory,
) -> None:
    """The running server with tls-alpn-01 on and no order pending (its CA is unreachable):
    a ClientHello offering acme-tls/1 gets the normal certificate and ordinary HTTP; and
    `acme renew` says that only the server answers tls-alpn-01."""
    (closed,) = free_ports(1)
    server = postroom_factory(services=("smtp", "https"), start=False)
    ca_file = server.root / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    server.extra = acme_table(f"https://127.0.0.1:{closed}/dir", ca_file)
    server.extra += 'challenge = "tls-alpn-01"\n'
    server.write_config()
    renew = server.run_cli("acme", "renew", check=False)
    assert renew.returncode == 1
    assert "tls-alpn-01, which only postroom serve answers" in renew.stderr
    server.start()
    server.wait_for_log(r"acme: certificate order failed \(1 in a row\)")
    normal, _, _ = handshake(server.host, server.ports["https"], HOSTNAME, None)
    for name in NAMES:
        leaf, protocol, answer = handshake(
            server.host, server.ports["https"], name, ["acme-tls/1", "http/1.1"], ask=True
        )
        assert protocol is None, name
        assert leaf == normal and acme_identifier(leaf) is None, name
        assert answer.startswith(b"HTTP/1.1 "), name


@pytest.mark.timeout(300)
def test_certificate_issued_by_tls_alpn_01_alone(
    postroom_factory: Factory, dns_server: dns_server_module.DnsServerFactory, tmp_path: Path
) -> None:
    """No [listen] http, and pebble's http-01 port closed: only tls-alpn-01 on the server's
    HTTPS port can pass."""
    nsd = dns_server({DOMAIN: ZONE})
    server = postroom_factory(services=("smtp", "imaps", "https"), start=False)
    (closed_http,) = free_ports(1)
    with run_pebble(
        tmp_path / "pebble",
        http_port=closed_http,
        tls_port=server.ports["https"],
        dns=nsd.nameserver,
    ) as pebble:
        server.extra = acme_table(pebble.directory_url, pebble.ca_file)
        server.extra += 'challenge = "tls-alpn-01"\n'
        server.write_config()
        server.start()
        intermediate = x509.load_pem_x509_certificate(pebble.intermediate_pem())

        def issued() -> bool:
            server.check_alive()
            leaf, _, _ = handshake(server.host, server.ports["https"], HOSTNAME, None)
            return leaf.issuer == intermediate.subject

        wait_until(issued, ISSUE_TIMEOUT, "the pebble certificate on HTTPS", interval=0.2)
        root = pebble.issuing_root()
        for name in NAMES:
            verify_chain(server, "https", root, name)
        verify_chain(server, "imaps", root, HOSTNAME)
        leaf, _, _ = handshake(server.host, server.ports["https"], HOSTNAME, None)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == set(NAMES)
        assert acme_identifier(leaf) is None
        # Four names, four validations on the HTTPS port (http-01 had nowhere to go).
        assert pebble.log().count("set VALID by completed challenge") == len(NAMES)
        # Once the order is done no validation certificate is left: acme-tls/1 gets the new one.
        leaf, protocol, _ = handshake(server.host, server.ports["https"], HOSTNAME, ["acme-tls/1"])
        assert protocol is None and leaf.issuer == intermediate.subject
