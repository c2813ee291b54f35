"""One store thread's connection to PostgreSQL, opened again as soon as it is needed after the
server broke it (a restart, a failover, a network cut).

The store's writer and each reader thread hold one `Link` each (store.py). Not a pool's
background reconnection with exponential backoff: that leaves a server whose database is back
without connections for as long as the last pause (tens of seconds after a minute's outage),
and makes work wait for a connection instead of failing. Here, while the database is down,
each piece of work tries to connect once and fails at once as a temporary error (`451`, IMAP
`NO`: errors.py) — at most `connect_timeout` when the host does not answer at all — and the
first one after it is back connects and goes through. A connection the server closed while it was
idle (a restart) is noticed before it is used — its socket has something to read: the server's
goodbye or the end — and replaced, so the first work after a restart does not fail on it. One
broken in use fails the work on it (the transaction is gone with it, nothing of it committed)
and is closed; the next piece of work opens a new one.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable, Iterator

import psycopg
from psycopg import pq

from postroom.storage.postgresql.connection import Connection


class Link:
    """A connection for one thread, made by `connect` when there is none or it is broken."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._conn: Connection | None = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """The connection, idle (no transaction open) when handed out and when given back;
        psycopg.OperationalError when the database cannot be reached."""
        conn = self._conn
        if conn is None or not _usable(conn):
            self.close()
            conn = self._conn = self._connect()
        try:
            yield conn
        finally:
            self._settle(conn)

    def _settle(self, conn: Connection) -> None:
        """Drop a broken connection; end what a failure left open on a working one."""
        if conn.broken or conn.closed:
            self.close()
            return
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def _usable(conn: Connection) -> bool:
    """Whether an idle connection may be used: the server sends nothing unasked to an idle
    connection that does not LISTEN but its error when it ends it (a shutdown, a terminated
    backend) and the end itself; so anything to read means it is ending (or, rarely, a notice
    worth one new connection)."""
    if conn.closed or conn.broken:
        return False
    poller = select.poll()  # not select(): the server's descriptors go past FD_SETSIZE
    try:
        poller.register(conn.fileno(), select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.Error):
        return False
