"""TLS setup: server contexts from configured PEM files, or a self-signed pair made on first run
(and made again when it no longer fits: see `ensure_self_signed`)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from postroom.storage import private

log = logging.getLogger("postroom.tls")

VALIDITY = datetime.timedelta(days=3650)
RENEW_BEFORE = datetime.timedelta(days=30)


class TlsSetupError(Exception):
    """The certificate or key cannot be used; the message names the file and the fix."""


def self_signed_names(hostname: str) -> list[x509.GeneralName]:
    """What the generated certificate is valid for: the configured hostname and every name a
    client on this machine uses for it, so verifying clients need only trust the file."""
    names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    return list(dict.fromkeys(names))  # hostname may be localhost


def _renewal_reason(cert_path: Path, key_path: Path, hostname: str) -> str | None:
    """Why an existing generated pair must be made again (None: keep it)."""
    if not (cert_path.exists() and key_path.exists()):
        return "missing"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm, x509.ExtensionNotFound) as error:
        return f"unreadable ({error})"
    missing = [str(n.value) for n in self_signed_names(hostname) if n not in names]
    if missing:
        return f"it does not name {', '.join(missing)}"
    if cert.public_key() != key.public_key():
        return "the key does not belong to the certificate"
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC) + RENEW_BEFORE:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """The self-signed pair in `directory` (cert.pem, key.pem), made on first use and made
    again when it does not cover `hostname`, localhost, 127.0.0.1 and ::1 (an older version
    named fewer), is unreadable, or is about to expire. A readable key is kept."""
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    reason = _renewal_reason(cert_path, key_path, hostname)
    if reason is None:
        return cert_path, key_path
    private.make_dir(directory)
    key = _reusable_key(key_path)
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
        key_bytes = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_atomically(key_path, key_bytes)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(self_signed_names(hostname)), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    if reason != "missing":
        log.warning("made the self-signed certificate %s again: %s", cert_path, reason)
    return cert_path, key_path


def _reusable_key(key_path: Path) -> ec.EllipticCurvePrivateKey | None:
    """The existing key when it is one we make (P-256), so pinned public keys keep working."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a sibling (0600, as everything in data_dir) and rename it over `path`: a reader
    sees the old file or the new one."""
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)  # left by a crash, with whatever mode it had
    fd = private.open_file(temporary)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # RFC 8446 §4.6.1: one TLS 1.3 session ticket per handshake, as Postfix sends (OpenSSL's
    # default is two): a mail client resumes one connection at a time, and each ticket costs
    # an encryption and a record before the first answer.
    context.num_tickets = 1
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise TlsSetupError(
            f"{cert} / {key}: cannot load certificate and key ({error}); "
            "check [tls] cert and key point at readable PEM files that belong together"
        ) from None
    return context


def reload_certificate(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Load a new pair into `context`: every handshake after this uses it (connections already
    open keep theirs). The pair is tried on a scratch context first, so a bad pair raises
    TlsSetupError and leaves `context` serving the old one. OpenSSL keeps one certificate per
    key type: the new key must have the old one's type (ours are all P-256)."""
    server_context(cert, key)
    context.load_cert_chain(cert, key)


def describe(obj: ssl.SSLObject | None) -> str:
    """Postfix-style description for Received headers: "TLSv1.3 with cipher X (256/256 bits)"."""
    if obj is None:
        return ""
    cipher = obj.cipher()
    if cipher is None:
        return ""
    name, version, bits = cipher
    return f"{obj.version() or version} with cipher {name} ({bits}/{bits} bits)"
