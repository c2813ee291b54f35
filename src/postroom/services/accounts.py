"""Password handling for user accounts: argon2 hashes for PLAIN/LOGIN, SCRAM keys for SCRAM.

Passwords are SASLprep-normalised before hashing (RFC 4013), the same normalisation the SASL
mechanisms apply to what clients send, so both paths compare like with like.
"""

from __future__ import annotations

import base64
import hmac
import os

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import core, ffi

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
    fast = _verify_argon2id(password_hash, password)
    if fast is not None:
        return fast
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _verify_argon2id(password_hash: str, password: str) -> bool | None:
    """An argon2id check with no more threads than CPUs (None: not a hash this handles).

    The lanes (p=) are part of the hash, the threads that compute them are not: the library's
    own `verify` starts one per lane, which on a machine with fewer CPUs only adds switching
    (4 lanes on 2 CPUs: about 20% slower than 2 threads).
    """
    fields = password_hash.split("$")
    if len(fields) != 6 or fields[1] != "argon2id" or fields[2] != "v=19":
        return None
    try:
        params = extract_parameters(password_hash)
        salt = base64.b64decode(fields[4] + "=" * (-len(fields[4]) % 4), validate=True)
        expected = base64.b64decode(fields[5] + "=" * (-len(fields[5]) % 4), validate=True)
    except (InvalidHashError, ValueError):
        return None
    secret = password.encode()
    out = ffi.new("uint8_t[]", len(expected))
    context = ffi.new(
        "argon2_context *",
        {
            "out": out,
            "outlen": len(expected),
            "pwd": ffi.from_buffer(secret),
            "pwdlen": len(secret),
            "salt": ffi.from_buffer(salt),
            "saltlen": len(salt),
            "secret": ffi.NULL,
            "secretlen": 0,
            "ad": ffi.NULL,
            "adlen": 0,
            "t_cost": params.time_cost,
            "m_cost": params.memory_cost,
            "lanes": params.parallelism,
            "threads": max(1, min(params.parallelism, os.cpu_count() or 1)),
            "version": params.version,
            "allocate_cbk": ffi.NULL,
            "free_cbk": ffi.NULL,
            "flags": 0,  # argon2.h ARGON2_DEFAULT_FLAGS
        },
    )
    if core(context, Type.ID.value) != 0:  # argon2.h ARGON2_OK
        return None
    return hmac.compare_digest(bytes(ffi.buffer(out, len(expected))), expected)


def scram_credentials(text: str) -> ScramCredentials | None:
    try:
        return ScramCredentials.from_text(text)
    except ValueError:
        return None
