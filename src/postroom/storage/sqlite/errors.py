"""SQLite's and the file system's errors as the store's `StorageFailure` (storage/records.py).

What the disk or the database file did (full, I/O error, read-only, damaged, cannot be opened)
is a `StorageFailure`; what our own SQL did wrong (a syntax error, a broken constraint) is not:
that is a bug, and keeps its traceback.
"""

from __future__ import annotations

import errno
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


# What to do about a database that cannot be opened, by primary result code.
_SQLITE_FIXES = {
    sqlite3.SQLITE_READONLY: "make it and its directory writable by the user postroom runs as",
    sqlite3.SQLITE_PERM: "make it and its directory writable by the user postroom runs as",
    sqlite3.SQLITE_CANTOPEN: (
        "it must be a file postroom can create and write, in a directory it can write"
    ),
    sqlite3.SQLITE_NOTADB: (
        "restore it from a backup, or point data_dir at the directory that holds the database"
    ),
    sqlite3.SQLITE_CORRUPT: "it is damaged: restore it from a backup",
    sqlite3.SQLITE_FULL: "free some space on its disk",
    sqlite3.SQLITE_BUSY: "another program holds it locked: stop that program",
}
_OS_FIXES = {
    errno.EACCES: "make it writable by the user postroom runs as",
    errno.EPERM: "make it writable by the user postroom runs as (see also chattr)",
    errno.EROFS: "it is on a read-only file system: mount it read-write",
    errno.ENOSPC: "free some space on its disk",
    errno.EDQUOT: "free some space within the quota of the user postroom runs as",
    errno.ENOTDIR: "a file stands where a directory must be: move it away",
}


def open_failure(error: OSError | sqlite3.Error, db_path: Path) -> StorageFailure:
    """The `StorageFailure` for an error while opening the store: one line naming the path,
    what is wrong and what to do about it."""
    if isinstance(error, OSError):
        path = error.filename or db_path.parent
        fix = _OS_FIXES.get(error.errno or 0, "check it and the disk it is on")
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        return StorageFailure(f"{path}: {error.strerror}; {fix}", full=full)
    code = (error.sqlite_errorcode or 0) & 0xFF
    fix = _SQLITE_FIXES.get(code, "check it and the disk it is on")
    return StorageFailure(f"{db_path}: {error}; {fix}", full=code == sqlite3.SQLITE_FULL)
