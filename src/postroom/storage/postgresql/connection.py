"""One PostgreSQL connection with the repositories that use it (the PostgreSQL `Tx`).

Connections are in autocommit mode and the store says BEGIN, SAVEPOINT and COMMIT itself, as
the SQLite store does: the group-commit writer runs several jobs in one transaction, each in a
savepoint of its own. Repository methods that write never commit. Statements are sent with
placeholders (`%s`) only; psycopg prepares the ones a connection repeats.
"""

from __future__ import annotations

from typing import Any

import psycopg

from postroom.storage.postgresql.abuse import PgAbuseState
from postroom.storage.postgresql.accounts import PgAccounts
from postroom.storage.postgresql.blobs import PgBlobs
from postroom.storage.postgresql.dkim_keys import PgDkimKeys
from postroom.storage.postgresql.dmarc import PgDmarc
from postroom.storage.postgresql.errors import as_failure, describe
from postroom.storage.postgresql.history import PgHistory
from postroom.storage.postgresql.junk import PgJunk
from postroom.storage.postgresql.mailboxes import PgMailboxes
from postroom.storage.postgresql.messages import PgMessages
from postroom.storage.postgresql.queue import PgQueue
from postroom.storage.postgresql.secrets import PgSecrets
from postroom.storage.postgresql.sieve import PgSieve
from postroom.storage.postgresql.summaries import PgSummaries
from postroom.storage.postgresql.web import PgWebLogins

Connection = psycopg.Connection[tuple[Any, ...]]


class PgTx:
    """The repositories over one connection, for one transaction (or read snapshot)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # Mailboxes whose messages changed in the current transaction (the store wakes the
        # IMAP sessions that have them open once it commits).
        self.touched: set[int] = set()
        self.summaries = PgSummaries(self)
        self.blobs = PgBlobs(self)
        self.accounts = PgAccounts(self)
        self.mailboxes = PgMailboxes(self)
        self.messages = PgMessages(self)
        self.queue = PgQueue(self)
        self.history = PgHistory(self)
        self.dmarc = PgDmarc(self)
        self.secrets = PgSecrets(self)
        self.dkim_keys = PgDkimKeys(self)
        self.junk = PgJunk(self)
        self.sieve = PgSieve(self)
        self.abuse = PgAbuseState(self)
        self.web = PgWebLogins(self)

    def savepoint(self) -> Savepoint:
        """A nested unit: an exception inside undoes only what was done inside, then rises."""
        return Savepoint(self.conn)


class Savepoint:
    """SAVEPOINT ... RELEASE, or ROLLBACK TO on an exception. Every one has the same name:
    ROLLBACK TO and RELEASE reach the innermost of that name, so they nest.

    An error of the server's state (a lock or statement timeout, a lost connection: errors.py)
    leaves it as the `StorageFailure` it is, so the callers that undo a failed part and go on
    (local delivery queues a message whose delivery failed) let it fail the whole job instead,
    as they do for the SQLite store's; their own errors (a broken constraint) stay as they are.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._execute("SAVEPOINT nested")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        if kind is None:
            self._execute("RELEASE SAVEPOINT nested")
            return
        self._execute("ROLLBACK TO SAVEPOINT nested", error)
        self._execute("RELEASE SAVEPOINT nested", error)
        if isinstance(error, psycopg.Error):
            failure = as_failure(error, self._where())
            if failure is not None:
                raise failure from error

    def _execute(self, statement: str, cause: BaseException | None = None) -> None:
        """One of the savepoint's statements; a failure of the connection (it is gone, and the
        transaction with it) as its StorageFailure."""
        try:
            self._conn.execute(statement)
        except psycopg.Error as failed:
            failure = as_failure(failed, self._where())
            if failure is None:
                raise
            raise failure from cause or failed

    def _where(self) -> str:
        return describe(self._conn.info.dsn)
