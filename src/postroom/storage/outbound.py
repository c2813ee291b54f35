"""Store operations of outbound delivery: claim due recipients, record outcomes, queue reports.

`claim_due` runs BEFORE any remote server is contacted and already counts the attempt and sets
the next retry time (mox `queue.Add`, Postfix's deferred queue): a crash mid-delivery then means
a later retry, at worst a duplicate, which RFC 5321 §6.1 accepts, never a lost message.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from postroom.model.queue import Envelope, QueuedMessage, Recipient, RecipientState, new_queue_id
from postroom.proto.smtp.params import MailParams
from postroom.queue.backoff import RetryPolicy
from postroom.storage.database import Database
from postroom.storage.queue_control import WAITING


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


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def next_due(db: Database) -> float | None:
    """When the earliest waiting remote recipient is due (None: nothing waits)."""
    row = db.conn.execute(
        "SELECT min(r.next_attempt) FROM queue_recipients r JOIN queue_messages q"
        " ON q.id = r.message_id WHERE r.user_id IS NULL AND r.state IN (?, ?) AND q.held = 0",
        WAITING,
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def claim_due(
    db: Database,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
    limit: int = 500,
) -> dict[str, list[ClaimedMessage]]:
    """Take due remote recipients, grouped by destination domain, recording the attempt."""
    rows = db.conn.execute(
        "SELECT r.id, r.message_id, r.address, r.original, r.orcpt, r.notify, r.attempts,"
        " r.delay_notified, q.arrival FROM queue_recipients r JOIN queue_messages q"
        " ON q.id = r.message_id WHERE r.user_id IS NULL AND r.state IN (?, ?)"
        " AND r.next_attempt <= ? AND q.held = 0 ORDER BY r.next_attempt LIMIT ?",
        (*WAITING, now, limit),
    ).fetchall()
    by_domain: dict[str, dict[str, ClaimedMessage]] = defaultdict(dict)
    loaded: dict[str, QueuedMessage | None] = {}
    for rid, message_id, address, original, orcpt, notify, attempts, notified, arrival in rows:
        if message_id not in loaded:
            loaded[message_id] = db.load_message(message_id)
        message = loaded[message_id]
        if message is None:
            continue
        attempts += 1
        db.conn.execute(
            "UPDATE queue_recipients SET attempts = ?, next_attempt = ? WHERE id = ?",
            (attempts, policy.next_attempt(arrival, now, attempts, rng), rid),
        )
        claimed = by_domain[domain_of(address)].setdefault(message_id, ClaimedMessage(message))
        claimed.recipients.append(
            ClaimedRecipient(
                rid,
                address,
                original,
                orcpt,
                tuple(notify.split(",")) if notify else None,
                attempts,
                bool(notified),
            )
        )
    return {domain: list(messages.values()) for domain, messages in by_domain.items()}


def still_queued(db: Database, message_id: str) -> bool:
    """False when the entry was deleted (`queue delete`) while its delivery was running."""
    row = db.conn.execute("SELECT 1 FROM queue_messages WHERE id = ?", (message_id,)).fetchone()
    return row is not None


def record_attempt(
    db: Database, rcpt: ClaimedRecipient, state: RecipientState, reply: str, now: float
) -> None:
    db.conn.execute("UPDATE queue_recipients SET last_reply = ? WHERE id = ?", (reply, rcpt.id))
    # A recipient held (`queue hold`) while the attempt ran stays held when it was deferred.
    db.conn.execute(
        "UPDATE queue_recipients SET state = ? WHERE id = ? AND (state != ? OR ? != ?)",
        (str(state), rcpt.id, str(RecipientState.HELD), str(state), str(RecipientState.DEFERRED)),
    )
    db.conn.execute(
        "INSERT INTO queue_attempts(recipient_id, time, reply) VALUES (?, ?, ?)",
        (rcpt.id, now, reply),
    )


def mark_delay_notified(db: Database, rcpt: ClaimedRecipient) -> None:
    db.conn.execute("UPDATE queue_recipients SET delay_notified = 1 WHERE id = ?", (rcpt.id,))


def queue_generated(
    db: Database,
    content: bytes,
    recipient: str,
    *,
    hostname: str,
    local_domains: frozenset[str],
    deliver_local: Callable[[Database, QueuedMessage], object],
) -> QueuedMessage | None:
    """Queue a message postroom wrote itself (a report) from the null sender `<>`.

    Local recipients get their copy in this transaction; remote ones are queued. Returns None
    when the address leads nowhere (an unknown local user): there is nobody to tell.
    """
    resolution = db.resolve(recipient, local_domains)
    if resolution.empty:
        return None
    now = time.time()
    recipients = [Recipient(a, recipient, uid) for a, uid in resolution.local_users]
    recipients += [Recipient(a, recipient, None) for a in resolution.remote]
    envelope = Envelope(
        sender="",
        params=MailParams(),
        client_addr="127.0.0.1",
        client_helo=hostname,
        protocol="local",
        arrival=now,
    )
    message = QueuedMessage(new_queue_id(now), envelope, b"", 0, len(content), recipients)
    message.blob_id = db.insert_blob(len(content), content, None)
    deliver_local(db, message)
    if message.needs_queue_entry():
        db.enqueue(message)
    return message


def hold_report_lines(db: Database, message_id: str, kind: str, entries: list[str]) -> None:
    """Keep report lines (JSON) until every destination of this delivery round has answered."""
    db.conn.executemany(
        "INSERT INTO queue_reports_pending(message_id, kind, entry) VALUES (?, ?, ?)",
        [(message_id, kind, entry) for entry in entries],
    )


def take_report_lines(db: Database, message_id: str) -> dict[str, list[str]]:
    """The report lines held for a message, by kind, removed from the store."""
    rows = db.conn.execute(
        "DELETE FROM queue_reports_pending WHERE message_id = ? RETURNING kind, entry",
        (message_id,),
    ).fetchall()
    by_kind: dict[str, list[str]] = defaultdict(list)
    for kind, entry in rows:
        by_kind[str(kind)].append(str(entry))
    return dict(by_kind)


def messages_with_held_reports(db: Database) -> list[str]:
    rows = db.conn.execute("SELECT DISTINCT message_id FROM queue_reports_pending")
    return [str(r[0]) for r in rows]
