"""Server-wide secrets in PostgreSQL (storage.api.Secrets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx


class PgSecrets:
    def __init__(self, tx: PgTx) -> None:
        self.conn = tx.conn

    def get(self, name: str) -> bytes | None:
        row = self.conn.execute("SELECT value FROM secrets WHERE name = %s", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def get_or_create(self, name: str, make: Callable[[], bytes]) -> bytes:
        found = self.get(name)
        if found is not None:
            return found
        value = make()
        # Another node may have made it since: the first one stored wins.
        self.conn.execute(
            "INSERT INTO secrets(name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (name, value),
        )
        kept = self.get(name)
        assert kept is not None
        return kept
