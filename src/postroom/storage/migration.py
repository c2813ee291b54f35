"""What `postroom storage migrate` moves from one store to another, backend-neutral.

The source backend's export yields `Row`s kind by kind, in the order of `KINDS` (referenced
rows before the rows that reference them), each kind in the order of its `key`; the target
backend's import writes them and remembers, in the same transaction, the key of the last row
it wrote per kind, so a run that was interrupted resumes after it. A kind's `fields` are the
row's values in order: the columns both schemas share (ids included, so references and IMAP's
UIDs, UIDVALIDITY and MODSEQs stay what they were). Two kinds carry more than columns: a
`Blob` streams its content in chunks, a `History` row brings its events (one JSON line each)
and the keys a trace finds it by.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from postroom.storage.records import StorageFailure


@dataclass(frozen=True)
class Kind:
    name: str  # the table on both sides
    fields: tuple[str, ...]


def _kind(name: str, fields: str) -> Kind:
    return Kind(name, tuple(fields.split()))


KINDS: tuple[Kind, ...] = (
    _kind("users", "id address password_hash scram created admin"),
    _kind("aliases", "address target"),
    _kind("blobs", "id size refs"),
    _kind("blob_summaries", "blob_id summary"),
    _kind("blob_subjects", "blob_id subject"),
    _kind("mailboxes", "id user_id name uidvalidity uidnext highestmodseq special_use recent_uid"),
    _kind("subscriptions", "user_id name"),
    _kind(
        "mailbox_messages",
        "id mailbox_id uid modseq flags seen internal_date size blob_id prefix",
    ),
    _kind("mailbox_vanished", "mailbox_id uid modseq"),
    _kind(
        "queue_messages",
        "id blob_id prefix sender size params arrival client_addr client_helo protocol tls"
        " auth_user held auth junk",
    ),
    _kind(
        "queue_recipients",
        "id message_id address original orcpt notify user_id state attempts next_attempt"
        " last_reply delay_notified scheduled_attempt early_attempts spam_score junk",
    ),
    _kind("queue_reports_pending", "message_id kind entry"),
    _kind(
        "message_history",
        "id arrival sender size client_addr client_helo protocol auth_user auth reception",
    ),
    _kind(
        "dmarc_reports",
        "id reporter email report_id begin_time end_time domain policy schema errors received"
        " message_id messages rows",
    ),
    _kind(
        "dmarc_evaluations",
        "policy_domain day source_ip header_from results count last_seen record rua wants_reports",
    ),
    _kind("secrets", "name value"),
    _kind(
        "dkim_keys",
        "domain selector algorithm private_key public_key created state state_changed",
    ),
    _kind("junk_tokens", "user_id token ham spam"),
    _kind("junk_totals", "user_id ham spam"),
    _kind("junk_trained", "user_id digest spam"),
    _kind("sieve_scripts", "user_id name source active changed"),
    _kind("sieve_replies", "user_id sender handle until"),
    _kind("sieve_duplicates", "user_id key until"),
    _kind("greylist_triplets", "key first_seen"),
    _kind("greylist_networks", "network last_seen"),
    _kind("abuse_blocks", "kind client account until reason"),
    _kind("sending_counts", "account window_start messages recipients"),
    _kind("web_sessions", "id_hash user_id csrf created last_seen"),
    _kind("api_tokens", "id_hash user_id name created"),
    _kind("app_passwords", "user_id name password_hash created"),
)

# Totals compared after a copy besides the rows of each kind: the history's events, and the
# bytes of all message contents.
HISTORY_EVENTS = "history events"
BLOB_BYTES = "content bytes"


@dataclass(frozen=True)
class Row:
    kind: str
    key: tuple[object, ...]  # where the export resumes after this row (opaque to the import)
    values: tuple[object, ...]  # in the order of the kind's fields


@dataclass(frozen=True)
class Blob(Row):
    """A message content: its chunks are read from the source only while they are written."""

    chunks: Callable[[int], Iterator[bytes]] = field(default=lambda size: iter(()))


@dataclass(frozen=True)
class History(Row):
    events: tuple[str, ...] = ()  # JSON lines: [time, recipient, event, reply, relay, ...]
    keys: tuple[str, ...] = ()  # "a:" + address, "m:" + Message-ID


class ForeignTarget(Exception):
    """The target database holds data that no migration put there."""


class Source(Protocol):
    """A store read for a copy, from one consistent snapshot."""

    def counts(self) -> dict[str, int]:
        """Rows of each kind, HISTORY_EVENTS and BLOB_BYTES."""
        ...

    def rows(self, kind: Kind, after: tuple[object, ...] | None) -> Iterator[Row]:
        """The kind's rows after the key `after` (all of them for None), in key order."""
        ...

    def close(self) -> None: ...


class Target(Protocol):
    """A store a copy writes to, remembering where each kind resumes."""

    where: str  # the database, for messages (never its password)

    def begin(self) -> str:
        """'new', 'resumed' or 'complete'; ForeignTarget when it holds other data."""
        ...

    def position(self, kind: Kind) -> tuple[object, ...] | None: ...

    def write(self, kind: Kind, rows: Sequence[Row]) -> None: ...

    def finish(self) -> None: ...

    def counts(self) -> dict[str, int]: ...

    def failure(self, error: BaseException) -> StorageFailure | None: ...

    def close(self) -> None: ...
