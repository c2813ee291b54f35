"""Step results returned by the sans-I/O SASL server mechanisms, and the mechanism protocol.

A protocol handler (SMTP AUTH, IMAP AUTHENTICATE, POP3 AUTH) drives a mechanism and acts on
each step it returns:

* :class:`Challenge` — base64-encode ``data`` and send it; feed the client's decoded answer to
  ``respond()``.
* :class:`CheckPassword` — verify the password (and that ``authcid`` may act as ``authzid``),
  then call ``password_checked(ok)``.
* :class:`NeedScramCredentials` — look the user up, then call ``credentials_found(creds)``, with
  ``None`` for an unknown user, a user without SCRAM credentials, or a refused ``authzid``.
* :class:`Success` / :class:`Failure` — the exchange is over.

Identity fields are ``str``; ``authzid`` is ``""`` when the client asked for no separate
authorization identity (i.e. it wants to act as ``authcid``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "Challenge",
    "CheckPassword",
    "Failure",
    "FailureReason",
    "Mechanism",
    "NeedScramCredentials",
    "ScramCredentials",
    "Step",
    "Success",
]

FailureReason = Literal["malformed", "credentials"]


@dataclass(frozen=True)
class Challenge:
    """Server challenge; the caller base64-encodes ``data`` before sending it."""

    data: bytes


@dataclass(frozen=True)
class CheckPassword:
    """Ask the caller to verify a password.

    ``authcid`` and ``password`` have been SASLprep'd (RFC 4013, unassigned code points allowed),
    so stored password hashes must be computed over ``saslprep(pw, allow_unassigned=True)``.
    """

    authcid: str
    authzid: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class NeedScramCredentials:
    """Ask the caller for the stored SCRAM credentials of ``authcid`` (already SASLprep'd)."""

    authcid: str
    authzid: str


@dataclass(frozen=True)
class Success:
    """Authentication succeeded."""

    authcid: str
    authzid: str


@dataclass(frozen=True)
class Failure:
    """Authentication failed.

    ``"malformed"``: the client broke the protocol (SMTP 501).  ``"credentials"``: wrong user
    name or password (SMTP 535).
    """

    reason: FailureReason


Step = Challenge | CheckPassword | NeedScramCredentials | Success | Failure

_SCRAM_TEXT_PREFIX = "SCRAM-SHA-256"
_SHA256_LEN = 32


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("invalid base64") from exc


@dataclass(frozen=True)
class ScramCredentials:
    """Stored SCRAM-SHA-256 verifier for one user (RFC 5802 §3: SaltedPassword never stored).

    Serialised by :meth:`to_text` as ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``
    (base64 fields), the same layout PostgreSQL uses.
    """

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.salt:
            raise ValueError("salt must not be empty")
        if self.iterations < 1:
            raise ValueError("iterations must be positive")
        if len(self.stored_key) != _SHA256_LEN or len(self.server_key) != _SHA256_LEN:
            raise ValueError("StoredKey and ServerKey must be 32 bytes (SHA-256)")

    def to_text(self) -> str:
        """Serialise into a single text value suitable for one database column."""

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode("ascii")

        return (
            f"{_SCRAM_TEXT_PREFIX}${self.iterations}:{b64(self.salt)}"
            f"${b64(self.stored_key)}:{b64(self.server_key)}"
        )

    @classmethod
    def from_text(cls, text: str) -> ScramCredentials:
        """Parse the output of :meth:`to_text`; raise :class:`ValueError` if malformed."""
        parts = text.split("$")
        if len(parts) != 3 or parts[0] != _SCRAM_TEXT_PREFIX:
            raise ValueError("not a SCRAM-SHA-256 credential string")
        iter_salt = parts[1].split(":")
        keys = parts[2].split(":")
        if len(iter_salt) != 2 or len(keys) != 2:
            raise ValueError("malformed SCRAM-SHA-256 credential string")
        iter_text, salt_text = iter_salt
        if not (iter_text.isascii() and iter_text.isdigit()) or len(iter_text) > 10:
            raise ValueError("malformed iteration count")
        return cls(
            salt=_b64decode(salt_text),
            iterations=int(iter_text),
            stored_key=_b64decode(keys[0]),
            server_key=_b64decode(keys[1]),
        )


class Mechanism(Protocol):
    """A server-side SASL mechanism instance: one per authentication exchange.

    Methods never raise on client input; a call that does not fit the current state of the
    exchange returns ``Failure("malformed")``, and once a :class:`Success` or :class:`Failure`
    has been returned every further call returns ``Failure("malformed")``.
    """

    name: str

    def start(self, initial_response: bytes | None) -> Step:
        """Begin; ``initial_response`` is decoded, ``None`` if absent, ``b""`` for SMTP "="."""
        ...

    def respond(self, data: bytes) -> Step:
        """Feed the client's (base64-decoded) answer to the last :class:`Challenge`."""
        ...

    def password_checked(self, ok: bool) -> Step:
        """Report the caller's verdict after :class:`CheckPassword`."""
        ...

    def credentials_found(self, creds: ScramCredentials | None) -> Step:
        """Report the caller's lookup result after :class:`NeedScramCredentials`."""
        ...
