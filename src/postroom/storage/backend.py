"""Which store implementation serves: the one place outside the backends that names them.

The embedded SQLite store (storage/sqlite/) keeps everything in the data directory; with a
PostgreSQL DSN (`[storage] backend = "postgresql"`, config_storage.py) the PostgreSQL store
(storage/postgresql/) keeps it in that database, and the data directory holds only content on
its way in and the CLI's signal files. Both behind the same `Store` and `DirectStore`.

The PostgreSQL modules (and psycopg with them, some 10 MiB) are imported only when that backend
is chosen: a server on the embedded store does not carry them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from postroom.storage.api import DirectStore, Store
from postroom.storage.migration import Source, Target
from postroom.storage.sqlite import schema as sqlite_schema
from postroom.storage.sqlite.connection import DB_NAME
from postroom.storage.sqlite.connection import stored_version as sqlite_version
from postroom.storage.sqlite.export import SqliteExport
from postroom.storage.sqlite.store import SqliteDirect, SqliteStore


def server_store(
    data_dir: Path,
    *,
    batch_max: int = 256,
    batch_wait: float = 0.0,
    database: str | None = None,
    password: str | None = None,
    lock_timeout: float = 5.0,
    statement_timeout: float = 60.0,
    start_wait: float = 60.0,
) -> Store:
    """The store for `postroom serve` (not opened yet: call `open()`); `database`: the
    PostgreSQL DSN to use instead of SQLite in data_dir, with its `password`, the timeouts of
    its statements and how long to try to reach it at start (seconds; config_storage.py)."""
    if database is not None:
        from postroom.storage.postgresql.store import PgStore, Timeouts

        return PgStore(
            database,
            data_dir,
            password=password,
            batch_max=batch_max,
            batch_wait=batch_wait,
            start_wait=start_wait,
            timeouts=Timeouts(lock_timeout, statement_timeout),
        )
    return SqliteStore(data_dir, batch_max=batch_max, batch_wait=batch_wait)


def direct_store(
    data_dir: Path, *, database: str | None = None, password: str | None = None
) -> DirectStore:
    """The store for one CLI command, open; close it when done."""
    if database is not None:
        from postroom.storage.postgresql.store import PgDirect

        return PgDirect(database, data_dir, password=password)
    return SqliteDirect(data_dir)


@dataclass(frozen=True)
class SchemaState:
    """A store's schema version against the one this postroom migrates to."""

    where: str  # the database: a file, or a PostgreSQL DSN without its password
    found: int  # 0: postroom has not made its tables there yet
    current: int


def schema(
    data_dir: Path, *, database: str | None = None, password: str | None = None
) -> SchemaState:
    """The store's schema version, read without migrating anything; StorageFailure when the
    store cannot be reached."""
    if database is not None:
        from postroom.storage.postgresql import schema as pg_schema
        from postroom.storage.postgresql.store import schema_state

        where, found = schema_state(database, password)
        return SchemaState(where, found, pg_schema.SCHEMA_VERSION)
    found = sqlite_version(data_dir)
    return SchemaState(str(data_dir / DB_NAME), found, sqlite_schema.SCHEMA_VERSION)


def sqlite_export(data_dir: Path) -> Source:
    """The SQLite store in `data_dir` read for `storage migrate`, in one read transaction;
    StorageFailure when there is none or it cannot be read."""
    return SqliteExport(data_dir)


def postgresql_import(dsn: str, password: str | None) -> Target:
    """The PostgreSQL database `storage migrate` copies into, its schema made or migrated;
    StorageFailure when it cannot be used, ForeignTarget when it holds others' tables."""
    from postroom.storage.postgresql.import_ import PgImport

    return PgImport(dsn, password)
