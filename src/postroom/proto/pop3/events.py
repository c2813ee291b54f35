"""Events the POP3 server engine hands to its driver.

Every event but `CloseConnection` and `AuthFailed` is a decision: the engine pauses until the
driver answers through the matching engine method (named in each docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

from postroom.proto.sasl.exchange import Need


class NeedData:
    """Sentinel: the engine needs more input before it can go on."""


class Paused:
    """Sentinel: the engine waits for the driver's decision on the last event."""


NEED_DATA = NeedData()
PAUSED = Paused()


@dataclass(frozen=True, slots=True)
class MaildropEntry:
    """One message of the maildrop as the engine sees it: a key for the driver, its size in
    octets (exactly what RETR sends before stuffing) and its RFC 1939 §7 unique-id."""

    key: int
    size: int
    unique_id: str


@dataclass(frozen=True, slots=True)
class Verify:
    """Decision: ask the credential store (a password check for USER/PASS and SASL PLAIN/LOGIN,
    the SCRAM credentials for SCRAM-SHA-256); answer `answered`."""

    mechanism: str  # "USER" for USER/PASS
    need: Need


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """A login failed on wrong credentials (informational, for the log); -ERR [AUTH] is
    already queued."""

    mechanism: str
    authcid: str


@dataclass(frozen=True, slots=True)
class OpenMaildrop:
    """Decision: the user is authenticated; lock and list their maildrop, then answer
    `maildrop_opened(entries)` or `maildrop_refused(in_use)` (RFC 1939 §4)."""

    identity: str


@dataclass(frozen=True, slots=True)
class FetchMessage:
    """Decision: read a message for RETR/TOP; answer `message_fetched` or `fetch_failed`."""

    key: int


@dataclass(frozen=True, slots=True)
class CommitDeletions:
    """Decision: the UPDATE state (RFC 1939 §6): remove these messages for good, then answer
    `deletions_committed(ok)`."""

    keys: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StartTls:
    """Decision: upgrade the connection now (after sending pending output), then `tls_started`."""


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Send the pending output and close the connection."""


Event = (
    Verify | AuthFailed | OpenMaildrop | FetchMessage | CommitDeletions | StartTls | CloseConnection
)
