"""One SQLite connection to the embedded store, with the repositories that use it (a `Tx`).

The file is opened in WAL mode with synchronous=FULL (every COMMIT is durable before it
returns; the server's writer syncs the WAL itself, see store.py) and migrated to the current
schema. Repository methods that write do not commit: the caller owns the transaction (the
group-commit writer, or `transaction()` here for the CLI). Blob files whose last reference went
in a transaction are unlinked once it has committed; mailboxes whose messages changed are
collected in `touched` for the writer to announce.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from postroom.storage import private
from postroom.storage.sqlite.abuse import SqliteAbuseState
from postroom.storage.sqlite.accounts import SqliteAccounts
from postroom.storage.sqlite.blobs import SqliteBlobs, SqliteSummaries
from postroom.storage.sqlite.dkim_keys import SqliteDkimKeys
from postroom.storage.sqlite.dmarc import SqliteDmarc
from postroom.storage.sqlite.errors import open_failure
from postroom.storage.sqlite.history import SqliteHistory
from postroom.storage.sqlite.junk import SqliteJunk
from postroom.storage.sqlite.mailboxes import SqliteMailboxes
from postroom.storage.sqlite.messages import SqliteMessages
from postroom.storage.sqlite.queue import SqliteQueue
from postroom.storage.sqlite.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from postroom.storage.sqlite.secrets import SqliteSecrets
from postroom.storage.sqlite.sieve import SqliteSieve
from postroom.storage.sqlite.web import SqliteWebLogins

DB_NAME = "postroom.db"
BLOB_DIR = "blobs"


class SqliteTx:
    """A connection and its repositories; one per thread that uses the store."""

    def __init__(self, data_dir: Path, *, readonly: bool = False) -> None:
        """Open (and, unless `readonly`, create and migrate) the database; StorageFailure,
        naming the path and the fix, when it cannot be used."""
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        self.blob_dir = data_dir / BLOB_DIR
        # Mailboxes whose messages changed in the current transaction (the store wakes the
        # IMAP sessions that have them open once it commits).
        self.touched: set[int] = set()
        # Blob files (relative to blob_dir) to unlink once the transaction has committed.
        self.unlink: list[str] = []
        try:
            self.conn = self._connect(readonly)
        except (OSError, sqlite3.Error) as error:
            raise open_failure(error, self.path) from None
        self.blobs = SqliteBlobs(self)
        self.summaries = SqliteSummaries(self)
        self.accounts = SqliteAccounts(self)
        self.mailboxes = SqliteMailboxes(self)
        self.messages = SqliteMessages(self)
        self.queue = SqliteQueue(self)
        self.dmarc = SqliteDmarc(self)
        self.history = SqliteHistory(self)
        self.secrets = SqliteSecrets(self)
        self.dkim_keys = SqliteDkimKeys(self)
        self.junk = SqliteJunk(self)
        self.sieve = SqliteSieve(self)
        self.abuse = SqliteAbuseState(self)
        self.web = SqliteWebLogins(self)

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if not readonly:
            private.make_data_dir(self.data_dir)
            # SQLite makes the -wal and -shm files with the database file's mode.
            private.create_missing(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                # WAL + FULL: every COMMIT is fsynced before it returns (the durability
                # contract).
                conn.execute("PRAGMA synchronous = FULL")
                # It writes (the schema version at least): a read-only file fails here, at
                # once, not at the first message.
                _migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; blob files released inside are unlinked after it."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            self.unlink.clear()
            raise
        self.conn.execute("COMMIT")
        self.unlink_released()

    def savepoint(self) -> Savepoint:
        """A nested unit: an exception inside undoes only what was done inside, then rises."""
        return Savepoint(self)

    def unlink_released(self) -> None:
        """Remove the files of blobs whose last reference went (after the commit)."""
        paths, self.unlink = self.unlink, []
        for relative in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.blob_dir / relative)


def _migrate(conn: sqlite3.Connection) -> None:
    # executescript commits on its own; the schema is idempotent (IF NOT EXISTS).
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
    (stored,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if int(stored) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for version in range(int(stored) + 1, SCHEMA_VERSION + 1):
            for step in MIGRATIONS.get(version, ()):
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Savepoint:
    """SAVEPOINT ... RELEASE, or ROLLBACK TO on an exception (a class, not a generator: local
    delivery takes one for every accepted message). Every one has the same name: ROLLBACK TO
    and RELEASE reach the innermost of that name, so they nest, and the statements stay the
    same three (sqlite3 prepares each distinct text anew)."""

    __slots__ = ("_mark", "_tx")

    def __init__(self, tx: SqliteTx) -> None:
        self._tx = tx
        self._mark = 0

    def __enter__(self) -> None:
        self._mark = len(self._tx.unlink)
        self._tx.conn.execute("SAVEPOINT nested")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        conn = self._tx.conn
        if kind is not None:
            conn.execute("ROLLBACK TO nested")
            del self._tx.unlink[self._mark :]
        conn.execute("RELEASE nested")


def stored_version(data_dir: Path) -> int:
    """The schema version of the database in `data_dir`, read without changing anything
    (0: there is none yet); StorageFailure, naming the path and the fix, when it is unreadable."""
    path = data_dir / DB_NAME
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise open_failure(error, path) from None
    return 0 if row is None else int(row[0])
