"""The abuse defences' state in SQLite: greylisting triplets and networks, blocks, sending
counts (storage/api.py `AbuseState`). Small rows written behind the answers they govern."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from postroom.storage.records import Block, SendingCount

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx


class SqliteAbuseState:
    def __init__(self, tx: SqliteTx) -> None:
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
        self.conn.executemany(
            "INSERT OR REPLACE INTO greylist_triplets(key, first_seen) VALUES (?, ?)", triplets
        )
        self.conn.executemany(
            "INSERT OR REPLACE INTO greylist_networks(network, last_seen) VALUES (?, ?)", networks
        )
        self.conn.executemany(
            "DELETE FROM greylist_triplets WHERE key = ?", [(key,) for key in forget]
        )

    def prune_greylist(self, triplets_before: float, networks_before: float) -> int:
        gone = self.conn.execute(
            "DELETE FROM greylist_triplets WHERE first_seen < ?", (triplets_before,)
        ).rowcount
        gone += self.conn.execute(
            "DELETE FROM greylist_networks WHERE last_seen < ?", (networks_before,)
        ).rowcount
        return int(gone)

    def greylist_lookup(self, key: str, network: str) -> tuple[float | None, float | None]:
        triplet = self.conn.execute(
            "SELECT first_seen FROM greylist_triplets WHERE key = ?", (key,)
        ).fetchone()
        passed = self.conn.execute(
            "SELECT last_seen FROM greylist_networks WHERE network = ?", (network,)
        ).fetchone()
        return (
            None if triplet is None else float(triplet[0]),
            None if passed is None else float(passed[0]),
        )

    def blocks(self, now: float) -> list[Block]:
        rows = self.conn.execute(
            "SELECT kind, client, account, until, reason FROM abuse_blocks WHERE until > ?"
            " ORDER BY kind, client, account",
            (now,),
        )
        return [
            Block(str(kind), str(client), str(account), float(until), str(reason))
            for kind, client, account, until, reason in rows
        ]

    def add_block(self, block: Block) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO abuse_blocks(kind, client, account, until, reason)"
            " VALUES (?, ?, ?, ?, ?)",
            (block.kind, block.client, block.account, block.until, block.reason),
        )

    def clear_blocks(self, client: str | None = None, account: str | None = None) -> int:
        where, args = [], []
        if client is not None:
            where.append("client = ?")
            args.append(client)
        if account is not None:
            where.append("account = ?")
            args.append(account)
        sql = "DELETE FROM abuse_blocks" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self.conn.execute(sql, args).rowcount)

    def prune_blocks(self, now: float) -> int:
        return int(self.conn.execute("DELETE FROM abuse_blocks WHERE until <= ?", (now,)).rowcount)

    def sending_counts(self) -> list[SendingCount]:
        rows = self.conn.execute(
            "SELECT account, window_start, messages, recipients FROM sending_counts"
            " ORDER BY account"
        )
        return [
            SendingCount(str(a), float(w), int(cast(int, m)), int(cast(int, r)))
            for a, w, m, r in rows
        ]

    def save_sending_counts(self, counts: Sequence[SendingCount]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO sending_counts(account, window_start, messages, recipients)"
            " VALUES (?, ?, ?, ?)",
            [(c.account, c.window_start, c.messages, c.recipients) for c in counts],
        )

    def sending_count(self, account: str) -> SendingCount | None:
        row = self.conn.execute(
            "SELECT window_start, messages, recipients FROM sending_counts WHERE account = ?",
            (account,),
        ).fetchone()
        if row is None:
            return None
        return SendingCount(account, float(row[0]), int(row[1]), int(row[2]))

    def add_sending_counts(
        self, deltas: Sequence[SendingCount], current_after: float
    ) -> list[SendingCount]:
        after = []
        for c in sorted(deltas, key=lambda c: c.account):
            row = self.conn.execute(
                "INSERT INTO sending_counts(account, window_start, messages, recipients)"
                " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (account) DO UPDATE SET"
                " messages = iif(window_start > ?5, messages + ?3, ?3),"
                " recipients = iif(window_start > ?5, recipients + ?4, ?4),"
                " window_start = iif(window_start > ?5, window_start, ?2)"
                " RETURNING window_start, messages, recipients",
                (c.account, c.window_start, c.messages, c.recipients, current_after),
            ).fetchone()
            after.append(SendingCount(c.account, float(row[0]), int(row[1]), int(row[2])))
        return after

    def clear_sending_counts(self, account: str | None = None) -> int:
        if account is None:
            return int(self.conn.execute("DELETE FROM sending_counts").rowcount)
        return int(
            self.conn.execute("DELETE FROM sending_counts WHERE account = ?", (account,)).rowcount
        )
