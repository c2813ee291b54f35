"""The web admin's browser sessions and API tokens in SQLite (schema 11: web_sessions,
api_tokens), each row found by the SHA-256 of its secret; users' app passwords (schema 12:
app_passwords, argon2 hashes)."""

from __future__ import annotations

import sqlite3
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

    def add_app_password(self, user_id: int, name: str, password_hash: str, now: float) -> bool:
        try:
            self.conn.execute(
                "INSERT INTO app_passwords(user_id, name, password_hash, created)"
                " VALUES (?, ?, ?, ?)",
                (user_id, name, password_hash, now),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def app_passwords(self, user_id: int) -> list[tuple[str, float]]:
        rows = self.conn.execute(
            "SELECT name, created FROM app_passwords WHERE user_id = ? ORDER BY name", (user_id,)
        )
        return [(str(name), float(created)) for name, created in rows]

    def app_password_hashes(self, user_id: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT password_hash FROM app_passwords WHERE user_id = ?", (user_id,)
        )
        return [str(row[0]) for row in rows]

    def delete_app_password(self, user_id: int, name: str) -> bool:
        cursor = self.conn.execute(
            "DELETE FROM app_passwords WHERE user_id = ? AND name = ?", (user_id, name)
        )
        return cursor.rowcount > 0
