"""Server-wide secrets in SQLite (the database file is 0600 in a 0700 data_dir)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx


class SqliteSecrets:
    def __init__(self, tx: SqliteTx) -> None:
        self.conn = tx.conn

    def get(self, name: str) -> bytes | None:
        row = self.conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def get_or_create(self, name: str, make: Callable[[], bytes]) -> bytes:
        found = self.get(name)
        if found is not None:
            return found
        value = make()
        self.conn.execute("INSERT INTO secrets(name, value) VALUES (?, ?)", (name, value))
        return value
