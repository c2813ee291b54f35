"""SQLite's and the file system's errors as the store's `StorageFailure` (storage/records.py).

What the disk or the database file did (full, I/O error, read-only, damaged, cannot be opened)
is a `StorageFailure`; what our own SQL did wrong (a syntax error, a broken constraint) is not:
that is a bug, and keeps its traceback.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from postroom.storage.records import StorageFailure, os_failure

# Primary result codes (https://sqlite.org/rescode.html) that come from the storage.
STORAGE_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOLFS,
        sqlite3.SQLITE_NOTADB,
    }
)


def as_failure(error: BaseException, db_path: Path) -> StorageFailure | None:
    """The `StorageFailure` that `error` is, or None when it is something else."""
    if isinstance(error, StorageFailure):
        return error
    if isinstance(error, OSError):
        return os_failure(error)
    if isinstance(error, sqlite3.Error):
        code = (error.sqlite_errorcode or 0) & 0xFF  # the extended code's primary part
        if code in STORAGE_CODES:
            return StorageFailure(f"{db_path}: {error}", full=code == sqlite3.SQLITE_FULL)
    return None
