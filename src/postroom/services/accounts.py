"""User accounts: argon2 hashes for PLAIN/LOGIN and SCRAM keys for SCRAM, and the account
operations the CLI (`postroom user ...`) and the web admin share.

Passwords are SASLprep-normalised before hashing (RFC 4013), the same normalisation the SASL
mechanisms apply to what clients send, so both paths compare like with like. Hashing is the
caller's, before the transaction (argon2 takes a fifth of a second: never on the writer).
A changed password, and a deleted user, end the user's web sessions. Aliases (`postroom
alias ...`, `/admin/aliases`) are checked by `alias_request` before their transaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Sequence

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import core, ffi

from postroom.proto.sasl import ScramCredentials, derive_scram_credentials
from postroom.proto.sasl.saslprep import SASLprepError, saslprep
from postroom.proto.smtp.params import validate_mailbox
from postroom.proto.smtp.replies import SmtpError
from postroom.storage.api import Tx
from postroom.storage.records import StoreError, UserRecord, UserSummary, normalize_address

_hasher = PasswordHasher()


class AccountError(ValueError):
    """A request about accounts that cannot be done as given; the message is for humans."""


class PasswordError(AccountError):
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


Hashed = tuple[str, str]  # what hash_password returns: (argon2 hash, SCRAM credentials)


def new_address(address: str, domains: tuple[str, ...]) -> str:
    """`address` normalised, when it can be a new user's: a mailbox (RFC 5321 §4.1.2) at one
    of the local `domains`."""
    _mailbox(address)
    domain = address.rpartition("@")[2].lower()
    if domain not in (d.lower() for d in domains):
        raise AccountError(
            f"{address}: {domain} is not a local domain; add it to 'domains' in the config file"
        )
    return normalize_address(address)


def add_user(tx: Tx, address: str, hashed: Hashed, *, admin: bool = False) -> int:
    """A new user (StoreError when it exists) with the default mailboxes."""
    return tx.accounts.add_user(address, hashed[0], hashed[1], admin)


def _user(tx: Tx, address: str) -> UserRecord:
    user = tx.accounts.get_user(address)
    if user is None:
        raise StoreError(f"no user {address}")
    return user


def set_password(tx: Tx, address: str, hashed: Hashed, keep_session: bytes | None = None) -> None:
    """A new password; every web session of the user but `keep_session` ends."""
    user = _user(tx, address)
    tx.accounts.set_password(address, *hashed)
    tx.web.delete_sessions(user.id, keep_session)


def set_admin(tx: Tx, address: str, admin: bool) -> None:
    tx.accounts.set_admin(address, admin)


def delete_user(tx: Tx, address: str) -> int:
    """Remove the user with all of their mail, sessions and tokens; messages removed."""
    return tx.accounts.delete_user(address)


def users(tx: Tx) -> list[UserSummary]:
    return tx.accounts.list_users()


def aliases_of(tx: Tx, address: str) -> list[str]:
    """The aliases that deliver to `address` (directly: one of their targets is it)."""
    address = normalize_address(address)
    return [alias for alias, targets in tx.accounts.list_aliases().items() if address in targets]


def alias_request(
    address: str, targets: Sequence[str], domains: tuple[str, ...]
) -> tuple[str, list[str]]:
    """An alias and its targets, normalised, when they can be added: the alias a mailbox at a
    local domain, or "@domain" (a catch-all for it); each target a mailbox (RFC 5321 §4.1.2),
    local or remote; at least one."""
    address = address.strip()
    if not address.startswith("@"):
        _mailbox(address)
    domain = address.rpartition("@")[2].lower()
    if not domain or domain not in (d.lower() for d in domains):
        raise AccountError(
            f"{address}: {domain} is not a local domain; add it to 'domains' in the config file"
        )
    wanted = [_mailbox(target.strip()) for target in targets if target.strip()]
    if not wanted:
        raise AccountError(f"{address}: give at least one target address")
    return normalize_address(address), [normalize_address(t) for t in wanted]


def _mailbox(address: str) -> str:
    try:
        validate_mailbox(address, utf8=True)
    except SmtpError:
        raise AccountError(f"{address!r} is not a valid mail address (user@domain)") from None
    return address


def add_alias(tx: Tx, address: str, targets: Sequence[str]) -> None:
    """Deliver `address` to `targets` too (as `alias_request` returned them); a target it
    already has is kept once."""
    tx.accounts.add_alias(address, targets)


def delete_alias(tx: Tx, address: str) -> None:
    """Remove the alias with all of its targets; StoreError when there is none."""
    tx.accounts.delete_alias(address)


def aliases(tx: Tx) -> dict[str, list[str]]:
    """Every alias and its targets, sorted."""
    return tx.accounts.list_aliases()


def secret_hash(secret: str) -> bytes:
    """What the store keeps of a session ID or token: its SHA-256 (the secret has 256 random
    bits, so a slow hash would add nothing)."""
    return hashlib.sha256(secret.encode("ascii", "replace")).digest()


def new_token(tx: Tx, address: str, name: str) -> str:
    """A new API bearer token for the user, shown once: only its hash is kept."""
    user = _user(tx, address)
    token = "pr_" + secrets.token_urlsafe(32)
    tx.web.add_token(secret_hash(token), user.id, name, time.time())
    return token
