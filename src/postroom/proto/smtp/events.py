"""Events the SMTP server engine hands to its driver.

Events marked "decision" pause the engine until the driver answers through the matching
engine method (`accept`/`reject`, `answered`, `tls_started`).
The rest are informational: the engine has already replied.
"""

from __future__ import annotations

from dataclasses import dataclass

from postroom.proto.sasl.exchange import Need
from postroom.proto.smtp.params import MailParams, RcptParams


class NeedData:
    """Sentinel: the engine needs more input before it can go on."""


class Paused:
    """Sentinel: the engine waits for the driver's decision on the last event."""


NEED_DATA = NeedData()
PAUSED = Paused()


@dataclass(frozen=True, slots=True)
class Hello:
    """HELO/EHLO accepted (informational). A new EHLO also aborts any open transaction."""

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class MailFrom:
    """Decision: accept (250) or reject the reverse-path."""

    address: str
    params: MailParams


@dataclass(frozen=True, slots=True)
class RcptTo:
    """Decision: accept (250) or reject the forward-path."""

    address: str
    params: RcptParams


@dataclass(frozen=True, slots=True)
class MessageData:
    """A piece of message content, already dot-unstuffed (informational)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """Decision: the whole content arrived; accept with a queue ID, or reject."""

    size: int


@dataclass(frozen=True, slots=True)
class TransactionAborted:
    """The open transaction ended without a message (RSET, EHLO, STARTTLS, errors, QUIT)."""


@dataclass(frozen=True, slots=True)
class Verify:
    """Decision: ask the credential store (a password check for PLAIN/LOGIN, the SCRAM
    credentials for SCRAM-SHA-256); answer with `answered`."""

    mechanism: str
    need: Need


@dataclass(frozen=True, slots=True)
class Authenticated:
    """AUTH succeeded (informational); the 235 reply is already queued."""

    identity: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """AUTH failed on wrong credentials (informational, for the log); 535 is already queued."""

    mechanism: str
    authcid: str


@dataclass(frozen=True, slots=True)
class StartTls:
    """Decision: upgrade the connection now (after sending pending output), then `tls_started`."""


@dataclass(frozen=True, slots=True)
class Etrn:
    """Decision: start delivery of the mail queued for a node (RFC 1985), `accept` (250) or
    `reject` (458: too many requests, or the queue could not be touched)."""

    node: str


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Send the pending output and close the connection."""


Event = (
    Hello
    | MailFrom
    | RcptTo
    | MessageData
    | MessageComplete
    | TransactionAborted
    | Verify
    | Authenticated
    | AuthFailed
    | StartTls
    | Etrn
    | CloseConnection
)
