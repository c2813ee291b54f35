"""DKIM key pairs: generating them, the forms dkimpy signs with, and the DNS record that
publishes the public half (RFC 6376 §3.6.1; ed25519 per RFC 8463).

A `SigningKey` carries the private key in the form dkimpy takes: for rsa a PEM (PKCS#8), for
ed25519 the base64 of the 32-octet seed (RFC 8463 §3: the public key is the raw 32 octets too).
Private keys are never put in a repr or a log line.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

Algorithm = Literal["ed25519", "rsa"]
ALGORITHMS: tuple[Algorithm, ...] = ("ed25519", "rsa")
RSA_BITS = 2048
# The a= tag each key type signs with (RFC 6376 §3.3, RFC 8463 §3).
SIGNATURE_ALGORITHM: dict[Algorithm, str] = {
    "ed25519": "ed25519-sha256",
    "rsa": "rsa-sha256",
}
TXT_PART = 255  # octets per character-string in a TXT record (RFC 1035 §3.3)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A freshly made key: `private` as dkimpy takes it, `public` as the p= tag value."""

    algorithm: Algorithm
    private: bytes = field(repr=False)
    public: str


@dataclass(frozen=True, slots=True)
class SigningKey:
    """What a signer needs: d= (the domain), s= (the selector), the key."""

    domain: str
    selector: str
    algorithm: Algorithm
    private: bytes = field(repr=False)


def generate(algorithm: Algorithm) -> KeyPair:
    if algorithm == "ed25519":
        ed_key = ed25519.Ed25519PrivateKey.generate()
        seed = ed_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        raw_public = ed_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return KeyPair("ed25519", base64.b64encode(seed), base64.b64encode(raw_public).decode())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # p= for rsa: the base64 of the DER SubjectPublicKeyInfo (RFC 6376 §3.6.1).
    der = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair("rsa", pem, base64.b64encode(der).decode())


def record_text(algorithm: Algorithm, public: str) -> str:
    """The TXT record's text at SELECTOR._domainkey.DOMAIN (RFC 6376 §3.6.1)."""
    return f"v=DKIM1; k={algorithm}; p={public}"


def txt_parts(text: str) -> list[str]:
    """A TXT text cut into character-strings of at most 255 octets (ASCII here)."""
    return [text[i : i + TXT_PART] for i in range(0, len(text), TXT_PART)] or [""]


def public_of(algorithm: Algorithm, private: bytes) -> str:
    """The p= value (RFC 6376 §3.6.1; RFC 8463 §3 for ed25519) of the public half of a private
    key in the form `generate` makes; ValueError when it is not such a key."""
    if algorithm == "ed25519":
        seed = base64.b64decode(private, validate=True)
        ed_key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        raw = ed_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()
    loaded = serialization.load_pem_private_key(private, password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    der = loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()
