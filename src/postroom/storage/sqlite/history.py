"""Delivery history in SQLite: each message's envelope, how it was received and its recipients'
events, kept after the message leaves the queue, until pruned ([queue] keep_history).

One row per message in a table keyed by queue ID (which begins with the arrival time, so the
oldest go by a range of IDs) and events appended to it as lines of JSON: an accepted message
adds one row to one b-tree, whatever happens to it later. What a trace is looked up by (its
sender, its recipients, its Message-ID) goes in `trace_keys` in the same transaction: one
narrow row per message, keyed by queue ID too, so it is appended (an index by address would
scatter inserts over its b-tree, a page dirtied per key per commit), and pruned with it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from postroom.model.queue import QueuedMessage, queue_id_floor
from postroom.storage.history_format import (
    ADDRESS_KEY,
    message_id_key,
    reception_text,
)
from postroom.storage.history_format import event_line as _line
from postroom.storage.history_format import parse_event as _event
from postroom.storage.history_format import parse_reception as _reception
from postroom.storage.records import (
    Activity,
    HistoryEvent,
    HourActivity,
    MessageTrace,
    normalize_address,
)

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx

LOOKUP_CHUNK = 500  # queue IDs looked up per statement (SQLite bounds its parameters)


def history_keys(sender: str, events: str) -> set[str]:
    """The lookup keys of a history row kept before schema 10 (no reception): its sender and
    the recipients its events name."""
    keys = {ADDRESS_KEY + normalize_address(sender)} if sender else set()
    keys.update(
        ADDRESS_KEY + normalize_address(str(json.loads(line)[1])) for line in events.splitlines()
    )
    return keys


def keys_text(keys: Iterable[str]) -> str:
    """A message's keys as kept: one per line, a line break before the first too (so a
    search for "\n" + key + "\n" matches whole keys only; neither an address nor an
    unfolded Message-ID holds a line break)."""
    return "\n" + "".join(key + "\n" for key in keys)


class SqliteHistory:
    def __init__(self, tx: SqliteTx) -> None:
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
        reception = reception_text(message)
        lines = "".join(map(_line, events))
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO message_history(id, arrival, sender, size, client_addr,"
            " client_helo, protocol, auth_user, auth, events, reception)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
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
                lines,
                reception,
            ),
        )
        if cursor.rowcount:
            keys = {ADDRESS_KEY + normalize_address(r.address) for r in message.recipients}
            keys.update(ADDRESS_KEY + normalize_address(r.original) for r in message.recipients)
            keys.update(ADDRESS_KEY + normalize_address(e.recipient) for e in events)
            if env.sender:
                keys.add(ADDRESS_KEY + normalize_address(env.sender))
            if env.message_id:
                keys.add(message_id_key(env.message_id))
            self.conn.execute(
                "INSERT INTO trace_keys(message_id, keys) VALUES (?, ?)",
                (message.id, keys_text(keys)),
            )

    def record(self, event: HistoryEvent) -> None:
        """Appended to the message's history; a message whose arrival is not remembered keeps
        none (pruned already), unless `arrived` comes next (see `_early`)."""
        cursor = self.conn.execute(
            "UPDATE message_history SET events = events || ? WHERE id = ?",
            (_line(event), event.message_id),
        )
        if not cursor.rowcount:
            self._early.setdefault(event.message_id, []).append(event)

    def trace(self, message_id: str) -> MessageTrace | None:
        message_id = message_id.upper()
        row = self.conn.execute(
            "SELECT id, arrival, sender, size, client_addr, client_helo, protocol, auth_user,"
            " events, auth, reception FROM message_history WHERE id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            return None
        events = [_event(message_id, line) for line in str(row[8]).splitlines()]
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
            _reception(str(row[10])),
        )

    def with_address(self, address: str, limit: int) -> list[str]:
        return self._find(ADDRESS_KEY + normalize_address(address), limit)

    def with_message_id(self, message_id: str, limit: int) -> list[str]:
        return self._find(message_id_key(message_id), limit)

    def _find(self, key: str, limit: int) -> list[str]:
        # Newest first through the narrow trace_keys rows, written in queue ID order at the
        # end of their b-tree at no cost to a commit; read by a scan that stops at `limit`
        # (a lookup, not a hot path: about 0.2 s per 300,000 messages for a key none has).
        rows = self.conn.execute(
            "SELECT message_id FROM trace_keys WHERE instr(keys, ?)"
            " ORDER BY message_id DESC LIMIT ?",
            ("\n" + key + "\n", limit),
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
        # A range of the primary key (queue IDs begin with their arrival time), and the rows
        # of `also` below it looked up by key; each row's events parsed here: the dashboard's
        # read, never on a commit.
        floor = queue_id_floor(min(since, arrived_since))
        below = sorted(message_id for message_id in also if message_id < floor)
        rows = itertools.chain(
            self.conn.execute(
                "SELECT arrival, events, id FROM message_history WHERE id >= ?", (floor,)
            ),
            *(
                self.conn.execute(
                    "SELECT arrival, events, id FROM message_history WHERE id IN"
                    f" ({', '.join('?' * len(chunk))})",
                    chunk,
                )
                for chunk in (
                    below[start : start + LOOKUP_CHUNK]
                    for start in range(0, len(below), LOOKUP_CHUNK)
                )
            ),
        )
        counts: dict[int, list[int]] = {}  # hour → received, local, remote, failed
        later: set[str] = set()

        def count(moment: float, column: int) -> None:
            counts.setdefault(int(moment // 3600) * 3600, [0, 0, 0, 0])[column] += 1

        failed: list[HistoryEvent] = []
        for arrival, events, message_id in rows:
            if arrival >= until:
                later.add(str(message_id))
            elif arrival >= since:
                count(arrival, 0)
            for line in str(events).splitlines():
                moment = float(line[1 : line.index(",")])  # the time leads: [time, ...
                if moment < since:
                    continue
                if moment >= until:
                    later.add(str(message_id))
                    continue
                event = _event(str(message_id), line)
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
            " (SELECT id FROM message_history WHERE id < ? ORDER BY id LIMIT ?) RETURNING id",
            (queue_id_floor(before), limit),
        ).fetchall()
        if rows:
            # The oldest messages went: their keys are every key up to the newest of them.
            newest = max(str(row[0]) for row in rows)
            self.conn.execute("DELETE FROM trace_keys WHERE message_id <= ?", (newest,))
        return len(rows)
