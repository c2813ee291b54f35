"""Server-wide secrets in SQLite (the database file is 0600 in a 0700 data_dir)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx


class SqliteSecrets:
    def __init__(self, tx: SqliteTx) -> None:
        self.conn = tx.conn

    def get_or_create(self, name: str, make: Callable[[], bytes]) -> bytes:
        row = self.conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return bytes(row[0])
        value = make()
        self.conn.execute("INSERT INTO secrets(name, value) VALUES (?, ?)", (name, value))
        return value
