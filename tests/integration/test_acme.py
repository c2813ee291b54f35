"""ACME (RFC 8555) against a real pebble: a real `postroom serve` orders its certificate,
pebble validates http-01 on the server's HTTP listener (names resolved by a real nsd), and
the certificate is then served on IMAPS, SMTPS and HTTPS; `acme renew --force` swaps a new one
in without a restart while an IMAP session stays open; an unreachable CA leaves the
certificate in use and says why."""

from __future__ import annotations

import contextlib
import http.client
import imaplib
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from . import dns_server as dns_server_module
from .conftest import ALICE, DOMAIN, HOSTNAME, Factory, Postroom, free_ports, wait_until
from .pebble import Pebble, run_pebble

dns_server = dns_server_module.dns_server

SERVICES = ("smtp", "submissions", "imaps", "http", "https")
NAMES = (HOSTNAME, f"mta-sts.{DOMAIN}", f"autoconfig.{DOMAIN}", f"autodiscover.{DOMAIN}")
ZONE = f"""$ORIGIN {DOMAIN}.
$TTL 60
@ IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 60
@ IN NS ns.{DOMAIN}.
ns IN A 127.0.0.1
mx IN A 127.0.0.1
mta-sts IN A 127.0.0.1
autoconfig IN A 127.0.0.1
autodiscover IN A 127.0.0.1
"""
ISSUE_TIMEOUT = 90.0
SWAP_TIMEOUT = 30.0


def acme_table(directory: str, ca_file: Path) -> str:
    return (
        f'[acme]\nenabled = true\ndirectory = "{directory}"\n'
        f'email = "postmaster@{DOMAIN}"\nca_file = "{ca_file}"\n'
    )


def served_leaf(server: Postroom, service: str) -> x509.Certificate:
    """The certificate a new TLS connection to `service` is given (not verified)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((server.host, server.ports[service]), timeout=10) as sock,
        context.wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def verify_chain(server: Postroom, service: str, root: Path, name: str) -> None:
    """A TLS handshake to `service` that verifies the chain up to pebble's root, for `name`."""
    context = ssl.create_default_context(cafile=str(root))
    with (
        socket.create_connection((server.host, server.ports[service]), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=name),
    ):
        pass


def serials(server: Postroom) -> set[int]:
    return {served_leaf(server, s).serial_number for s in ("imaps", "submissions", "https")}


@contextlib.contextmanager
def acme_world(
    factory: Factory,
    dns_server: dns_server_module.DnsServerFactory,
    root: Path,
    zone: str,
    validity: int | None = None,
) -> Iterator[tuple[Postroom, Pebble]]:
    """nsd serving `zone`, pebble validating on the server's HTTP port, and the server
    (started) ordering from it."""
    nsd = dns_server({DOMAIN: zone})
    server = factory(services=SERVICES, start=False)
    with run_pebble(
        root / "pebble", http_port=server.ports["http"], dns=nsd.nameserver, validity=validity
    ) as pebble:
        server.extra = acme_table(pebble.directory_url, pebble.ca_file)
        server.write_config()
        server.start()
        yield server, pebble


@pytest.fixture
def world(
    postroom_factory: Factory, dns_server: dns_server_module.DnsServerFactory, tmp_path: Path
) -> Iterator[tuple[Postroom, Pebble]]:
    with acme_world(postroom_factory, dns_server, tmp_path, ZONE) as both:
        yield both


@pytest.mark.timeout(300)
def test_certificate_issued_served_renewed_and_swapped(world: tuple[Postroom, Pebble]) -> None:
    server, pebble = world
    intermediate = x509.load_pem_x509_certificate(pebble.intermediate_pem())

    def issued() -> bool:
        server.check_alive()
        return served_leaf(server, "imaps").issuer == intermediate.subject

    wait_until(issued, ISSUE_TIMEOUT, "the pebble certificate on IMAPS", interval=0.2)
    root = pebble.issuing_root()
    first = served_leaf(server, "imaps")
    assert serials(server) == {first.serial_number}  # IMAPS, SMTPS and HTTPS alike
    san = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == set(NAMES)
    for service in ("imaps", "submissions", "https"):
        verify_chain(server, service, root, HOSTNAME)
    verify_chain(server, "https", root, f"mta-sts.{DOMAIN}")

    # The files: data_dir/acme 0700, every file 0600.
    acme_dir = server.data_dir / "acme"
    assert stat.S_IMODE(acme_dir.stat().st_mode) == 0o700
    for name in ("account.key", "cert.pem", "key.pem", "state.json"):
        assert stat.S_IMODE((acme_dir / name).stat().st_mode) == 0o600, name

    status = server.run_cli("acme", "status").stdout
    assert f"serial: {first.serial_number:x}" in status
    assert intermediate.subject.rfc4514_string() in status
    assert "last error: none" in status
    assert server.run_cli("acme", "renew").stdout.startswith("the certificate is good until")

    # An IMAP session open across the swap.
    imap = imaplib.IMAP4_SSL(
        server.host, server.ports["imaps"], ssl_context=_unverified(), timeout=10
    )
    imap.login(ALICE, server.passwords[ALICE])

    renewed = server.run_cli("acme", "renew", "--force", timeout=120).stdout
    assert "installed a certificate" in renewed, renewed
    wait_until(
        lambda: served_leaf(server, "imaps").serial_number != first.serial_number,
        SWAP_TIMEOUT,
        "the renewed certificate on IMAPS",
        interval=0.2,
    )
    second = served_leaf(server, "imaps")
    assert f"serial {second.serial_number:x}" in renewed
    assert serials(server) == {second.serial_number}
    verify_chain(server, "https", root, f"autoconfig.{DOMAIN}")
    assert imap.noop()[0] == "OK"
    assert imap.select("INBOX")[0] == "OK"
    assert imap.sock.getpeercert(binary_form=True) == first.public_bytes(Encoding.DER)
    imap.logout()
    server.wait_for_log(r"acme: serving the new certificate serial=" + f"{second.serial_number:x}")

    # CA unreachable: a one-line error, the certificate in use kept.
    pebble.stop()
    failed = server.run_cli("acme", "renew", "--force", check=False)
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1, failed.stderr
    assert "cannot reach the ACME server" in failed.stderr
    assert "the certificate in use is kept" in failed.stderr
    assert serials(server) == {second.serial_number}
    assert "cannot reach the ACME server" in server.run_cli("acme", "status").stdout

    # A restart serves the installed certificate from its first connection.
    server.stop()
    server.start()
    assert served_leaf(server, "imaps").serial_number == second.serial_number
    # …and remembers the failed order's backoff.
    server.wait_for_log(r"acme: last order failed \(cannot reach the ACME server.*next attempt at")


def test_server_renews_by_itself_30_days_before_expiry(
    postroom_factory: Factory, dns_server: dns_server_module.DnsServerFactory, tmp_path: Path
) -> None:
    """Pebble issues certificates valid for 30 days and 10 seconds: the server serves the
    first, then, 10 seconds on, orders and swaps in the next by itself."""
    validity = 30 * 86400 + 10
    with acme_world(postroom_factory, dns_server, tmp_path, ZONE, validity) as (server, pebble):
        intermediate = x509.load_pem_x509_certificate(pebble.intermediate_pem())
        first = wait_until(
            lambda: _pebble_leaf(server, intermediate), ISSUE_TIMEOUT, "the first certificate"
        )
        second = wait_until(
            lambda: (
                (leaf := _pebble_leaf(server, intermediate))
                and leaf.serial_number != first.serial_number
                and leaf
            ),
            ISSUE_TIMEOUT,
            "the certificate renewed by the server",
            interval=0.2,
        )
        assert second.not_valid_before_utc >= first.not_valid_before_utc
        server.wait_for_log(r"acme: ordering a certificate for .* \(it expires on ")
        server.wait_for_log(f"acme: serving the new certificate serial={second.serial_number:x}")


def _pebble_leaf(server: Postroom, intermediate: x509.Certificate) -> x509.Certificate | None:
    server.check_alive()
    leaf = served_leaf(server, "imaps")
    return leaf if leaf.issuer == intermediate.subject else None


def test_failed_validation_names_the_name_and_keeps_the_self_signed_certificate(
    postroom_factory: Factory, dns_server: dns_server_module.DnsServerFactory, tmp_path: Path
) -> None:
    """autoconfig.example.test does not resolve: pebble cannot validate it, the order fails
    naming it, and the self-signed certificate goes on serving."""
    zone = "\n".join(line for line in ZONE.splitlines() if not line.startswith("autoconfig"))
    with acme_world(postroom_factory, dns_server, tmp_path, zone + "\n") as (server, _):
        line = server.wait_for_log(r"acme: certificate order failed \(1 in a row\): (.*)", 60)
        assert f"the authorization for autoconfig.{DOMAIN} became invalid" in line[1]
        verify_self_signed(server)
        assert server.run_cli("acme", "status").stdout.count("certificate: none") == 1


def verify_self_signed(server: Postroom) -> None:
    with (
        socket.create_connection((server.host, server.ports["imaps"]), timeout=10) as sock,
        server.tls_context().wrap_socket(sock, server_hostname=HOSTNAME),
    ):
        pass


def test_unreachable_ca_keeps_the_self_signed_certificate(postroom_factory: Factory) -> None:
    (closed,) = free_ports(1)
    server = postroom_factory(services=SERVICES, start=False)
    ca_file = server.root / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    server.extra = acme_table(f"https://127.0.0.1:{closed}/dir", ca_file)
    server.write_config()
    # No server answering http-01 yet: said at once, and no failed order counted.
    early = server.run_cli("acme", "renew", check=False)
    assert early.returncode == 1
    assert "does not answer http-01 challenges" in early.stderr
    assert "is postroom serve running" in early.stderr
    assert "last error: none" in server.run_cli("acme", "status").stdout
    server.start()
    line = server.wait_for_log(r"acme: certificate order failed \(1 in a row\): (.*)")
    assert "cannot reach the ACME server" in line[1]
    assert line[1].endswith("next attempt in 1h")
    verify_self_signed(server)  # still the self-signed certificate
    status = server.run_cli("acme", "status").stdout
    assert "certificate: none" in status
    assert "after the last failure" in status
    assert "last error: cannot reach the ACME server" in status


def test_challenge_route_answers_only_published_tokens(postroom_factory: Factory) -> None:
    server = postroom_factory(services=("smtp", "http"))
    board = server.data_dir / "acme" / "challenges"
    board.mkdir(parents=True)
    (board / "tok_en-1").write_text("tok_en-1.thumb", encoding="ascii")

    def get(path: str) -> tuple[int, bytes, str | None]:
        connection = http.client.HTTPConnection(server.host, server.ports["http"], timeout=10)
        connection.request("GET", path, headers={"Host": f"mta-sts.{DOMAIN}"})
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("content-type")

    assert get("/.well-known/acme-challenge/tok_en-1") == (
        200,
        b"tok_en-1.thumb",
        "application/octet-stream",
    )
    for path in ("missing", "..%2f..%2fpostroom.pid", "a.b", "%2e%2e"):
        assert get(f"/.well-known/acme-challenge/{path}")[0] == 404, path
    off = server.run_cli("acme", "renew", "--force", check=False)
    assert off.returncode == 1
    assert (
        off.stderr
        == f"postroom: error: ACME is off; set [acme] enabled = true in {server.config_path}\n"
    )


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
