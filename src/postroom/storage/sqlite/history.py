"""Delivery history in SQLite: each message's envelope and its recipients' events, kept after
the message leaves the queue, until pruned ([queue] keep_history).

One row per message in a table keyed by queue ID (which begins with the arrival time, so the
oldest go by a range of IDs) and events appended to it as lines of JSON: an accepted message
adds one row to one b-tree, whatever happens to it later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from postroom.model.queue import QueuedMessage, queue_id_floor
from postroom.storage.records import HistoryEvent, MessageTrace

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx


class SqliteHistory:
    def __init__(self, tx: SqliteTx) -> None:
        self.tx = tx
        self.conn = tx.conn

    def arrived(self, message: QueuedMessage, events: Sequence[HistoryEvent] = ()) -> None:
        env = message.envelope
        self.conn.execute(
            "INSERT OR IGNORE INTO message_history(id, arrival, sender, size, client_addr,"
            " client_helo, protocol, auth_user, auth, events) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                message.id,
                env.arrival,
                env.sender,
                message.size,
                env.client_addr,
                env.client_helo,
                env.protocol,
                env.auth_user,
                env.auth,
                "".join(map(_line, events)),
            ),
        )

    def record(self, event: HistoryEvent) -> None:
        """Appended to the message's history; a message whose arrival is not remembered (pruned
        already) keeps none."""
        self.conn.execute(
            "UPDATE message_history SET events = events || ? WHERE id = ?",
            (_line(event), event.message_id),
        )

    def trace(self, message_id: str) -> MessageTrace | None:
        message_id = message_id.upper()
        row = self.conn.execute(
            "SELECT id, arrival, sender, size, client_addr, client_helo, protocol, auth_user,"
            " events, auth FROM message_history WHERE id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            return None
        events = []
        for line in str(row[8]).splitlines():
            moment, recipient, event, reply, relay = json.loads(line)
            events.append(
                HistoryEvent(
                    message_id, float(moment), str(recipient), str(event), str(reply), relay
                )
            )
        events.sort(key=lambda e: e.time)  # stable: events of one moment stay in order
        return MessageTrace(
            str(row[0]),
            float(row[1]),
            str(row[2]),
            int(row[3]),
            str(row[4]),
            str(row[5]),
            str(row[6]),
            str(row[7]),
            tuple(events),
            str(row[9]),
        )

    def prune(self, before: float, limit: int = 5000) -> int:
        cursor = self.conn.execute(
            "DELETE FROM message_history WHERE id IN"
            " (SELECT id FROM message_history WHERE id < ? ORDER BY id LIMIT ?)",
            (queue_id_floor(before), limit),
        )
        return cursor.rowcount


# Made once: json.dumps with options makes an encoder for every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _line(event: HistoryEvent) -> str:
    fields = [event.time, event.recipient, event.event, event.reply, event.relay]
    return _ENCODER.encode(fields) + "\n"
