"""Which store implementation serves: the one place outside the backends that names them.

The embedded SQLite store (storage/sqlite/) keeps everything in the data directory; with a
PostgreSQL DSN (`[storage] backend = "postgresql"`, config_storage.py) the PostgreSQL store
(storage/postgresql/) keeps it in that database, and the data directory holds only content on
its way in and the CLI's signal files. Both behind the same `Store` and `DirectStore`.
"""

from __future__ import annotations

from pathlib import Path

from postroom.storage.api import DirectStore, Store
from postroom.storage.postgresql.store import PgDirect, PgStore
from postroom.storage.sqlite.store import SqliteDirect, SqliteStore


def server_store(
    data_dir: Path,
    *,
    batch_max: int = 256,
    batch_wait: float = 0.0,
    database: str | None = None,
    password: str | None = None,
) -> Store:
    """The store for `postroom serve` (not opened yet: call `open()`); `database`: the
    PostgreSQL DSN to use instead of SQLite in data_dir, with its `password`."""
    if database is not None:
        return PgStore(
            database, data_dir, password=password, batch_max=batch_max, batch_wait=batch_wait
        )
    return SqliteStore(data_dir, batch_max=batch_max, batch_wait=batch_wait)


def direct_store(
    data_dir: Path, *, database: str | None = None, password: str | None = None
) -> DirectStore:
    """The store for one CLI command, open; close it when done."""
    if database is not None:
        return PgDirect(database, data_dir, password=password)
    return SqliteDirect(data_dir)
