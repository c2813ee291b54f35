"""TLS setup: server contexts from configured PEM files, or a self-signed pair made on first run."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class TlsSetupError(Exception):
    """The certificate or key cannot be used; the message names the file and the fix."""


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """Create (once) a self-signed certificate for `hostname` in `directory`."""
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost")]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


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


def describe(obj: ssl.SSLObject | None) -> str:
    """Postfix-style description for Received headers: "TLSv1.3 with cipher X (256/256 bits)"."""
    if obj is None:
        return ""
    cipher = obj.cipher()
    if cipher is None:
        return ""
    name, version, bits = cipher
    return f"{obj.version() or version} with cipher {name} ({bits}/{bits} bits)"
