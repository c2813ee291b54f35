"""The web admin's browser sessions and API tokens in SQLite (schema 10: web_sessions,
api_tokens), each row found by the SHA-256 of its secret."""

from __future__ import annotations

from typing import TYPE_CHECKING

from postroom.storage.records import UserRecord, WebSession
from postroom.storage.sqlite.accounts import user_of

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx

_USER = "u.id, u.address, u.password_hash, u.scram, u.admin"


class SqliteWebLogins:
    def __init__(self, tx: SqliteTx) -> None:
        self.conn = tx.conn

    def add_session(self, id_hash: bytes, user_id: int, csrf: str, now: float) -> None:
        self.conn.execute(
            "INSERT INTO web_sessions(id_hash, user_id, csrf, created, last_seen)"
            " VALUES (?, ?, ?, ?, ?)",
            (id_hash, user_id, csrf, now, now),
        )

    def session(self, id_hash: bytes) -> WebSession | None:
        row = self.conn.execute(
            f"SELECT {_USER}, s.csrf, s.created, s.last_seen FROM web_sessions s"
            " JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?",
            (id_hash,),
        ).fetchone()
        if row is None:
            return None
        return WebSession(user_of(row), str(row[5]), float(row[6]), float(row[7]))

    def touch_session(self, id_hash: bytes, now: float) -> None:
        self.conn.execute("UPDATE web_sessions SET last_seen = ? WHERE id_hash = ?", (now, id_hash))

    def delete_session(self, id_hash: bytes) -> None:
        self.conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (id_hash,))

    def delete_sessions(self, user_id: int, keep: bytes | None = None) -> int:
        cursor = self.conn.execute(
            "DELETE FROM web_sessions WHERE user_id = ? AND id_hash IS NOT ?", (user_id, keep)
        )
        return cursor.rowcount

    def prune_sessions(self, idle_before: float, created_before: float) -> int:
        cursor = self.conn.execute(
            "DELETE FROM web_sessions WHERE last_seen < ? OR created < ?",
            (idle_before, created_before),
        )
        return cursor.rowcount

    def add_token(self, id_hash: bytes, user_id: int, name: str, now: float) -> None:
        self.conn.execute(
            "INSERT INTO api_tokens(id_hash, user_id, name, created) VALUES (?, ?, ?, ?)",
            (id_hash, user_id, name, now),
        )

    def token_user(self, id_hash: bytes) -> UserRecord | None:
        row = self.conn.execute(
            f"SELECT {_USER} FROM api_tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.id_hash = ?",
            (id_hash,),
        ).fetchone()
        return user_of(row) if row else None
