"""The store's interface: what the rest of postroom may ask of it, by kind of data.

A backend (SQLite today in `storage/sqlite/`, PostgreSQL later) implements these Protocols and
passes the contract suite in `tests/storage/`. Nothing outside `storage/` sees SQL, a
connection or a file path of the store.

The shape: work on the store is a function of a `Tx` — the repositories as seen inside one
transaction — handed to `Store.write` (run in the next group commit, answered once it is
durable) or `Store.read` (run against a consistent snapshot, never waiting for writes). The
functions run on the store's own threads: they must not touch the event loop, and what they
return is the answer. Repository methods raise `StoreError` (or `MailboxError`) for requests the
store refuses; such an error undoes that function's changes and nothing else.

The CLI, a separate short-lived process, uses `DirectStore`: the same repositories, in
transactions it opens itself.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Literal, Protocol, TypeVar

from postroom.model.queue import QueuedMessage, Recipient, RecipientState
from postroom.proto.imap.selected import MessageColumns, MessageState
from postroom.storage.buffer import ContentBuffer
from postroom.storage.records import (
    Activity,
    Block,
    ClaimedMessage,
    ClaimedRecipient,
    DkimKey,
    DkimKeyState,
    EvaluationDay,
    EvaluationRecord,
    FetchRow,
    FlagWrite,
    HistoryEvent,
    Lease,
    MailboxInfo,
    MailboxListing,
    MailboxNews,
    MailboxStatus,
    MessageTrace,
    QueueEntry,
    ReceivedReport,
    Resolution,
    SendingCount,
    StatusCounts,
    StorageFailure,
    StoredMessage,
    StoreResult,
    UserRecord,
    UserSummary,
    WebSession,
)

T = TypeVar("T")

Content = bool | Literal["header"]  # what of a message a FETCH reads
FlagMode = Literal["set", "add", "remove"]
Signal = Literal["accounts", "queue", "limits", "blocks", "dkim"]


class Accounts(Protocol):
    """Users (with their password hash and SCRAM keys) and address aliases."""

    def add_user(self, address: str, password_hash: str, scram: str, admin: bool = False) -> int:
        """A new user with the default mailboxes (INBOX, Sent, ...), all subscribed."""

    def get_user(self, address: str) -> UserRecord | None: ...

    def list_users(self) -> list[UserSummary]:
        """Every user, by address."""

    def set_password(self, address: str, password_hash: str, scram: str) -> None: ...

    def set_admin(self, address: str, admin: bool) -> None:
        """Give or take the admin flag; StoreError when there is no such user."""

    def delete_user(self, address: str) -> int:
        """Remove a user with their mailboxes and mail; returns how many messages went."""

    def count_messages(self, address: str) -> int:
        """How many messages the user has in all their mailboxes."""

    def add_alias(self, address: str, targets: Sequence[str]) -> None: ...

    def delete_alias(self, address: str) -> None: ...

    def list_aliases(self) -> dict[str, list[str]]: ...

    def resolve(self, address: str, local_domains: frozenset[str]) -> Resolution:
        """Expand aliases (recursively, loop-safe) into local users and remote addresses; an
        alias "@domain" catches every address of that local domain that is neither a user nor
        an alias of its own."""


class WebLogins(Protocol):
    """Browser sessions and API tokens of the web admin, each kept by the SHA-256 of its
    secret (the secret itself is never stored); they go with their user."""

    def add_session(self, id_hash: bytes, user_id: int, csrf: str, now: float) -> None: ...

    def session(self, id_hash: bytes) -> WebSession | None: ...

    def touch_session(self, id_hash: bytes, now: float) -> None: ...

    def delete_session(self, id_hash: bytes) -> None: ...

    def delete_sessions(self, user_id: int, keep: bytes | None = None) -> int:
        """End every session of the user but `keep`; how many ended."""

    def prune_sessions(self, idle_before: float, created_before: float) -> int:
        """End the sessions last used before `idle_before` or begun before `created_before`."""

    def add_token(self, id_hash: bytes, user_id: int, name: str, now: float) -> None: ...

    def token_user(self, id_hash: bytes) -> UserRecord | None: ...

    def add_app_password(self, user_id: int, name: str, password_hash: str, now: float) -> bool:
        """Keep a named app password's hash; False when the user has one of that name."""

    def app_passwords(self, user_id: int) -> list[tuple[str, float]]:
        """The user's app passwords: (name, created), by name."""

    def app_password_hashes(self, user_id: int) -> list[str]:
        """The hashes of the user's app passwords, to check a login against."""

    def delete_app_password(self, user_id: int, name: str) -> bool:
        """Revoke one; False when there was none of that name."""


class Mailboxes(Protocol):
    """A user's mailboxes (RFC 3501 §5.1: names, UIDVALIDITY, UIDNEXT) and subscriptions."""

    def of_user(self, user_id: int) -> list[MailboxInfo]: ...

    def find(self, user_id: int, name: str) -> MailboxInfo | None: ...

    def id_of(self, user_id: int, name: str) -> int | None:
        """`find(...).id` without the rest (local delivery asks it for every copy)."""

    def get(self, mailbox_id: int) -> MailboxInfo | None: ...

    def require(self, user_id: int, name: str) -> MailboxInfo:
        """The mailbox, or MailboxError NONEXISTENT."""

    def create(self, user_id: int, name: str, special_use: str = "") -> int:
        """RFC 3501 §6.3.3 (missing parents too); a new, never used UIDVALIDITY."""

    def delete(self, user_id: int, name: str) -> None:
        """RFC 3501 §6.3.4, with its messages."""

    def rename(self, user_id: int, old: str, new: str) -> None:
        """RFC 3501 §6.3.5: children move along; renaming INBOX moves its messages."""

    def subscriptions(self, user_id: int) -> list[str]: ...

    def subscribe(self, user_id: int, name: str, *, on: bool) -> None: ...

    def status_counts(self, info: MailboxInfo) -> StatusCounts: ...

    def status(self, mailbox_id: int) -> MailboxStatus: ...

    def claim_recent(self, mailbox_id: int) -> int:
        """RFC 3501 §2.3.2: \\Recent belongs to one session; the first UID it sees as recent."""


class Messages(Protocol):
    """Messages in mailboxes: UIDs, MODSEQs, flags, content. Every change takes a new MODSEQ
    from the mailbox (RFC 7162 §3.1) and wakes the sessions that have it open."""

    def append(
        self,
        mailbox_id: int,
        blob_id: int,
        *,
        size: int,
        internal_date: float,
        prefix: bytes = b"",
        flags: Iterable[str] = (),
    ) -> int:
        """A new copy of a blob in a mailbox (its `prefix` before the blob's bytes); returns
        its UID, which is larger than any the mailbox ever had (RFC 3501 §2.3.1.1). The blob's
        IMAP summary is not made here: readers make a missing one (and the store keeps it), a
        caller that wants it sooner has it made (`Summaries`)."""

    def copy(self, source: int, uids: Sequence[int], target: int) -> list[tuple[int, int]]:
        """RFC 3501 §6.4.7: flags and internal date kept, the blob shared; (old, new) UIDs."""

    def expunge(self, mailbox_id: int, uids: Iterable[int]) -> list[int]:
        """Remove messages (absent UIDs are ignored); returns the UIDs removed, remembered with
        the expunge's MODSEQ for RFC 7162 §3.2.10 VANISHED. A blob goes with its last copy."""

    def deleted_uids(self, mailbox_id: int, within: Sequence[int] | None = None) -> list[int]:
        """UIDs flagged \\Deleted (optionally only among `within`)."""

    def states(self, mailbox_id: int, since_modseq: int = 0) -> list[MessageState]:
        """Messages in UID order; with `since_modseq`, only those changed or added after it."""

    def columns(self, mailbox_id: int) -> MessageColumns:
        """Every message as parallel lists (what SELECT loads)."""

    def vanished_since(self, mailbox_id: int, since_modseq: int) -> list[int]: ...

    def keywords(self, mailbox_id: int) -> set[str]:
        """The keywords (flags not starting with a backslash) its messages have."""

    def news(
        self, mailbox_id: int, since: int, claim_recent_after: int | None = None
    ) -> MailboxNews | None:
        """What changed since `since` (None: the mailbox is gone); with `claim_recent_after`,
        messages added after that UID are claimed as \\Recent for the caller."""

    def fetch_rows(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        *,
        summary: bool,
        content: Content,
        must_contain: tuple[str, str] | None = None,
        content_budget: int | None = None,
    ) -> list[FetchRow]:
        """The stored data of `uids` still present, in UID order. `content="header"` gives the
        header block only. `must_contain` (header name, text) may skip messages that cannot
        have the text in that header: for Subject any case-folded text, blanks included (the
        decoded subjects tell), for other headers a lower-case ASCII word; a pre-filter, the
        caller still decides. With
        whole contents and `content_budget`, messages are read in UID order only while their
        sizes stay within it (at least one): the rows then cover the UIDs up to the last."""

    def read(self, mailbox_id: int, uid: int) -> bytes | None:
        """The full message (prefix + blob), or None when it is gone or unreadable."""

    def listing(self, mailbox_id: int) -> MailboxListing | None: ...

    def stored(self, mailbox_id: int) -> list[StoredMessage]:
        """Every message with its flags and blob reference, in UID order (for export)."""

    def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: Iterable[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        """RFC 3501 §6.4.6 STORE (RFC 7162 §3.1.3 UNCHANGEDSINCE); one MODSEQ per command."""

    def write_flag_change(
        self,
        mailbox_id: int,
        before: Mapping[int, tuple[str, ...]],
        after: Mapping[tuple[str, ...], tuple[str, ...]],
        mode: FlagMode,
        flags: Iterable[str],
    ) -> FlagWrite:
        """Make a STORE a session has already applied to its view (`before`: each message's
        flags as it saw them, `after`: each old flag set's new one); where another session
        changed a message meanwhile, `mode` and `flags` apply to its stored flags and
        `elsewhere` reports the result."""


class Blobs(Protocol):
    """Message contents, shared by every queue entry and mailbox copy that references them
    and counted: a blob goes when its last reference does."""

    def add(self, data: bytes) -> int:
        """A new blob with no references yet (a queue entry or a copy adds one)."""

    def read(self, blob_id: int) -> bytes:
        """The content; StoreError when it is missing or unreadable."""

    def exists(self, blob_id: int) -> bool: ...


class Summaries(Protocol):
    """The IMAP summary of a blob (ENVELOPE, BODYSTRUCTURE, header block, sort keys)."""

    def make(self, blob_id: int) -> None:
        """Compute and keep it, unless it exists or the blob is gone."""

    def put(self, blob_id: int, summary: bytes) -> None:
        """Keep one the caller computed (`storage.summary.summarise_packed`)."""


class Queue(Protocol):
    """Queue entries (envelope, per-recipient state), attempts, and report lines held back."""

    def enqueue(self, message: QueuedMessage) -> None:
        """A new entry referencing `message.blob_id`; sets each recipient's id."""

    def load(self, message_id: str) -> QueuedMessage | None: ...

    def entries(self) -> list[QueueEntry]:
        """Every entry with its recipients, in queue order."""

    def with_local_work(self) -> list[str]:
        """Entries with local recipients still to deliver."""

    def state_counts(self) -> dict[str, int]:
        """Entries by state, each counted once: "held" when a recipient is held, else
        "deferred" when one was deferred, else "queued" (states with no entry are left out)."""

    def update_recipient(self, rcpt: Recipient) -> None: ...

    def finish_if_done(
        self,
        message_id: str,
        final: tuple[RecipientState, ...] = (RecipientState.DELIVERED,),
    ) -> bool:
        """Drop the entry once every recipient is in a `final` state; True when dropped."""

    def next_due(self) -> float | None:
        """When the earliest waiting remote recipient is due (None: nothing waits)."""

    def claim_due(
        self,
        now: float,
        next_attempt: Callable[[float, int], float],
        *,
        lease: Lease,
        limit: int = 500,
    ) -> dict[str, list[ClaimedMessage]]:
        """Take the due remote recipients, grouped by domain, counting the attempt, setting
        the next one and recording `lease` BEFORE any remote server is contacted (a crash
        means a later retry, never a lost message). A leased recipient is due to nobody until
        the lease ends, then to any node (its holder died: RFC 5321 §6.1, at least once).
        `next_attempt(arrival, n)` is the schedule after the n-th scheduled attempt; an attempt
        made early (`retry`/`release`, or again after a lease ended) leaves it as it was."""

    def renew_leases(self, node: str, until: float) -> int:
        """Move the end of every lease `node` holds to `until` (its deliveries still run);
        how many."""

    def release_leases(self, node: str, now: float) -> int:
        """End every lease `node` holds (it restarted: none of its attempts still runs);
        the waiting recipients are due at `now`, their schedule kept; how many leases."""

    def still_queued(self, message_id: str) -> bool: ...

    def record_attempt(
        self,
        rcpt: ClaimedRecipient,
        state: RecipientState,
        reply: str,
        now: float,
        relay: str | None = None,
        *,
        ip: str = "",
        tls: str = "",
    ) -> None:
        """An attempt's outcome: the recipient's state (a held one stays held when deferred),
        its lease ended (due again at the next attempt claim_due set), and a history event
        with the peer (`relay` host name, `ip`), the session's `tls` and, for a deferred
        recipient, its next attempt."""

    def mark_delay_notified(self, rcpt: ClaimedRecipient) -> None: ...

    def hold_report_lines(self, message_id: str, kind: str, entries: Sequence[str]) -> None:
        """Keep report lines until every destination of this delivery round has answered."""

    def take_report_lines(self, message_id: str) -> dict[str, list[str]]: ...

    def with_held_reports(self) -> list[str]: ...

    def hold(self, message_id: str) -> int:
        """Stop delivery attempts: waiting recipients become held; how many."""

    def release(self, message_id: str, now: float) -> int:
        """Held recipients are due at `now` without moving their schedule; how many."""

    def retry(self, message_id: str | None, now: float) -> int:
        """Waiting recipients of one entry (or all) due at `now`, schedule kept; how many."""

    def retry_domain(self, domain: str, now: float) -> int:
        """RFC 1985 ETRN: the waiting remote recipients of one domain due at `now`."""

    def delete(self, message_id: str) -> None:
        """Remove an entry (StoreError when there is none); its blob goes if unreferenced."""


class Dmarc(Protocol):
    """DMARC aggregate reports: those other receivers send us about our domains, and what our
    inbound checks evaluated, for the reports we send."""

    def add_report(self, report: ReceivedReport) -> bool:
        """Keep a received report; False (nothing changed) when one with the same reporter
        and report ID is kept already."""

    def reports(self, domain: str | None = None) -> list[ReceivedReport]:
        """The reports kept (about `domain` only, when given), by period then reporter; each
        with its `id`."""

    def report_page(
        self, domain: str | None, begin: int | None, end: int | None, limit: int, offset: int = 0
    ) -> list[ReceivedReport]:
        """Reports (about `domain` only, when given) whose period overlaps [begin, end) (None:
        unbounded), newest period first, `limit` of them after skipping `offset`; each with
        its `id`."""

    def report(self, report_id: int) -> ReceivedReport | None:
        """The report kept with this `id`; None when there is none."""

    def forget_reports(self, before: float) -> int:
        """Drop the reports whose period ended before `before`; how many went."""

    def record_evaluation(self, evaluation: EvaluationRecord) -> None:
        """Count one evaluation (or `evaluation.count`): added to the row of its UTC day,
        source IP, Author Domain and results; the row takes its record, rua and
        wants_reports (the latest seen win)."""

    def pending_report_domains(self, before: float) -> list[str]:
        """The Policy Domains that asked for reports and have evaluations of a UTC day that
        began before `before` (pass the start of the current day: finished days)."""

    def evaluations(self, policy_domain: str, begin: float, end: float) -> list[EvaluationRecord]:
        """The counted evaluations of the UTC days starting in [begin, end), by day."""

    def evaluation_days(self, limit: int) -> list[EvaluationDay]:
        """The evaluations not reported yet, added up per Policy Domain and UTC day: the newest
        day first, then the most messages; at most `limit`."""

    def forget_evaluations(self, policy_domain: str | None, end: float) -> int:
        """Drop the evaluations of the UTC days starting before `end`, of one Policy Domain
        (None: of every one); how many rows went."""


class History(Protocol):
    """What happened to messages, kept after they leave the queue, for a retention time."""

    def arrived(self, message: QueuedMessage, events: Sequence[HistoryEvent] = ()) -> None:
        """A message was accepted: its envelope and how it was received (`Reception`: the
        envelope's TLS, Message-ID, verdict; its recipients) are remembered, with `events`
        (what already happened) in the same write, and it can be found by its sender, its
        recipients and its Message-ID."""

    def trace(self, message_id: str) -> MessageTrace | None:
        """The message's history (by queue ID, any case); None when none is kept."""

    def with_address(self, address: str, limit: int) -> list[str]:
        """Queue IDs of the messages kept whose sender or a recipient (as given or as
        delivered) is `address` (any case), newest first, at most `limit`."""

    def with_message_id(self, message_id: str, limit: int) -> list[str]:
        """Queue IDs of the messages kept with this Message-ID (with or without <>, any case),
        newest first, at most `limit`."""

    def activity(
        self,
        since: float,
        arrived_since: float,
        failures: int,
        until: float = math.inf,
        also: Collection[str] = (),
    ) -> Activity:
        """Per hour, what happened at or after `since` and before `until` (arrivals, local and
        remote deliveries, failures) to the messages kept that arrived at or after
        `arrived_since` (older ones are not read: pass how long mail may stay queued) and to
        those of `also` (queue IDs), and the newest `failures` failed recipients among them
        in that span; `later` names the messages read that arrived or have an event at or
        after `until`."""

    def record(self, event: HistoryEvent) -> None:
        """An event of a message whose arrival is remembered, or is about to be in the same
        transaction (a report queued while the message is accepted); otherwise it is not
        kept. A reply is kept up to 512 characters."""

    def prune(self, before: float, limit: int = 5000) -> int:
        """Forget up to `limit` messages that arrived before `before` (message IDs are queue
        IDs, which begin with their arrival time); how many went."""


class Junk(Protocol):
    """The junk filter's training per user: token counts over the ham and spam messages the
    user trained, and which messages (by digest) were trained as what."""

    def totals(self, user_id: int) -> tuple[int, int]:
        """How many (ham, spam) messages the user trained."""

    def counts(self, user_id: int, tokens: Collection[str]) -> dict[str, tuple[int, int]]:
        """(ham, spam) of each of `tokens` the user's training has seen (others are left out)."""

    def train(self, user_id: int, digest: bytes, tokens: Collection[str], spam: bool) -> bool:
        """Count a message with these tokens as spam (or ham); False when it was trained so
        already. A message trained the other way before is moved (its counts undone first)."""


class SieveScripts(Protocol):
    """Each user's Sieve scripts (at most one active) and the memory of what they did: vacation
    replies sent and duplicate IDs seen, each until its period ends."""

    def put(self, user_id: int, name: str, source: str, now: float) -> None:
        """Create or replace the script called `name` (its active mark stays)."""

    def get(self, user_id: int, name: str) -> str | None: ...

    def scripts(self, user_id: int) -> list[tuple[str, bool]]:
        """(name, active) of each script, by name."""

    def active(self, user_id: int) -> tuple[str, str] | None:
        """(name, source) of the active script, None when none is."""

    def activate(self, user_id: int, name: str | None) -> None:
        """Make `name` the active script (None: none is); StoreError when there is no such
        script."""

    def rename(self, user_id: int, old: str, new: str) -> None:
        """StoreError when `old` does not exist or `new` does."""

    def delete(self, user_id: int, name: str) -> None:
        """StoreError when there is no such script, or it is the active one (RFC 5804 §2.10)."""

    def replied(self, user_id: int, sender: str, handle: str, now: float) -> bool:
        """A vacation reply to `sender` under `handle` was sent and its period has not ended."""

    def record_reply(self, user_id: int, sender: str, handle: str, until: float) -> None: ...

    def seen(self, user_id: int, key: str, now: float) -> bool:
        """Duplicate tracking: `key` was recorded and its period has not ended."""

    def record_seen(self, user_id: int, key: str, until: float) -> None: ...

    def forget_expired(self, now: float) -> int:
        """Drop replies and duplicate IDs whose period ended; how many went."""


class Secrets(Protocol):
    """Server-wide secret keys by name (e.g. the SRS hash key), made once, never logged."""

    def get(self, name: str) -> bytes | None:
        """The secret called `name`, None before it is made (a read: no write at each start)."""

    def get_or_create(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The secret called `name`; the first caller's `make()` stores it."""


class DkimKeys(Protocol):
    """The DKIM key pairs of domains, one per (domain, selector), with their state.

    Private keys are secrets: they live in the store (which only its owner can read) and are
    handed out in `DkimKey` records, whose repr leaves them out."""

    def add(self, key: DkimKey) -> None:
        """A new key; StoreError when the domain has one at that selector already."""

    def keys(self, domain: str | None = None) -> list[DkimKey]:
        """The keys of `domain` (of every domain when None), by domain, then age (oldest
        first), then selector."""

    def set_state(self, domain: str, selector: str, state: DkimKeyState, when: float) -> None:
        """Move a key to `state` as of `when`; StoreError when there is no such key."""

    def delete(self, domain: str, selector: str) -> None:
        """Remove a key; StoreError when there is no such key."""

    def delete_retired(self, before: float) -> list[DkimKey]:
        """Remove the keys retired at or before `before`; the keys removed."""


class AbuseState(Protocol):
    """What the abuse defences keep across restarts (services/antispam.py and limits.py keep
    it in memory and write behind): greylisting's triplets and passed client networks, login
    and guessing blocks, and each authenticated user's sending counts."""

    def greylist_triplets(self) -> list[tuple[str, float]]:
        """(triplet key, first seen) of every triplet kept."""

    def greylist_networks(self) -> list[tuple[str, float]]:
        """(client network, last seen) of every network that passed greylisting."""

    def save_greylist(
        self,
        triplets: Sequence[tuple[str, float]],
        networks: Sequence[tuple[str, float]],
        forget: Sequence[str] = (),
    ) -> None:
        """Insert or replace triplets and networks (the latest value wins); drop the
        triplets named in `forget`."""

    def prune_greylist(self, triplets_before: float, networks_before: float) -> int:
        """Drop triplets first seen and networks last seen before these times; how many."""

    def greylist_lookup(self, key: str, network: str) -> tuple[float | None, float | None]:
        """(first seen of the triplet `key`, last seen of `network`), None for what is not
        kept: what another node sharing the store may have recorded."""

    def blocks(self, now: float) -> list[Block]:
        """The blocks still in force at `now`, by kind, client, account."""

    def add_block(self, block: Block) -> None:
        """Insert or replace the block of the same (kind, client, account)."""

    def clear_blocks(self, client: str | None = None, account: str | None = None) -> int:
        """Remove the blocks of `client` and/or `account` (every block when both are None);
        how many went. Expired ones go too."""

    def prune_blocks(self, now: float) -> int:
        """Remove the blocks that ended before `now`; how many."""

    def sending_counts(self) -> list[SendingCount]:
        """Every user's count, by account."""

    def save_sending_counts(self, counts: Sequence[SendingCount]) -> None:
        """Insert or replace each account's count."""

    def sending_count(self, account: str) -> SendingCount | None:
        """One account's count (None when none is kept)."""

    def add_sending_counts(
        self, deltas: Sequence[SendingCount], current_after: float
    ) -> list[SendingCount]:
        """Add each delta's messages and recipients to its account's count when that count's
        window started after `current_after`; otherwise (none, or an older window) the delta
        becomes the count. Atomic per account, so nodes sharing the store may add at once;
        the counts after, by account."""

    def clear_sending_counts(self, account: str | None = None) -> int:
        """Forget one account's count (every one when None); how many went."""


class Tx(Protocol):
    """The repositories inside one transaction (or read snapshot)."""

    @property
    def accounts(self) -> Accounts: ...

    @property
    def mailboxes(self) -> Mailboxes: ...

    @property
    def messages(self) -> Messages: ...

    @property
    def blobs(self) -> Blobs: ...

    @property
    def summaries(self) -> Summaries: ...

    @property
    def queue(self) -> Queue: ...

    @property
    def dmarc(self) -> Dmarc: ...

    @property
    def history(self) -> History: ...

    @property
    def secrets(self) -> Secrets: ...

    @property
    def junk(self) -> Junk: ...

    @property
    def sieve(self) -> SieveScripts: ...

    @property
    def dkim_keys(self) -> DkimKeys: ...

    @property
    def abuse(self) -> AbuseState: ...

    @property
    def web(self) -> WebLogins: ...

    def savepoint(self) -> AbstractContextManager[None]:
        """A nested unit: an exception inside undoes only what was done inside, then goes on."""


class Signals(Protocol):
    """Notes from the CLI (another process) to a running server, and between the nodes that
    share a store: accounts, queue, limits, blocks or DKIM keys changed."""

    def mark(self, what: Signal) -> None: ...

    def announce(self, what: Signal) -> None:
        """Tell the other nodes sharing the store only (not this process): nothing on SQLite,
        whose store one server owns."""

    def version(self, what: Signal) -> int:
        """Changes whenever `mark(what)` was called; cheap (asked once per RCPT)."""


class StoreStats(Protocol):
    def summary(self) -> str: ...


MailboxChanges = Callable[[dict[int, int | None]], None]


class Store(Protocol):
    """The server's store: writes in group commits on the store's writer, reads beside it.

    When the disk or the database fails, `write`, `read` and `write_content` raise
    `StorageFailure` (records.py) and log nothing: the caller answers its client with a
    temporary failure and logs one line. `open` raises it naming the path and the fix."""

    @property
    def signals(self) -> Signals: ...

    @property
    def stats(self) -> StoreStats: ...

    on_mailbox_change: MailboxChanges | None
    """Called on the event loop after a commit changed mailboxes: id → HIGHESTMODSEQ after it
    (None when the mailbox is gone)."""

    on_missed: Callable[[], None] | None
    """Called on the event loop when changes made elsewhere may have gone unannounced (the
    PostgreSQL store's listener reconnected): any mailbox may have changed. SQLite: never."""

    on_commit: Callable[[int], None] | None
    """Called on the writer thread after each group commit with its number of jobs (quick and
    thread-safe, such as a metric's observe)."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    async def write(
        self,
        fn: Callable[[Tx], T],
        *,
        durable: bool = True,
        then: Callable[[Tx, T], None] | None = None,
    ) -> T:
        """Run `fn` in the next group commit; returns once its transaction is durable.

        `durable=False`: changes a crash may undo without breaking a promise (IMAP flags,
        \\Recent): committed without waiting for the disk. `then(tx, result)` runs later, once
        the writer is idle, for data derived from `fn`'s that readers can also make themselves
        (an appended message's IMAP summary); its failure is logged and undoes nothing else."""

    async def write_early(self, fn: Callable[[Tx], T]) -> tuple[T, asyncio.Future[None]]:
        """A `durable=False` write whose result comes back before the commit, with a future
        done once the commit is (the caller awaits it before reading again)."""

    def submit_early(self, fn: Callable[[Tx], T]) -> tuple[asyncio.Future[T], asyncio.Future[None]]:
        """`write_early` without waiting: (future of fn's result, future of the commit)."""

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` against the latest committed state."""

    def new_buffer(self, name: str) -> ContentBuffer:
        """A buffer for content on its way in (memory, then a spill file the store owns)."""

    async def write_content(self, content: ContentBuffer, then: Callable[[Tx, int], T]) -> T:
        """Store `content` as a new blob and run `then(tx, blob_id)` in the same group commit;
        the content's bytes are durable before the commit that references them. The buffer is
        used up: its spill file is gone afterwards, whether the write succeeded or not."""


class DirectStore(Protocol):
    """The store for one CLI command: the same repositories, synchronous. Opening it raises
    `StorageFailure`, naming the path and the fix, when the database cannot be used."""

    @property
    def signals(self) -> Signals: ...

    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction, committed durably when the block ends without an exception."""

    def reader(self) -> Tx:
        """Repositories for reading (each read sees the latest commit)."""

    def failure(self, error: BaseException) -> StorageFailure | None:
        """The `StorageFailure` an error raised by these repositories is (None: it is a
        refusal or a bug), for the command to say in one line."""

    def close(self) -> None: ...
