"""Delivery history in SQLite: each message's envelope and its recipients' events, kept after
the message leaves the queue, until pruned ([queue] keep_history)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from postroom.model.queue import QueuedMessage
from postroom.storage.records import HistoryEvent, MessageTrace

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx


class SqliteHistory:
    def __init__(self, tx: SqliteTx) -> None:
        self.tx = tx
        self.conn = tx.conn

    def arrived(self, message: QueuedMessage) -> None:
        env = message.envelope
        self.conn.execute(
            "INSERT OR IGNORE INTO message_history(id, arrival, sender, size, client_addr,"
            " client_helo, protocol, auth_user) VALUES (?,?,?,?,?,?,?,?)",
            (
                message.id,
                env.arrival,
                env.sender,
                message.size,
                env.client_addr,
                env.client_helo,
                env.protocol,
                env.auth_user,
            ),
        )

    def record(self, event: HistoryEvent) -> None:
        self.conn.execute(
            "INSERT INTO history_events(message_id, time, recipient, event, reply, relay)"
            " VALUES (?,?,?,?,?,?)",
            (event.message_id, event.time, event.recipient, event.event, event.reply, event.relay),
        )

    def trace(self, message_id: str) -> MessageTrace | None:
        message_id = message_id.upper()
        row = self.conn.execute(
            "SELECT id, arrival, sender, size, client_addr, client_helo, protocol, auth_user"
            " FROM message_history WHERE id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            return None
        events = tuple(
            HistoryEvent(message_id, float(t), str(rcpt), str(event), str(reply), relay)
            for t, rcpt, event, reply, relay in self.conn.execute(
                "SELECT time, recipient, event, reply, relay FROM history_events"
                " WHERE message_id = ? ORDER BY time, rowid",
                (message_id,),
            )
        )
        return MessageTrace(
            str(row[0]),
            float(row[1]),
            str(row[2]),
            int(row[3]),
            str(row[4]),
            str(row[5]),
            str(row[6]),
            str(row[7]),
            events,
        )

    def prune(self, before: float, limit: int = 5000) -> int:
        gone = [
            str(r[0])
            for r in self.conn.execute(
                "SELECT id FROM message_history WHERE arrival < ? LIMIT ?", (before, limit)
            )
        ]
        for start in range(0, len(gone), 500):
            chunk = gone[start : start + 500]
            marks = ",".join("?" * len(chunk))
            self.conn.execute(f"DELETE FROM history_events WHERE message_id IN ({marks})", chunk)
            self.conn.execute(f"DELETE FROM message_history WHERE id IN ({marks})", chunk)
        # Events of messages whose arrival was never recorded, by their own age.
        self.conn.execute(
            "DELETE FROM history_events WHERE rowid IN"
            " (SELECT rowid FROM history_events WHERE time < ? LIMIT ?)",
            (before, limit),
        )
        return len(gone)
