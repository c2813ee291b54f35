"""The abuse defences' state in PostgreSQL: greylisting triplets and networks, blocks, sending
counts (storage.api.AbuseState). Small rows written behind the answers they govern."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from postroom.storage.records import Block, SendingCount

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx


class PgAbuseState:
    def __init__(self, tx: PgTx) -> None:
        self.conn = tx.conn

    def greylist_triplets(self) -> list[tuple[str, float]]:
        rows = self.conn.execute(
            "SELECT key, first_seen FROM greylist_triplets ORDER BY first_seen"
        )
        return [(str(key), float(seen)) for key, seen in rows]

    def greylist_networks(self) -> list[tuple[str, float]]:
        rows = self.conn.execute(
            "SELECT network, last_seen FROM greylist_networks ORDER BY network"
        )
        return [(str(network), float(seen)) for network, seen in rows]

    def save_greylist(
        self,
        triplets: Sequence[tuple[str, float]],
        networks: Sequence[tuple[str, float]],
        forget: Sequence[str] = (),
    ) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO greylist_triplets(key, first_seen) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET first_seen = excluded.first_seen",
                triplets,
            )
            cursor.executemany(
                "INSERT INTO greylist_networks(network, last_seen) VALUES (%s, %s)"
                " ON CONFLICT (network) DO UPDATE SET last_seen = excluded.last_seen",
                networks,
            )
        if forget:
            self.conn.execute("DELETE FROM greylist_triplets WHERE key = ANY(%s)", (list(forget),))

    def prune_greylist(self, triplets_before: float, networks_before: float) -> int:
        gone = self.conn.execute(
            "DELETE FROM greylist_triplets WHERE first_seen < %s", (triplets_before,)
        ).rowcount
        gone += self.conn.execute(
            "DELETE FROM greylist_networks WHERE last_seen < %s", (networks_before,)
        ).rowcount
        return gone

    def greylist_lookup(self, key: str, network: str) -> tuple[float | None, float | None]:
        row = self.conn.execute(
            "SELECT (SELECT first_seen FROM greylist_triplets WHERE key = %s),"
            " (SELECT last_seen FROM greylist_networks WHERE network = %s)",
            (key, network),
        ).fetchone()
        if row is None:
            return None, None
        return (
            None if row[0] is None else float(row[0]),
            None if row[1] is None else float(row[1]),
        )

    def blocks(self, now: float) -> list[Block]:
        rows = self.conn.execute(
            "SELECT kind, client, account, until, reason FROM abuse_blocks WHERE until > %s"
            " ORDER BY kind, client, account",
            (now,),
        )
        return [
            Block(str(kind), str(client), str(account), float(until), str(reason))
            for kind, client, account, until, reason in rows
        ]

    def add_block(self, block: Block) -> None:
        self.conn.execute(
            "INSERT INTO abuse_blocks(kind, client, account, until, reason)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (kind, client, account)"
            " DO UPDATE SET until = excluded.until, reason = excluded.reason",
            (block.kind, block.client, block.account, block.until, block.reason),
        )

    def clear_blocks(self, client: str | None = None, account: str | None = None) -> int:
        cursor = self.conn.execute(
            "DELETE FROM abuse_blocks WHERE (%s::text IS NULL OR client = %s)"
            " AND (%s::text IS NULL OR account = %s)",
            (client, client, account, account),
        )
        return cursor.rowcount

    def prune_blocks(self, now: float) -> int:
        return self.conn.execute("DELETE FROM abuse_blocks WHERE until <= %s", (now,)).rowcount

    def sending_counts(self) -> list[SendingCount]:
        rows = self.conn.execute(
            "SELECT account, window_start, messages, recipients FROM sending_counts"
            " ORDER BY account"
        )
        return [SendingCount(str(a), float(w), int(m), int(r)) for a, w, m, r in rows]

    def save_sending_counts(self, counts: Sequence[SendingCount]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO sending_counts(account, window_start, messages, recipients)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (account) DO UPDATE"
                " SET window_start = excluded.window_start, messages = excluded.messages,"
                " recipients = excluded.recipients",
                [(c.account, c.window_start, c.messages, c.recipients) for c in counts],
            )

    def sending_count(self, account: str) -> SendingCount | None:
        row = self.conn.execute(
            "SELECT window_start, messages, recipients FROM sending_counts WHERE account = %s",
            (account,),
        ).fetchone()
        if row is None:
            return None
        return SendingCount(account, float(row[0]), int(row[1]), int(row[2]))

    def add_sending_counts(
        self, deltas: Sequence[SendingCount], current_after: float
    ) -> list[SendingCount]:
        after = []
        for c in sorted(deltas, key=lambda c: c.account):  # one order: no deadlock between nodes
            row = self.conn.execute(
                "INSERT INTO sending_counts AS s(account, window_start, messages, recipients)"
                " VALUES (%(a)s, %(w)s, %(m)s, %(r)s) ON CONFLICT (account) DO UPDATE SET"
                " messages = CASE WHEN s.window_start > %(after)s"
                " THEN s.messages + excluded.messages ELSE excluded.messages END,"
                " recipients = CASE WHEN s.window_start > %(after)s"
                " THEN s.recipients + excluded.recipients ELSE excluded.recipients END,"
                " window_start = CASE WHEN s.window_start > %(after)s"
                " THEN s.window_start ELSE excluded.window_start END"
                " RETURNING window_start, messages, recipients",
                {
                    "a": c.account,
                    "w": c.window_start,
                    "m": c.messages,
                    "r": c.recipients,
                    "after": current_after,
                },
            ).fetchone()
            assert row is not None  # an upsert returns its row
            after.append(SendingCount(c.account, float(row[0]), int(row[1]), int(row[2])))
        return after

    def clear_sending_counts(self, account: str | None = None) -> int:
        cursor = self.conn.execute(
            "DELETE FROM sending_counts WHERE %s::text IS NULL OR account = %s", (account, account)
        )
        return cursor.rowcount
