"""Password handling for user accounts: argon2 hashes for PLAIN/LOGIN, SCRAM keys for SCRAM.

Passwords are SASLprep-normalised before hashing (RFC 4013), the same normalisation the SASL
mechanisms apply to what clients send, so both paths compare like with like.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from postroom.proto.sasl import ScramCredentials, derive_scram_credentials
from postroom.proto.sasl.saslprep import SASLprepError, saslprep

_hasher = PasswordHasher()


class PasswordError(ValueError):
    """The password cannot be used (empty, or characters SASLprep forbids)."""


def normalize_password(password: str) -> str:
    try:
        prepared = saslprep(password, allow_unassigned=True)
    except SASLprepError as error:
        raise PasswordError(f"password not usable: {error}") from None
    if not prepared:
        raise PasswordError("password must not be empty")
    return prepared


def hash_password(password: str) -> tuple[str, str]:
    """Returns (argon2 hash, SCRAM-SHA-256 credentials as text)."""
    prepared = normalize_password(password)
    return _hasher.hash(prepared), derive_scram_credentials(prepared).to_text()


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def scram_credentials(text: str) -> ScramCredentials | None:
    try:
        return ScramCredentials.from_text(text)
    except ValueError:
        return None
