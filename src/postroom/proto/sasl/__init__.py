"""Sans-I/O SASL server mechanisms (PLAIN, LOGIN, SCRAM-SHA-256) for SMTP, IMAP and POP3 AUTH.

Use :func:`new_mechanism` to get a fresh mechanism for one exchange and drive it with the
step types from :mod:`postroom.proto.sasl.steps`.
"""

from __future__ import annotations

from postroom.proto.sasl.login import LoginMechanism
from postroom.proto.sasl.plain import PlainMechanism
from postroom.proto.sasl.saslprep import SASLprepError, saslprep
from postroom.proto.sasl.scram import (
    DEFAULT_ITERATIONS,
    ScramSha256Mechanism,
    derive_scram_credentials,
)
from postroom.proto.sasl.steps import (
    Challenge,
    CheckPassword,
    Failure,
    FailureReason,
    Mechanism,
    NeedScramCredentials,
    ScramCredentials,
    Step,
    Success,
)

__all__ = [
    "DEFAULT_ITERATIONS",
    "MECHANISMS",
    "Challenge",
    "CheckPassword",
    "Failure",
    "FailureReason",
    "LoginMechanism",
    "Mechanism",
    "NeedScramCredentials",
    "PlainMechanism",
    "SASLprepError",
    "ScramCredentials",
    "ScramSha256Mechanism",
    "Step",
    "Success",
    "derive_scram_credentials",
    "new_mechanism",
    "saslprep",
]

# Names accepted by new_mechanism(), in the canonical (upper-case) spelling.
MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN", "SCRAM-SHA-256")


def new_mechanism(name: str) -> Mechanism | None:
    """Return a fresh server mechanism for ``name`` (case-insensitive), or ``None`` if unknown."""
    # RFC 4422 §3.1: mechanism names are ASCII upper-case letters, digits, "-" and "_"; the
    # ASCII check keeps str.upper() from mapping e.g. "ı" (dotless i) onto "I".
    if not name.isascii():
        return None
    upper = name.upper()
    if upper == PlainMechanism.name:
        return PlainMechanism()
    if upper == LoginMechanism.name:
        return LoginMechanism()
    if upper == ScramSha256Mechanism.name:
        return ScramSha256Mechanism()
    return None
