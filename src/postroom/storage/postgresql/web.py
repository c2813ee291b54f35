"""The web admin's browser sessions and API tokens, each row found by the SHA-256 of its
secret, and users' app passwords (argon2 hashes), in PostgreSQL (storage.api.WebLogins)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from postroom.storage.postgresql.accounts import USER_COLUMNS, user_of
from postroom.storage.records import UserRecord, WebSession

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx


class PgWebLogins:
    def __init__(self, tx: PgTx) -> None:
        self.conn = tx.conn

    def add_session(self, id_hash: bytes, user_id: int, csrf: str, now: float) -> None:
        self.conn.execute(
            "INSERT INTO web_sessions(id_hash, user_id, csrf, created, last_seen)"
            " VALUES (%s, %s, %s, %s, %s)",
            (id_hash, user_id, csrf, now, now),
        )

    def session(self, id_hash: bytes) -> WebSession | None:
        row = self.conn.execute(
            f"SELECT {USER_COLUMNS}, s.csrf, s.created, s.last_seen FROM web_sessions s"
            " JOIN users u ON u.id = s.user_id WHERE s.id_hash = %s",
            (id_hash,),
        ).fetchone()
        if row is None:
            return None
        return WebSession(user_of(row), str(row[5]), float(row[6]), float(row[7]))

    def touch_session(self, id_hash: bytes, now: float) -> None:
        self.conn.execute(
            "UPDATE web_sessions SET last_seen = %s WHERE id_hash = %s", (now, id_hash)
        )

    def delete_session(self, id_hash: bytes) -> None:
        self.conn.execute("DELETE FROM web_sessions WHERE id_hash = %s", (id_hash,))

    def delete_sessions(self, user_id: int, keep: bytes | None = None) -> int:
        cursor = self.conn.execute(
            "DELETE FROM web_sessions WHERE user_id = %s AND id_hash IS DISTINCT FROM %s::bytea",
            (user_id, keep),
        )
        return cursor.rowcount

    def prune_sessions(self, idle_before: float, created_before: float) -> int:
        cursor = self.conn.execute(
            "DELETE FROM web_sessions WHERE last_seen < %s OR created < %s",
            (idle_before, created_before),
        )
        return cursor.rowcount

    def add_token(self, id_hash: bytes, user_id: int, name: str, now: float) -> None:
        self.conn.execute(
            "INSERT INTO api_tokens(id_hash, user_id, name, created) VALUES (%s, %s, %s, %s)",
            (id_hash, user_id, name, now),
        )

    def token_user(self, id_hash: bytes) -> UserRecord | None:
        row = self.conn.execute(
            f"SELECT {USER_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.id_hash = %s",
            (id_hash,),
        ).fetchone()
        return user_of(row) if row else None

    def add_app_password(self, user_id: int, name: str, password_hash: str, now: float) -> bool:
        row = self.conn.execute(
            "INSERT INTO app_passwords(user_id, name, password_hash, created)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
            (user_id, name, password_hash, now),
        ).fetchone()
        return row is not None

    def app_passwords(self, user_id: int) -> list[tuple[str, float]]:
        rows = self.conn.execute(
            "SELECT name, created FROM app_passwords WHERE user_id = %s ORDER BY name",
            (user_id,),
        )
        return [(str(name), float(created)) for name, created in rows]

    def app_password_hashes(self, user_id: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT password_hash FROM app_passwords WHERE user_id = %s", (user_id,)
        )
        return [str(row[0]) for row in rows]

    def delete_app_password(self, user_id: int, name: str) -> bool:
        cursor = self.conn.execute(
            "DELETE FROM app_passwords WHERE user_id = %s AND name = %s", (user_id, name)
        )
        return cursor.rowcount > 0
