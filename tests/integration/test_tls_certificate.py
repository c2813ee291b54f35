"""The generated self-signed certificate: a client that trusts the file verifies the server
under every name it is reached by on this machine, including after an upgrade from a version
whose certificate named fewer."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import HOSTNAME, Factory, Postroom

NAMES = (HOSTNAME, "localhost", "127.0.0.1", "::1")


def handshake(server: Postroom, name: str) -> None:
    """Implicit TLS to the submissions port, verifying the certificate as `name`."""
    context = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))
    with (
        socket.create_connection((server.host, server.submissions_port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=name) as tls,
    ):
        assert tls.recv(4).startswith(b"220")


def test_generated_certificate_verifies_under_every_local_name(postroom: Postroom) -> None:
    for name in NAMES:
        handshake(postroom, name)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(postroom, "elsewhere.example")


def old_certificate(server: Postroom) -> ec.EllipticCurvePrivateKey:
    """What postroom wrote before ::1 was named: hostname, localhost and 127.0.0.1 only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(HOSTNAME), x509.DNSName("localhost")]
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = server.data_dir / "tls"
    directory.mkdir(parents=True)
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


def test_older_narrower_certificate_is_made_again_with_the_same_key(
    postroom_factory: Factory,
) -> None:
    server = postroom_factory(start=False)
    key = old_certificate(server)
    server.start()
    for name in NAMES:
        handshake(server, name)
    cert = x509.load_pem_x509_certificate((server.data_dir / "tls" / "cert.pem").read_bytes())
    assert cert.public_key() == key.public_key()  # pinned keys (DANE 3 1 1) keep working
    server.wait_for_log(r"made the self-signed certificate .* again: it does not name ::1")
