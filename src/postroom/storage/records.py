"""What the store hands back: typed records and the errors it raises, whatever the backend.

Callers read these and never a row: a backend turns its rows into them. Flags travel as one
canonical text (`join_flags`) in the store and as tuples in the program.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from postroom.model.queue import QueuedMessage
from postroom.proto.imap.selected import MessageState

SEEN = "\\Seen"
DELETED = "\\Deleted"
INBOX = "INBOX"
JUNK = "Junk"  # where mail the inbound checks judged junk is delivered
TRASH = "Trash"  # mail moved here out of Junk teaches the junk filter nothing
ARCHIVE = "Archive"  # mail filed here is ham to the junk filter

# RFC 6154 special-use mailboxes every user gets, besides INBOX.
DEFAULT_MAILBOXES: tuple[tuple[str, str], ...] = (
    (INBOX, ""),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    (TRASH, "\\Trash"),
    (JUNK, "\\Junk"),
    (ARCHIVE, "\\Archive"),
)


class StoreError(Exception):
    """A request the store refuses (duplicate user, unknown user, ...); message is for humans."""


class StorageFailure(Exception):
    """The store could not read or write: a full disk, an I/O error, a file that is not what
    it should be. The server's trouble, never the client's: a temporary failure to answer
    (SMTP 451/452, IMAP NO, POP3 -ERR [SYS/TEMP]) and one log line, never a traceback. The
    message names the path when there is one."""

    def __init__(self, text: str, *, full: bool = False) -> None:
        super().__init__(text)
        self.full = full  # out of space (ENOSPC, EDQUOT, SQLITE_FULL): RFC 3463 X.3.1


def os_failure(error: OSError, path: object = None) -> StorageFailure:
    """The `StorageFailure` an OSError from the file system is; `path` names the file when
    the error does not (a failed write)."""
    text = f"{path}: {error.strerror}" if error.filename is None and path else str(error)
    return StorageFailure(text, full=error.errno in (errno.ENOSPC, errno.EDQUOT))


class MailboxError(StoreError):
    """A mailbox operation refused; `code` is the RFC 5530 response code (ALREADYEXISTS, ...)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def normalize_address(address: str) -> str:
    """Addresses are compared case-insensitively, as Postfix and Dovecot do in practice."""
    return address.strip().lower()


def split_flags(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


def join_flags(flags: Iterable[str]) -> str:
    """Canonical form: system flags first, then keywords, each sorted, no duplicates."""
    unique = set(flags)
    return " ".join(sorted(unique, key=lambda f: (not f.startswith("\\"), f.lower())))


# --- accounts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    address: str
    password_hash: str
    scram: str
    admin: bool = False  # may use /admin/ and the admin API


@dataclass(frozen=True, slots=True)
class UserSummary:
    """One account as `user list` and the admin's user page show it."""

    address: str
    created: float
    admin: bool


@dataclass(frozen=True, slots=True)
class WebSession:
    """A logged-in browser session (web/auth.py), with the user it belongs to."""

    user: UserRecord
    csrf: str
    created: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where mail for one RCPT address goes after alias expansion."""

    local_users: tuple[tuple[str, int], ...]  # (address, user id)
    remote: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.local_users and not self.remote


# --- mailboxes and messages --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    id: int
    name: str
    special_use: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    recent_uid: int


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    messages: int
    unseen: int
    size: int


@dataclass(frozen=True, slots=True)
class StatusCounts:
    messages: int
    unseen: int
    size: int
    recent: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a mailbox with what an export needs (its content is read apart)."""

    uid: int
    flags: str
    internal_date: float
    size: int
    blob_id: int
    prefix: bytes


class FetchRow(NamedTuple):
    """A message as FETCH reads it (a tuple: FETCH 1:* makes one per message)."""

    uid: int
    modseq: int
    internal_date: float
    size: int
    summary: bytes | None  # packed ENVELOPE/BODYSTRUCTURE data, when asked for
    content: bytes | None  # the whole message (prefix + blob), when asked for


@dataclass(frozen=True, slots=True)
class ListedMessage:
    """One message of a mailbox as a listing shows it."""

    uid: int
    size: int  # octets of prefix + blob, as sent to a client
    blob_id: int
    prefix_size: int


@dataclass(frozen=True, slots=True)
class MailboxListing:
    """A snapshot of one mailbox: its identity, UIDVALIDITY and messages in UID order."""

    mailbox_id: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: tuple[ListedMessage, ...]


@dataclass(frozen=True, slots=True)
class MailboxNews:
    """What changed in a mailbox since a MODSEQ a session knows (RFC 7162 §3.1, §3.2.10)."""

    changed: list[MessageState]  # changed or added
    vanished: list[int]
    highestmodseq: int
    recent_from: int | None  # first UID claimed as \\Recent for the added ones, if claimed


@dataclass(frozen=True, slots=True)
class StoreResult:
    changed: list[MessageState]  # messages whose flags changed, with their new MODSEQ
    unchanged: list[MessageState]  # asked for, present, already as asked
    modified: list[int]  # RFC 7162 §3.1.3: UIDs refused by UNCHANGEDSINCE


@dataclass(frozen=True, slots=True)
class FlagWrite:
    """What `write_flag_change` changed: these messages, all to this MODSEQ; `elsewhere`: the
    messages whose stored flags were not as the session saw them, with their flags now."""

    uids: list[int]
    modseq: int
    elsewhere: list[MessageState]


# --- DMARC reports ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedRow:
    """One record of an aggregate report another receiver sent us: messages from one source
    IP with one set of results. `dkim` and `spf` are the policy_evaluated (aligned) results;
    `dkim_results` (domain, selector, result) and `spf_results` (domain, result) the raw ones."""

    source_ip: str
    count: int
    disposition: str
    dkim: str
    spf: str
    header_from: str
    envelope_from: str | None = None
    dkim_results: tuple[tuple[str, str, str], ...] = ()
    spf_results: tuple[tuple[str, str], ...] = ()

    @property
    def dmarc(self) -> str:
        """DMARC passes when one of the aligned results does (DMARCbis §4.9.5)."""
        return "pass" if "pass" in (self.dkim, self.spf) else "fail"


@dataclass(frozen=True, slots=True)
class ReceivedReport:
    """An aggregate report received for one of our domains, as parsed: who sent it (org name
    and address), its ID (unique per reporter), the period (Unix seconds, UTC), the policy
    domain and the policy the reporter saw ("p=reject; adkim=r; ..."), and its rows.
    `received` and `message_id` (the Message-ID of the mail it came in) say where it is from."""

    reporter: str
    email: str
    report_id: str
    begin: int
    end: int
    domain: str
    policy: str
    rows: tuple[ReceivedRow, ...]
    received: float
    message_id: str = ""
    schema: str = "rfc7489"
    errors: tuple[str, ...] = ()
    id: int = field(default=0, compare=False)  # the store's number for it; 0 before it is kept

    @property
    def messages(self) -> int:
        return sum(row.count for row in self.rows)


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    """What the inbound checks concluded for messages of one Policy Domain, kept for the
    aggregate reports we send (DMARCbis aggregate reporting): stored counted per UTC day,
    source IP, Author Domain and results, so `count` grows instead of the table.

    `disposition` is what was done (none, pass, quarantine, reject) and `override` the
    aggregate-report reason type when that is less than the domain asked for (e.g.
    "policy_test_mode", "local_policy", "trusted_forwarder"; "sampled_out" becomes "other").
    `spf` is (domain, result) of the identity SPF checked, `dkim` (domain, selector, result)
    per signature. `record` is the DMARC record applied, as a record text; `rua` its report
    URIs and `wants_reports` whether it asked for aggregate reports. `time`, on the records
    the store returns, is the latest evaluation counted in the row."""

    time: float
    policy_domain: str
    header_from: str
    source_ip: str
    result: str
    disposition: str
    spf_aligned: bool
    dkim_aligned: bool
    spf: tuple[str, str] | None = None
    dkim: tuple[tuple[str, str, str], ...] = ()
    override: str | None = None
    record: str = ""
    rua: tuple[str, ...] = ()
    wants_reports: bool = False
    count: int = 1


@dataclass(frozen=True, slots=True)
class EvaluationDay:
    """Our evaluations of one Policy Domain's mail on one UTC day, added up: what the aggregate
    report we send about that day will count (when the domain asks for reports)."""

    policy_domain: str
    day: int  # start of the UTC day, Unix seconds
    results: tuple[tuple[str, int], ...]  # messages by DMARC result, most first
    sources: int  # distinct source IPs
    wants_reports: bool

    @property
    def messages(self) -> int:
        return sum(count for _, count in self.results)


# --- queue and history -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    """Who is delivering a claimed recipient, and until when: another node takes it only once
    `until` (Unix seconds) has passed (the holder died, or its attempt outlived the lease)."""

    node: str
    until: float


@dataclass(slots=True)
class ClaimedRecipient:
    id: int
    address: str
    original: str
    orcpt: str | None
    notify: tuple[str, ...] | None
    attempts: int
    delay_notified: bool


@dataclass(slots=True)
class ClaimedMessage:
    message: QueuedMessage
    recipients: list[ClaimedRecipient] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class QueuedRecipientView:
    """One recipient of a queue entry, as `queue list` shows it."""

    address: str
    state: str
    attempts: int
    next_attempt: float
    last_reply: str
    lease: Lease | None = None  # the node delivering it now, and until when


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One message in the queue, as `queue list` shows it."""

    id: str
    arrival: float
    size: int
    sender: str
    held: bool
    recipients: tuple[QueuedRecipientView, ...]


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One thing that happened to one recipient of a message: an attempt, a delivery, a
    failure, a manual action; kept after the message left the queue (for traces)."""

    message_id: str
    time: float
    recipient: str
    event: str  # delivered | deferred | failed | expired | deleted | report ...
    reply: str
    relay: str | None = None  # the host name of the peer (MX or relay) that answered
    ip: str = ""  # the peer's address
    tls: str = ""  # the TLS version and cipher of that session, "" for none
    next_attempt: float | None = None  # a deferred recipient's next try
    report_id: str = ""  # a report (DSN) this event queued: its queue ID


@dataclass(frozen=True, slots=True)
class HourActivity:
    """Mail through the server in one hour (`hour`: its start, Unix seconds): messages
    accepted, recipients delivered here, recipients delivered to other servers, recipients
    that failed."""

    hour: int
    received: int
    delivered_local: int
    delivered_remote: int
    failed: int


@dataclass(frozen=True, slots=True)
class Activity:
    """What the history tells of recent mail: the hours with something in them, oldest first,
    the newest failed recipients (their "failed" events), newest first, and the queue IDs of
    the messages read that arrived or have an event past the end of the span counted."""

    hours: tuple[HourActivity, ...]
    failures: tuple[HistoryEvent, ...]
    later: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ReceivedRecipient:
    """One recipient as accepted: the final address, the RCPT address, local or remote."""

    address: str
    original: str
    local: bool


@dataclass(frozen=True, slots=True)
class Reception:
    """How a message was received, beyond its envelope: the TLS of the session, the
    Message-ID header, what the inbound checks decided (`verdict`, "" when none ran; `junk`:
    local copies go to Junk) and the recipients accepted. Kept with its history (schema 10)."""

    tls: str
    message_id: str
    verdict: str
    junk: bool
    recipients: tuple[ReceivedRecipient, ...]


@dataclass(frozen=True, slots=True)
class MessageTrace:
    """A message's history: how it arrived and every event of its recipients, oldest first."""

    message_id: str
    arrival: float
    sender: str
    size: int
    client_addr: str
    client_helo: str
    protocol: str
    auth_user: str
    events: tuple[HistoryEvent, ...]
    auth: str = ""  # the checks of inbound mail, as on its `queued` log line
    reception: Reception | None = None  # None for messages kept before schema 10


# --- DKIM keys ---------------------------------------------------------------------------------

DkimKeyState = Literal["announced", "active", "retired"]
DKIM_KEY_STATES: tuple[DkimKeyState, ...] = ("announced", "active", "retired")


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One DKIM key pair of a domain at one selector (RFC 6376 §3.1). `private` is the key as
    dkimpy takes it (rsa: PEM, ed25519: base64 of the seed) and never shows in a repr (nor,
    so, in a log line); `public` is the p= value of its record. `state`: announced (its record
    is to be published, it does not sign yet), active (it signs), retired (it signs no more,
    its record stays published a while); `state_changed` is when it got that state."""

    domain: str
    selector: str
    algorithm: str  # ed25519 | rsa (mailauth.keys.Algorithm)
    private: bytes = field(repr=False)
    public: str
    created: float
    state: DkimKeyState
    state_changed: float


@dataclass(frozen=True, slots=True)
class Block:
    """A temporary refusal kept across restarts: `kind` "login" (SMTP AUTH, IMAP, POP3 answer
    a temporary failure) or "guessing" (SMTP 421 at connect); `client` an address or network
    ("" for any), `account` a login name ("" for any); until `until` (Unix time)."""

    kind: str
    client: str
    account: str
    until: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SendingCount:
    """What one authenticated user sent in the hour that began at `window_start`."""

    account: str
    window_start: float
    messages: int
    recipients: int
