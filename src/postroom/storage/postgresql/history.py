"""Delivery history in PostgreSQL (storage.api.History): each message's envelope and how it was
received, its recipients' events, and the keys a trace is found by, kept after the message
leaves the queue until pruned ([queue] keep_history).

An event is a row of its own (inserted, never rewritten: an UPDATE in PostgreSQL writes a whole
new row version); keys are rows of `history_keys`, indexed by key. Both go with their message
(ON DELETE CASCADE). Lines are written as the SQLite store writes them
(storage/history_format.py).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from postroom.model.queue import QueuedMessage, queue_id_floor
from postroom.storage.history_format import (
    ADDRESS_KEY,
    event_line,
    message_id_key,
    parse_event,
    parse_reception,
    reception_text,
)
from postroom.storage.records import (
    Activity,
    HistoryEvent,
    HourActivity,
    MessageTrace,
    normalize_address,
)

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx


class PgHistory:
    def __init__(self, tx: PgTx) -> None:
        self.tx = tx
        self.conn = tx.conn
        # Events of a message recorded before its arrival in the same job (a report queued
        # while it is delivered locally, before the spool writes its history): the next
        # `arrived` takes its own and drops the rest (a job that failed before its arrival).
        self._early: dict[str, list[HistoryEvent]] = {}

    def arrived(self, message: QueuedMessage, events: Sequence[HistoryEvent] = ()) -> None:
        env = message.envelope
        if self._early:
            events = [*self._early.pop(message.id, ()), *events]
            self._early.clear()
        row = self.conn.execute(
            "INSERT INTO message_history(id, arrival, sender, size, client_addr, client_helo,"
            " protocol, auth_user, auth, reception) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (id) DO NOTHING RETURNING 1",
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
                reception_text(message),
            ),
        ).fetchone()
        if row is None:
            return
        self._insert_events(events)
        keys = {ADDRESS_KEY + normalize_address(r.address) for r in message.recipients}
        keys.update(ADDRESS_KEY + normalize_address(r.original) for r in message.recipients)
        keys.update(ADDRESS_KEY + normalize_address(e.recipient) for e in events)
        if env.sender:
            keys.add(ADDRESS_KEY + normalize_address(env.sender))
        if env.message_id:
            keys.add(message_id_key(env.message_id))
        self.conn.execute(
            "INSERT INTO history_keys(key, message_id) SELECT key, %s FROM unnest(%s::text[])"
            " AS key ON CONFLICT DO NOTHING",
            (message.id, sorted(keys)),
        )

    def _insert_events(self, events: Sequence[HistoryEvent]) -> None:
        if events:
            with self.conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO history_events(message_id, moment, line) VALUES (%s, %s, %s)",
                    [(e.message_id, e.time, event_line(e)) for e in events],
                )

    def record(self, event: HistoryEvent) -> None:
        """Kept with the message's history; a message whose arrival is not remembered keeps
        none (pruned already), unless `arrived` comes next (see `_early`)."""
        cursor = self.conn.execute(
            "INSERT INTO history_events(message_id, moment, line)"
            " SELECT id, %s, %s FROM message_history WHERE id = %s",
            (event.time, event_line(event), event.message_id),
        )
        if not cursor.rowcount:
            self._early.setdefault(event.message_id, []).append(event)

    def trace(self, message_id: str) -> MessageTrace | None:
        message_id = message_id.upper()
        row = self.conn.execute(
            "SELECT id, arrival, sender, size, client_addr, client_helo, protocol, auth_user,"
            " auth, reception FROM message_history WHERE id = %s",
            (message_id,),
        ).fetchone()
        if row is None:
            return None
        lines = self.conn.execute(
            "SELECT line FROM history_events WHERE message_id = %s ORDER BY seq", (message_id,)
        ).fetchall()
        events = [parse_event(message_id, str(line)) for (line,) in lines]
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
            str(row[8]),
            parse_reception(str(row[9])),
        )

    def with_address(self, address: str, limit: int) -> list[str]:
        return self._find(ADDRESS_KEY + normalize_address(address), limit)

    def with_message_id(self, message_id: str, limit: int) -> list[str]:
        return self._find(message_id_key(message_id), limit)

    def _find(self, key: str, limit: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT message_id FROM history_keys WHERE key = %s ORDER BY message_id DESC LIMIT %s",
            (key, limit),
        )
        return [str(row[0]) for row in rows]

    def activity(
        self,
        since: float,
        arrived_since: float,
        failures: int,
        until: float = math.inf,
        also: Collection[str] = (),
    ) -> Activity:
        # Messages by a range of queue IDs (they begin with their arrival time) and those of
        # `also`; their events parsed here: the dashboard's read, never on a commit.
        floor = queue_id_floor(min(since, arrived_since))
        rows = self.conn.execute(
            "SELECT id, arrival FROM message_history WHERE id >= %s OR id = ANY(%s)",
            (floor, sorted(also)),
        ).fetchall()
        counts: dict[int, list[int]] = {}  # hour → received, local, remote, failed
        later: set[str] = set()

        def count(moment: float, column: int) -> None:
            counts.setdefault(int(moment // 3600) * 3600, [0, 0, 0, 0])[column] += 1

        for message_id, arrival in rows:
            if arrival >= until:
                later.add(str(message_id))
            elif arrival >= since:
                count(arrival, 0)
        events = self.conn.execute(
            "SELECT e.message_id, e.moment, e.line FROM history_events e"
            " JOIN message_history h ON h.id = e.message_id"
            " WHERE (h.id >= %s OR h.id = ANY(%s)) AND e.moment >= %s ORDER BY e.seq",
            (floor, sorted(also), since),
        ).fetchall()
        failed: list[HistoryEvent] = []
        for message_id, moment, line in events:
            if moment >= until:
                later.add(str(message_id))
                continue
            event = parse_event(str(message_id), str(line))
            if event.event == "delivered":
                count(event.time, 1 if event.relay is None else 2)
            elif event.event == "failed":
                count(event.time, 3)
                failed.append(event)
        failed.sort(key=lambda e: e.time, reverse=True)
        return Activity(
            tuple(HourActivity(hour, *numbers) for hour, numbers in sorted(counts.items())),
            tuple(failed[:failures]),
            frozenset(later),
        )

    def prune(self, before: float, limit: int = 5000) -> int:
        rows = self.conn.execute(
            "DELETE FROM message_history WHERE id IN"
            " (SELECT id FROM message_history WHERE id < %s ORDER BY id LIMIT %s) RETURNING id",
            (queue_id_floor(before), limit),
        ).fetchall()
        return len(rows)
