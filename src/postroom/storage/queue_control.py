"""Queue control for `postroom queue ...`: show, hold, release, retry and delete entries.

Operations on a `Database` inside the caller's transaction. Holding moves every recipient that
is still waiting (queued or deferred) to `held`, so no delivery attempt picks it up; releasing
makes them due at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from postroom.model.queue import QueuedMessage, RecipientState
from postroom.storage.database import Database, StoreError

WAITING = (str(RecipientState.QUEUED), str(RecipientState.DEFERRED))


@dataclass(frozen=True, slots=True)
class Attempt:
    recipient: str
    when: float
    reply: str


def require_message(db: Database, message_id: str) -> QueuedMessage:
    message = db.load_message(message_id.upper())
    if message is None:
        raise StoreError(f"no queued message {message_id}")
    return message


def hold(db: Database, message_id: str) -> int:
    message = require_message(db, message_id)
    db.conn.execute("UPDATE queue_messages SET held = 1 WHERE id = ?", (message.id,))
    cursor = db.conn.execute(
        "UPDATE queue_recipients SET state = ? WHERE message_id = ? AND state IN (?, ?)",
        (str(RecipientState.HELD), message.id, *WAITING),
    )
    return cursor.rowcount


def release(db: Database, message_id: str) -> int:
    message = require_message(db, message_id)
    db.conn.execute("UPDATE queue_messages SET held = 0 WHERE id = ?", (message.id,))
    cursor = db.conn.execute(
        "UPDATE queue_recipients SET state = ?, next_attempt = ?"
        " WHERE message_id = ? AND state = ?",
        (str(RecipientState.QUEUED), time.time(), message.id, str(RecipientState.HELD)),
    )
    return cursor.rowcount


def retry(db: Database, message_id: str | None) -> int:
    """Make waiting recipients due now: of one message, or of the whole queue."""
    now = time.time()
    if message_id is None:
        cursor = db.conn.execute(
            "UPDATE queue_recipients SET next_attempt = ? WHERE state IN (?, ?)", (now, *WAITING)
        )
    else:
        message = require_message(db, message_id)
        cursor = db.conn.execute(
            "UPDATE queue_recipients SET next_attempt = ? WHERE message_id = ? AND state IN (?, ?)",
            (now, message.id, *WAITING),
        )
    return cursor.rowcount


def retry_domain(db: Database, domain: str) -> int:
    """RFC 1985 ETRN: make the waiting recipients of one domain due now."""
    cursor = db.conn.execute(
        "UPDATE queue_recipients SET next_attempt = ? WHERE state IN (?, ?) AND user_id IS NULL"
        " AND lower(address) LIKE ?",
        (time.time(), *WAITING, "%@" + domain.lower().lstrip("@")),
    )
    return cursor.rowcount


def delete(db: Database, message_id: str) -> str | None:
    """Remove an entry and its recipients; returns a blob file to unlink, if it was the last use."""
    message = require_message(db, message_id)
    db.conn.execute("DELETE FROM queue_messages WHERE id = ?", (message.id,))
    return db.release_blob(message.blob_id)


def attempts(db: Database, message_id: str) -> list[Attempt]:
    rows = db.conn.execute(
        "SELECT r.address, a.time, a.reply FROM queue_attempts a"
        " JOIN queue_recipients r ON r.id = a.recipient_id WHERE r.message_id = ?"
        " ORDER BY a.time",
        (message_id.upper(),),
    )
    return [Attempt(str(r[0]), float(r[1]), str(r[2])) for r in rows]
