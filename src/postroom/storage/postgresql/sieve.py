"""Sieve scripts, vacation replies and duplicate IDs in PostgreSQL (storage.api.SieveScripts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from postroom.storage.records import StoreError

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx


class PgSieve:
    def __init__(self, tx: PgTx) -> None:
        self.conn = tx.conn

    def put(self, user_id: int, name: str, source: str, now: float) -> None:
        self.conn.execute(
            "INSERT INTO sieve_scripts(user_id, name, source, active, changed)"
            " VALUES (%s, %s, %s, false, %s) ON CONFLICT (user_id, name)"
            " DO UPDATE SET source = excluded.source, changed = excluded.changed",
            (user_id, name, source, now),
        )

    def get(self, user_id: int, name: str) -> str | None:
        row = self.conn.execute(
            "SELECT source FROM sieve_scripts WHERE user_id = %s AND name = %s", (user_id, name)
        ).fetchone()
        return None if row is None else str(row[0])

    def scripts(self, user_id: int) -> list[tuple[str, bool]]:
        rows = self.conn.execute(
            "SELECT name, active FROM sieve_scripts WHERE user_id = %s ORDER BY name", (user_id,)
        ).fetchall()
        return [(str(name), bool(active)) for name, active in rows]

    def active(self, user_id: int) -> tuple[str, str] | None:
        row = self.conn.execute(
            "SELECT name, source FROM sieve_scripts WHERE user_id = %s AND active", (user_id,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def activate(self, user_id: int, name: str | None) -> None:
        if name is not None and self.get(user_id, name) is None:
            raise StoreError(f"no script {name}")
        # RFC 5804 §1.1: at most one active (sieve_scripts_one_active): off first, then on.
        self.conn.execute(
            "UPDATE sieve_scripts SET active = false WHERE user_id = %s AND active", (user_id,)
        )
        if name is not None:
            self.conn.execute(
                "UPDATE sieve_scripts SET active = true WHERE user_id = %s AND name = %s",
                (user_id, name),
            )

    def rename(self, user_id: int, old: str, new: str) -> None:
        if self.get(user_id, old) is None:
            raise StoreError(f"no script {old}")
        if old != new and self.get(user_id, new) is not None:
            raise StoreError(f"a script {new} exists already")
        self.conn.execute(
            "UPDATE sieve_scripts SET name = %s WHERE user_id = %s AND name = %s",
            (new, user_id, old),
        )

    def delete(self, user_id: int, name: str) -> None:
        row = self.conn.execute(
            "SELECT active FROM sieve_scripts WHERE user_id = %s AND name = %s", (user_id, name)
        ).fetchone()
        if row is None:
            raise StoreError(f"no script {name}")
        if row[0]:
            raise StoreError(f"script {name} is active")
        self.conn.execute(
            "DELETE FROM sieve_scripts WHERE user_id = %s AND name = %s", (user_id, name)
        )

    def replied(self, user_id: int, sender: str, handle: str, now: float) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM sieve_replies WHERE user_id = %s AND sender = %s AND handle = %s"
            " AND until > %s",
            (user_id, sender.lower(), handle, now),
        ).fetchone()
        return row is not None

    def record_reply(self, user_id: int, sender: str, handle: str, until: float) -> None:
        self.conn.execute(
            "INSERT INTO sieve_replies(user_id, sender, handle, until) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (user_id, sender, handle) DO UPDATE SET until = excluded.until",
            (user_id, sender.lower(), handle, until),
        )

    def seen(self, user_id: int, key: str, now: float) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM sieve_duplicates WHERE user_id = %s AND key = %s AND until > %s",
            (user_id, key, now),
        ).fetchone()
        return row is not None

    def record_seen(self, user_id: int, key: str, until: float) -> None:
        self.conn.execute(
            "INSERT INTO sieve_duplicates(user_id, key, until) VALUES (%s, %s, %s)"
            " ON CONFLICT (user_id, key) DO UPDATE SET until = excluded.until",
            (user_id, key, until),
        )

    def forget_expired(self, now: float) -> int:
        gone = self.conn.execute("DELETE FROM sieve_replies WHERE until <= %s", (now,)).rowcount
        gone += self.conn.execute("DELETE FROM sieve_duplicates WHERE until <= %s", (now,)).rowcount
        return gone
