"""tls-alpn-01 (RFC 8737): the validation certificates the HTTPS listener presents while an
order is pending.

`AlpnChallenges.publish(name, key_authorization)` (on the order's worker thread) makes the
self-signed validation certificate for `name` and a TLS context that presents it and offers
only "acme-tls/1"; `attach(context)` sets the server context's SNI callback, which moves a
handshake whose SNI is a pending name onto that context. OpenSSL calls the servername
callback before it selects the ALPN protocol, so the selection is the challenge context's:
"acme-tls/1" when the client offered it. A name with no pending challenge keeps the server
context (its certificate, its ALPN), whatever the client offers. `withdraw` drops the
context once the order is done.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
import tempfile
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

ACME_TLS_ALPN = "acme-tls/1"  # RFC 8737 §6.2: the ALPN protocol ID
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 §6.1: id-pe-acmeIdentifier
VALIDITY = datetime.timedelta(days=7)  # the certificate lives in memory for one order


def acme_identifier_value(key_authorization: str) -> bytes:
    """RFC 8737 §3: the extension's value, the DER OCTET STRING (tag 4, length 32) holding
    SHA-256 of the key authorization."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    return bytes((0x04, len(digest))) + digest


def validation_certificate(name: str, key_authorization: str) -> tuple[bytes, bytes]:
    """RFC 8737 §3: a self-signed certificate (PEM) whose only SAN is `name`, with the
    critical acmeIdentifier extension; and its new P-256 key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER, acme_identifier_value(key_authorization)),
            critical=True,  # RFC 8737 §3: "MUST be marked critical"
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def challenge_context(certificate: bytes, key: bytes) -> ssl.SSLContext:
    """A server context presenting the validation certificate and negotiating only
    acme-tls/1 (RFC 8737 §4: TLS 1.2 or later)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_TLS_ALPN])
    # load_cert_chain reads files only: a private scratch file (0600), removed at once.
    fd, path = tempfile.mkstemp(prefix="postroom-alpn-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + certificate)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context


class AlpnChallenges:
    """The pending tls-alpn-01 challenges of this process's orders, by name (lower case)."""

    def __init__(self) -> None:
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def publish(self, name: str, key_authorization: str) -> None:
        name = name.lower()  # DNS names compare case-blind; the SNI is looked up lower-cased
        certificate, key = validation_certificate(name, key_authorization)
        context = challenge_context(certificate, key)
        with self._lock:
            self._contexts[name] = context

    def withdraw(self, name: str) -> None:
        with self._lock:
            self._contexts.pop(name.lower(), None)

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._contexts)

    def attach(self, context: ssl.SSLContext) -> None:
        """Answer tls-alpn-01 on every handshake through `context` (RFC 8737 §3: the SNI
        names the identifier being validated)."""
        context.sni_callback = self._servername

    def _servername(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> None:
        if server_name is None:
            return
        challenge = self._contexts.get(server_name.lower())  # a dict read: no lock in the loop
        if challenge is not None:
            connection.context = challenge
