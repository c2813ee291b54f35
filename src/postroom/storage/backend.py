"""Which store implementation serves: the one place outside `storage/sqlite/` that names it.

Today the embedded SQLite store is the only backend; the PostgreSQL one (a later issue) is
chosen here from the configuration, behind the same `Store` and `DirectStore` interfaces.
"""

from __future__ import annotations

from pathlib import Path

from postroom.storage.api import DirectStore, Store
from postroom.storage.sqlite.store import SqliteDirect, SqliteStore


def server_store(data_dir: Path, *, batch_max: int = 256, batch_wait: float = 0.0) -> Store:
    """The store for `postroom serve` (not opened yet: call `open()`)."""
    return SqliteStore(data_dir, batch_max=batch_max, batch_wait=batch_wait)


def direct_store(data_dir: Path) -> DirectStore:
    """The store for one CLI command, open; close it when done."""
    return SqliteDirect(data_dir)
