"""The queue in SQLite: entries with per-recipient state, claims, outcomes, held report lines.

`claim_due` runs BEFORE any remote server is contacted and already counts the attempt and sets
the next retry time (mox `queue.Add`, Postfix's deferred queue): a crash mid-delivery then means
a later retry, at worst a duplicate, which RFC 5321 §6.1 accepts, never a lost message.

A manual retry (`queue retry`, `queue release`, ETRN) makes recipients due now without touching
their schedule: the planned time is kept in `scheduled_attempt`, and the early attempt, once
claimed, puts it back and is counted in `early_attempts`, which the schedule does not count.

Leases as in the PostgreSQL store (one node here, but the same contract): `claim_due` records
(node, until) with the attempt; a leased recipient is due at `coalesce(lease_until,
next_attempt)`; the outcome ends the lease, and a restarted server ends its own at once, so what
a crash left in flight goes out at start rather than at its next attempt.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from postroom.model.queue import Envelope, QueuedMessage, Recipient, RecipientState
from postroom.storage.records import (
    ClaimedMessage,
    ClaimedRecipient,
    HistoryEvent,
    Lease,
    QueuedRecipientView,
    QueueEntry,
    StoreError,
)

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx

WAITING = (str(RecipientState.QUEUED), str(RecipientState.DEFERRED))
HELD = str(RecipientState.HELD)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


class SqliteQueue:
    def __init__(self, tx: SqliteTx) -> None:
        self.tx = tx
        self.conn = tx.conn

    # --- entries -------------------------------------------------------------------------------

    def enqueue(self, message: QueuedMessage) -> None:
        env = message.envelope
        self.tx.blobs.add_reference(message.blob_id)
        self.conn.execute(
            "INSERT INTO queue_messages(id, blob_id, prefix, sender, size, params, arrival,"
            " client_addr, client_helo, protocol, tls, auth_user, auth, junk)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                message.id,
                message.blob_id,
                message.prefix,
                env.sender,
                message.size,
                env.params_json(),
                env.arrival,
                env.client_addr,
                env.client_helo,
                env.protocol,
                env.tls,
                env.auth_user,
                env.auth,
                int(env.junk),
            ),
        )
        for rcpt in message.recipients:
            cursor = self.conn.execute(
                "INSERT INTO queue_recipients(message_id, address, original, orcpt, notify,"
                " user_id, state, next_attempt, last_reply, spam_score, junk)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    message.id,
                    rcpt.address,
                    rcpt.original,
                    rcpt.orcpt,
                    ",".join(rcpt.notify) if rcpt.notify else None,
                    rcpt.user_id,
                    str(rcpt.state),
                    rcpt.next_attempt or env.arrival,
                    rcpt.last_reply,
                    rcpt.spam_score,
                    int(rcpt.junk),
                ),
            )
            rcpt.id = int(cursor.lastrowid or 0)

    def load(self, message_id: str) -> QueuedMessage | None:
        row = self.conn.execute(
            "SELECT q.id, q.blob_id, q.prefix, q.sender, q.params, q.arrival, q.client_addr,"
            " q.client_helo, q.protocol, q.tls, q.auth_user, b.size, q.auth, q.junk"
            " FROM queue_messages q JOIN blobs b ON b.id = q.blob_id WHERE q.id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            return None
        envelope = Envelope(
            sender=row[3],
            params=Envelope.params_from_json(row[4]),
            client_addr=row[6],
            client_helo=row[7],
            protocol=row[8],
            tls=row[9],
            auth_user=row[10],
            arrival=row[5],
            auth=row[12],
            junk=bool(row[13]),
        )
        recipients = [
            Recipient(
                address=r[1],
                original=r[2],
                user_id=r[5],
                orcpt=r[3],
                notify=tuple(r[4].split(",")) if r[4] else None,
                state=RecipientState(r[6]),
                attempts=r[7],
                next_attempt=r[8],
                last_reply=r[9],
                id=r[0],
                spam_score=r[10],
                junk=bool(r[11]),
                lease_node=r[12],
                lease_until=r[13],
            )
            for r in self.conn.execute(
                "SELECT id, address, original, orcpt, notify, user_id, state, attempts,"
                " next_attempt, last_reply, spam_score, junk, lease_node, lease_until"
                " FROM queue_recipients"
                " WHERE message_id = ? ORDER BY id",
                (message_id,),
            )
        ]
        return QueuedMessage(row[0], envelope, bytes(row[2]), row[1], row[11], recipients)

    def require(self, message_id: str) -> QueuedMessage:
        message = self.load(message_id.upper())
        if message is None:
            raise StoreError(f"no queued message {message_id}")
        return message

    def entries(self) -> list[QueueEntry]:
        entries: list[QueueEntry] = []
        current: tuple[str, float, int, str, bool] | None = None
        recipients: list[QueuedRecipientView] = []
        for row in self.conn.execute(
            "SELECT q.id, q.arrival, q.size, q.sender, q.held, r.address, r.state, r.attempts,"
            " r.next_attempt, r.last_reply, r.lease_node, r.lease_until FROM queue_messages q"
            " JOIN queue_recipients r ON r.message_id = q.id ORDER BY q.id, r.id"
        ):
            head = (str(row[0]), float(row[1]), int(row[2]), str(row[3]), bool(row[4]))
            if current is not None and head[0] != current[0]:
                entries.append(QueueEntry(*current, tuple(recipients)))
                recipients = []
            current = head
            lease = None if row[10] is None else Lease(str(row[10]), float(row[11]))
            recipients.append(
                QueuedRecipientView(
                    str(row[5]), str(row[6]), int(row[7]), float(row[8]), row[9], lease
                )
            )
        if current is not None:
            entries.append(QueueEntry(*current, tuple(recipients)))
        return entries

    def with_local_work(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT message_id FROM queue_recipients"
            " WHERE user_id IS NOT NULL AND state = 'queued' ORDER BY message_id"
        )
        return [str(row[0]) for row in rows]

    def state_counts(self) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT state, count(*) FROM (SELECT CASE"
            " WHEN max(r.state = 'held') THEN 'held'"
            " WHEN max(r.state = 'deferred') THEN 'deferred'"
            " ELSE 'queued' END AS state"
            " FROM queue_messages q JOIN queue_recipients r ON r.message_id = q.id"
            " GROUP BY q.id) GROUP BY state"
        )
        return {str(state): int(count) for state, count in rows}

    def update_recipient(self, rcpt: Recipient) -> None:
        self.conn.execute(
            "UPDATE queue_recipients SET state = ?, attempts = ?, next_attempt = ?,"
            " last_reply = ? WHERE id = ?",
            (str(rcpt.state), rcpt.attempts, rcpt.next_attempt, rcpt.last_reply, rcpt.id),
        )

    def finish_if_done(
        self,
        message_id: str,
        final: tuple[RecipientState, ...] = (RecipientState.DELIVERED,),
    ) -> bool:
        """By default only delivered counts, so failures stay until they are reported."""
        marks = ", ".join("?" * len(final))
        pending = self.conn.execute(
            "SELECT count(*) FROM queue_recipients"
            f" WHERE message_id = ? AND state NOT IN ({marks})",
            (message_id, *(str(state) for state in final)),
        ).fetchone()[0]
        if pending:
            return False
        row = self.conn.execute(
            "SELECT blob_id FROM queue_messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            return False
        self.conn.execute("DELETE FROM queue_messages WHERE id = ?", (message_id,))
        self.tx.blobs.release(int(row[0]))
        return True

    def delete(self, message_id: str) -> None:
        message = self.require(message_id)
        now = time.time()
        for rcpt in message.recipients:
            if rcpt.state not in (RecipientState.DELIVERED, RecipientState.FAILED):
                self.tx.history.record(
                    HistoryEvent(message.id, now, rcpt.address, "deleted", "queue delete")
                )
        self.conn.execute("DELETE FROM queue_messages WHERE id = ?", (message.id,))
        self.tx.blobs.release(message.blob_id)

    # --- outbound delivery ---------------------------------------------------------------------

    def next_due(self) -> float | None:
        row = self.conn.execute(
            "SELECT min(coalesce(r.lease_until, r.next_attempt)) FROM queue_recipients r"
            " JOIN queue_messages q"
            " ON q.id = r.message_id WHERE r.user_id IS NULL AND r.state IN (?, ?)"
            " AND q.held = 0",
            WAITING,
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def claim_due(
        self,
        now: float,
        next_attempt: Callable[[float, int], float],
        *,
        lease: Lease,
        limit: int = 500,
    ) -> dict[str, list[ClaimedMessage]]:
        rows = self.conn.execute(
            "SELECT r.id, r.message_id, r.address, r.original, r.orcpt, r.notify, r.attempts,"
            " r.early_attempts, r.scheduled_attempt, r.delay_notified, q.arrival,"
            " r.next_attempt, r.lease_until"
            " FROM queue_recipients r JOIN queue_messages q ON q.id = r.message_id"
            " WHERE r.user_id IS NULL AND r.state IN (?, ?)"
            " AND coalesce(r.lease_until, r.next_attempt) <= ? AND q.held = 0"
            " ORDER BY coalesce(r.lease_until, r.next_attempt) LIMIT ?",
            (*WAITING, now, limit),
        ).fetchall()
        by_domain: dict[str, dict[str, ClaimedMessage]] = defaultdict(dict)
        loaded: dict[str, QueuedMessage | None] = {}
        for (
            rid,
            message_id,
            address,
            original,
            orcpt,
            notify,
            attempts,
            early,
            scheduled,
            notified,
            arrival,
            planned,
            lease_until,
        ) in rows:
            if message_id not in loaded:
                loaded[message_id] = self.load(message_id)
            message = loaded[message_id]
            if message is None:
                continue
            attempts += 1
            if scheduled is not None and scheduled > now:
                # An attempt made early by hand: the planned one stays where it was.
                early += 1
                upcoming = float(scheduled)
            elif lease_until is not None and planned > now:
                # A lease ended before its outcome came (the server died): this attempt
                # replaces the one lost, and the schedule stays where that one put it.
                early += 1
                upcoming = float(planned)
            else:
                upcoming = next_attempt(arrival, attempts - early)
            self.conn.execute(
                "UPDATE queue_recipients SET attempts = ?, early_attempts = ?, next_attempt = ?,"
                " scheduled_attempt = NULL, lease_node = ?, lease_until = ? WHERE id = ?",
                (attempts, early, upcoming, lease.node, lease.until, rid),
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

    def renew_leases(self, node: str, until: float) -> int:
        cursor = self.conn.execute(
            "UPDATE queue_recipients SET lease_until = ? WHERE lease_node = ?", (until, node)
        )
        return cursor.rowcount

    def release_leases(self, node: str, now: float) -> int:
        self.conn.execute(
            "UPDATE queue_recipients SET " + _EARLY + " WHERE lease_node = ? AND state IN (?, ?)",
            (now, now, node, *WAITING),
        )
        cursor = self.conn.execute(
            "UPDATE queue_recipients SET lease_node = NULL, lease_until = NULL"
            " WHERE lease_node = ?",
            (node,),
        )
        return cursor.rowcount

    def still_queued(self, message_id: str) -> bool:
        """False when the entry was deleted (`queue delete`) while its delivery was running."""
        row = self.conn.execute(
            "SELECT 1 FROM queue_messages WHERE id = ?", (message_id,)
        ).fetchone()
        return row is not None

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
        self.conn.execute(
            "UPDATE queue_recipients SET last_reply = ?, lease_node = NULL, lease_until = NULL"
            " WHERE id = ?",
            (reply, rcpt.id),
        )
        # A recipient held (`queue hold`) while the attempt ran stays held when it was deferred.
        self.conn.execute(
            "UPDATE queue_recipients SET state = ? WHERE id = ? AND (state != ? OR ? != ?)",
            (str(state), rcpt.id, HELD, str(state), str(RecipientState.DEFERRED)),
        )
        row = self.conn.execute(
            "SELECT message_id, state, next_attempt FROM queue_recipients WHERE id = ?",
            (rcpt.id,),
        ).fetchone()
        if row is not None:
            # The next attempt was set when this one was claimed (claim_due).
            upcoming = float(row[2]) if row[1] == str(RecipientState.DEFERRED) else None
            self.tx.history.record(
                HistoryEvent(
                    str(row[0]),
                    now,
                    rcpt.address,
                    str(state),
                    reply,
                    relay,
                    ip=ip,
                    tls=tls,
                    next_attempt=upcoming,
                )
            )

    def mark_delay_notified(self, rcpt: ClaimedRecipient) -> None:
        self.conn.execute("UPDATE queue_recipients SET delay_notified = 1 WHERE id = ?", (rcpt.id,))

    # --- report lines held for one delivery round ------------------------------------------------

    def hold_report_lines(self, message_id: str, kind: str, entries: Sequence[str]) -> None:
        self.conn.executemany(
            "INSERT INTO queue_reports_pending(message_id, kind, entry) VALUES (?, ?, ?)",
            [(message_id, kind, entry) for entry in entries],
        )

    def take_report_lines(self, message_id: str) -> dict[str, list[str]]:
        rows = self.conn.execute(
            "DELETE FROM queue_reports_pending WHERE message_id = ? RETURNING kind, entry",
            (message_id,),
        ).fetchall()
        by_kind: dict[str, list[str]] = defaultdict(list)
        for kind, entry in rows:
            by_kind[str(kind)].append(str(entry))
        return dict(by_kind)

    def with_held_reports(self) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT message_id FROM queue_reports_pending")
        return [str(r[0]) for r in rows]

    # --- control (`postroom queue ...`, ETRN) --------------------------------------------------

    def hold(self, message_id: str) -> int:
        """Waiting recipients (queued or deferred) become held: no attempt picks them up."""
        message = self.require(message_id)
        self.conn.execute("UPDATE queue_messages SET held = 1 WHERE id = ?", (message.id,))
        cursor = self.conn.execute(
            "UPDATE queue_recipients SET state = ? WHERE message_id = ? AND state IN (?, ?)",
            (HELD, message.id, *WAITING),
        )
        return cursor.rowcount

    def release(self, message_id: str, now: float) -> int:
        message = self.require(message_id)
        self.conn.execute("UPDATE queue_messages SET held = 0 WHERE id = ?", (message.id,))
        cursor = self.conn.execute(
            "UPDATE queue_recipients SET state = ?, " + _EARLY + " WHERE message_id = ?"
            " AND state = ?",
            (str(RecipientState.QUEUED), now, now, message.id, HELD),
        )
        return cursor.rowcount

    def retry(self, message_id: str | None, now: float) -> int:
        if message_id is None:
            cursor = self.conn.execute(
                "UPDATE queue_recipients SET " + _EARLY + " WHERE state IN (?, ?)",
                (now, now, *WAITING),
            )
        else:
            message = self.require(message_id)
            cursor = self.conn.execute(
                "UPDATE queue_recipients SET " + _EARLY + " WHERE message_id = ?"
                " AND state IN (?, ?)",
                (now, now, message.id, *WAITING),
            )
        return cursor.rowcount

    def retry_domain(self, domain: str, now: float) -> int:
        cursor = self.conn.execute(
            "UPDATE queue_recipients SET " + _EARLY + " WHERE state IN (?, ?)"
            " AND user_id IS NULL AND lower(address) LIKE ? AND next_attempt > ?",
            (now, now, *WAITING, "%@" + domain.lower().lstrip("@"), now),
        )
        return cursor.rowcount


# Due at once (`now` twice), the planned attempt kept when it is still ahead (and not
# already kept by an earlier manual retry).
_EARLY = (
    "scheduled_attempt = CASE WHEN scheduled_attempt IS NOT NULL THEN scheduled_attempt"
    " WHEN next_attempt > ? THEN next_attempt END,"
    " next_attempt = min(next_attempt, ?)"
)
