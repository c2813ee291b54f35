"""The PostgreSQL store: one writer thread with group commit, reader threads, a connection each.

`PgStore` has the shape of `storage.api.Store` (the SQLite store's, store.py there). Writes are
jobs (functions of a `PgTx`). The writer takes every job that is waiting and runs them in ONE
transaction, each inside its own SAVEPOINT (a job that fails undoes its own changes only), then
COMMITs; PostgreSQL returns from COMMIT once the WAL holding it is flushed
(synchronous_commit=on), and only then are the jobs answered — a `250` never runs ahead of the
commit that holds the message. A batch of only `durable=False` jobs (IMAP flags) is committed
with synchronous_commit=off: a crash may undo it, never mail. A job's `then` runs once its
batch is committed and answered, before the next batch, in an unsynced transaction of its own
(a failure is logged and undoes nothing else). Reads run on READ_THREADS threads of their
own, each in a REPEATABLE READ, READ ONLY transaction: one consistent snapshot, never waiting
for the writer.

The database is reached through psycopg 3 (synchronous API: the store's functions run on its
own threads, so nothing here touches the event loop); the writer and each reader thread hold
one connection (link.py), READ_THREADS + 1 in all: one the server broke fails the work on it
(a temporary error, nothing of it committed) and the thread's next work connects again, so
work during an outage fails at once and the first after it goes through. Every one has
lock_timeout and statement_timeout set (`Timeouts`), and a group commit waits for locks
another client holds for lock_timeout in all (`_run`). Messages name the database
by `errors.describe`, never with its password. The schema is created and migrated at `open`
(schema.py); a database that does not answer then (down, starting) is tried again for
START_WAIT seconds, one warning each time, while one that refuses (password, no such
database) fails at once.

`PgDirect` is the same store for one CLI command: the repositories on one connection, in
transactions the command opens.

Content on its way in spills to files under `data_dir/tmp` (as with SQLite); signals from the
CLI to the server are the data directory's stamp files (storage/signals.py) and, for the other
nodes on the same database, NOTIFYs (notify.py). A group commit that changed mailboxes
announces them with a NOTIFY in its own transaction, so the other nodes' IMAP sessions hear of
committed changes only; a serving store (opened on an event loop) runs a `notify.Listener`
that hands the other nodes' announcements to the same `on_mailbox_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import pq

from postroom.storage import private
from postroom.storage.api import Signal, Tx
from postroom.storage.buffer import ContentBuffer
from postroom.storage.commit_stats import CommitStats
from postroom.storage.postgresql.connection import Connection, PgTx
from postroom.storage.postgresql.errors import (
    as_failure,
    describe,
    open_failure,
    timed_out,
    worth_waiting,
)
from postroom.storage.postgresql.link import Link
from postroom.storage.postgresql.notify import (
    Changes,
    Listener,
    PgSignals,
    announce_changes,
    announce_signal,
    new_origin,
)
from postroom.storage.postgresql.schema import NewerSchema, migrate, stored_version
from postroom.storage.records import StorageFailure

log = logging.getLogger("postroom.store")

T = TypeVar("T")
READ_THREADS = 2
CONNECT_TIMEOUT = 10  # seconds to reach the server (libpq connect_timeout)
START_WAIT = 60.0  # seconds `serve` waits for a database that does not answer at start
# After a job of a group commit timed out, what the rest of the batch may wait for a lock (ms).
SPENT_LOCK_TIMEOUT_MS = 10
TMP_DIR = "tmp"  # under data_dir: content on its way in (ContentBuffer's spill files)

Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


@dataclass
class _Job:
    fn: Callable[[PgTx], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    durable: bool = True
    early: asyncio.Future[Any] | None = None  # gets fn's result before the commit
    then: Callable[[PgTx, Any], None] | None = None  # see Store.write


@dataclass
class _Made:
    """IMAP summaries a reader made, handed to the writer to keep (as derived work)."""

    summaries: list[tuple[int, bytes]]


@dataclass
class _Read:
    fn: Callable[[PgTx], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_STOP = object()
Derived = tuple[Callable[[PgTx, Any], None], Any]  # work derived from a commit, and its input


@dataclass(frozen=True)
class Timeouts:
    """How long one statement of the serving store may wait for a lock another client holds
    (`lock_timeout`), or run at all (`statement_timeout`), in seconds: past them PostgreSQL
    cancels it (SQLSTATE 55P03, 57014) and the work fails as a temporary error, so a lock held
    elsewhere never holds the writer, and every session behind it, for good."""

    lock: float = 5.0
    statement: float = 60.0

    def options(self) -> str:
        """As libpq `options` (`-c` settings for the session), in milliseconds."""
        lock, statement = (max(1, round(value * 1000)) for value in (self.lock, self.statement))
        return f"-c lock_timeout={lock} -c statement_timeout={statement}"


def connection_options(password: str | None, timeouts: Timeouts | None = None) -> dict[str, Any]:
    """What every connection of the store is opened with: autocommit (the store says BEGIN
    and COMMIT itself), and synchronous_commit on whatever the server's default, so a COMMIT
    returns only once it is durable (a batch of only non-durable jobs turns it off for itself);
    with `timeouts` (the serving store's connections), lock_timeout and statement_timeout.
    Those that make or migrate the schema, or LISTEN, have none: a node waits for another's
    migration."""
    settings = "-c synchronous_commit=on"
    if timeouts is not None:
        settings += " " + timeouts.options()
    options: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT,
        "options": settings,
    }
    if password is not None:
        options["password"] = password
    return options


def connect(dsn: str, password: str | None) -> Connection:
    return psycopg.connect(dsn, **connection_options(password))


def open_database(dsn: str, password: str | None, wait: float = 0.0) -> Connection:
    """A connection to a database migrated to the current schema; StorageFailure, naming the
    database (never the password) and the fix, when it cannot be used. A database that does
    not answer (down, starting, unreachable) is tried again for `wait` seconds, a warning
    logged each time; one that refuses (password, no such database) fails at once."""
    where = describe(dsn)
    deadline = time.monotonic() + wait
    pause = 0.5
    while True:
        try:
            conn = connect(dsn, password)
            break
        except psycopg.Error as error:
            if not worth_waiting(error) or time.monotonic() + pause > deadline:
                raise open_failure(error, where) from None
            log.warning("%s; trying again in %g s", open_failure(error, where), pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
    try:
        found = migrate(conn)
    except NewerSchema as error:
        conn.close()
        raise StorageFailure(f"{where}: {error}") from None
    except psycopg.Error as error:
        conn.close()
        raise open_failure(error, where) from None
    if found == 0:
        log.info("made the postroom tables in %s", where)
    return conn


MailboxNews = tuple[Callable[[dict[int, int | None]], None], dict[int, int | None]]


def schema_state(dsn: str, password: str | None) -> tuple[str, int]:
    """(the database as messages name it, its schema version: 0 before postroom made its
    tables), read without changing anything; StorageFailure when it cannot be reached."""
    where = describe(dsn)
    try:
        with connect(dsn, password) as conn:
            return where, stored_version(conn)
    except psycopg.Error as error:
        raise open_failure(error, where) from None


def _settle(items: list[Outcome], news: MailboxNews | None = None) -> None:
    """On the event loop: tell sessions which mailboxes changed, then answer the jobs."""
    if news is not None:
        news[0](news[1])
    for future, value, error in items:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def _answer(
    loop: asyncio.AbstractEventLoop, items: list[Outcome], news: MailboxNews | None = None
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
        loop.call_soon_threadsafe(_settle, items, news)


class PgStore:
    """The server's store in the PostgreSQL database `dsn`; `data_dir` holds spill files."""

    def __init__(
        self,
        dsn: str,
        data_dir: Path,
        *,
        password: str | None = None,
        batch_max: int = 256,
        batch_wait: float = 0.0,
        start_wait: float = START_WAIT,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.dsn = dsn
        self.start_wait = start_wait
        self.timeouts = timeouts or Timeouts()
        self.where = describe(dsn)
        self.data_dir = data_dir
        self.tmp_dir = data_dir / TMP_DIR
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.stats = CommitStats()
        self.origin = new_origin()  # names this node in what it announces (notify.py)
        self.signals = PgSignals(data_dir, self.origin, self._send_signal)
        self.listener: Listener | None = None  # while serving on an event loop
        self._password = password
        self._links: list[Link] = []  # the writer's, then each reader's
        self._jobs: queue.SimpleQueue[_Job | _Made | object] = queue.SimpleQueue()
        self._reads: queue.SimpleQueue[_Read | object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Called on the event loop after a batch changed mailboxes: id → HIGHESTMODSEQ after the
        # commit (None when the mailbox is gone); and on the writer after each group commit.
        self.on_mailbox_change: Callable[[dict[int, int | None]], None] | None = None
        self.on_commit: Callable[[int], None] | None = None
        # Called on the event loop when the listener reconnected: what the other nodes
        # announced meanwhile is lost, so any mailbox may have changed.
        self.on_missed: Callable[[], None] | None = None

    def open(self) -> None:
        """Migrate the database and start the threads (each connects when it first has work);
        StorageFailure, naming the database or directory and the fix, when they cannot be
        used. A database that does not answer yet is waited for up to `start_wait` seconds."""
        try:
            private.make_data_dir(self.data_dir)
            private.make_dirs(self.data_dir, TMP_DIR)
            for leftover in self.tmp_dir.iterdir():
                leftover.unlink(missing_ok=True)
        except OSError as error:
            raise StorageFailure(f"{error.filename or self.data_dir}: {error.strerror}") from None
        open_database(self.dsn, self._password, self.start_wait).close()
        self._links = [Link(self._connect) for _ in range(READ_THREADS + 1)]
        writer = threading.Thread(target=self._writer_loop, name="store-write", daemon=True)
        self._threads = [writer] + [
            threading.Thread(
                target=self._reader_loop, args=(link,), name=f"store-read-{n}", daemon=True
            )
            for n, link in enumerate(self._links[1:])
        ]
        for thread in self._threads:
            thread.start()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving (a test of the store alone): nobody to tell
            return
        self.listener = Listener(
            lambda: connect(self.dsn, self._password),
            self.where,
            self.signals,
            loop,
            lambda: self.on_mailbox_change,
            lambda: self.on_missed,
        )
        self.listener.start()

    def _connect(self) -> Connection:
        return psycopg.connect(self.dsn, **connection_options(self._password, self.timeouts))

    def _send_signal(self, what: Signal) -> None:
        if self.listener is not None:
            self.listener.send(what)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        if not self._threads:
            return
        self._jobs.put(_STOP)
        for _ in range(READ_THREADS):
            self._reads.put(_STOP)
        for thread in self._threads:
            thread.join()
        self._threads = []
        for link in self._links:
            link.close()
        self._links = []

    async def write(
        self,
        fn: Callable[[Tx], T],
        *,
        durable: bool = True,
        then: Callable[[Tx, T], None] | None = None,
    ) -> T:
        """Run `fn` in the next group commit; returns once that transaction has committed
        (durable=False: without waiting for the WAL flush)."""
        return await self._write(fn, durable=durable, then=then)

    async def _write(
        self,
        fn: Callable[[PgTx], T],
        *,
        durable: bool = True,
        then: Callable[[PgTx, T], None] | None = None,
    ) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, loop, future, durable, then=then))
        return await future

    async def write_early(self, fn: Callable[[Tx], T]) -> tuple[T, asyncio.Future[None]]:
        """A `durable=False` write whose result comes back as soon as `fn` has run, with a
        future that is done once the commit is (see the SQLite store's)."""
        result, committed = self.submit_early(fn)
        return await result, committed

    def submit_early(self, fn: Callable[[Tx], T]) -> tuple[asyncio.Future[T], asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()
        committed: asyncio.Future[None] = loop.create_future()
        self._jobs.put(_Job(fn, loop, committed, False, early=result))
        return result, committed

    async def read(self, fn: Callable[[Tx], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._reads.put(_Read(fn, loop, future))
        return await future

    def new_buffer(self, name: str) -> ContentBuffer:
        return ContentBuffer(self.tmp_dir, name)

    async def write_content(self, content: ContentBuffer, then: Callable[[Tx, int], T]) -> T:
        """Store `content` as a new blob (copied from its spill file a chunk at a time) and run
        `then(tx, blob_id)` in the same group commit. The spill file is gone afterwards."""
        try:
            data = content.in_memory()
            if data is None:
                await asyncio.to_thread(content.seal)
            path = content.path

            def store(tx: PgTx) -> T:
                if data is not None:
                    blob_id = tx.blobs.add(data)
                else:
                    assert path is not None
                    blob_id = tx.blobs.add_file(path)
                return then(tx, blob_id)

            return await self._write(store)
        finally:
            content.discard()

    def _reader_loop(self, link: Link) -> None:
        while True:
            item = self._reads.get()
            if item is _STOP:
                return
            assert isinstance(item, _Read)
            tx: PgTx | None = None
            try:
                with link.connection() as conn:
                    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    tx = PgTx(conn)
                    try:
                        outcome: Outcome = (item.future, item.fn(tx), None)
                    finally:
                        _end(conn, "COMMIT")
            except BaseException as error:  # handed to the caller, like any outcome
                outcome = (item.future, None, as_failure(error, self.where) or error)
            _answer(item.loop, [outcome])
            if tx is not None and tx.summaries.made:
                self._jobs.put(_Made(tx.summaries.made))

    def _writer_loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is _STOP:
                return
            batch: list[_Job] = []
            made: list[tuple[int, bytes]] = []
            _sort(first, batch, made)
            stop = self._gather(batch, made)
            later: list[Derived] = [(_keep_summaries, made)] if made else []
            if batch:
                self._commit(batch, later)
            else:
                self._run_later(later)
            if stop:
                return

    def _announce(self, conn: Connection, touched: set[int]) -> Changes | None:
        """Before the COMMIT: the changed mailboxes' HIGHESTMODSEQs, NOTIFYed to the other
        nodes in this transaction (delivered at COMMIT). In a savepoint: when this fails the
        jobs commit all the same (None), and sessions hear with the next changes announced."""
        conn.execute("SAVEPOINT announce")
        try:
            changes = _highest_modseqs(conn, touched)
            announce_changes(conn, self.origin, changes)
        except psycopg.Error as error:
            if conn.broken or conn.closed:
                raise
            conn.execute("ROLLBACK TO SAVEPOINT announce")
            log.warning("mailbox changes not announced: %s", as_failure(error, self.where) or error)
            return None
        conn.execute("RELEASE SAVEPOINT announce")
        return changes

    def _writer_link(self) -> Link:
        assert self._links
        return self._links[0]

    def _gather(self, batch: list[_Job], made: list[tuple[int, bytes]]) -> bool:
        """Add every job already waiting (and, with batch_wait, those arriving shortly)."""
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_max:
            try:
                remaining = deadline - time.monotonic()
                item = (
                    self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
                )
            except queue.Empty:
                break
            if item is _STOP:
                return True
            _sort(item, batch, made)
        return False

    def _commit(self, batch: list[_Job], later: list[Derived]) -> None:
        """One group commit, then the jobs' answers, then derived work (`later`, the jobs'
        `then`, the summaries readers and jobs made)."""
        link = self._writer_link()
        outcomes: list[Outcome] = []
        follow_ups = list(later)
        news: MailboxNews | None = None
        try:
            with link.connection() as conn:
                tx = PgTx(conn)
                try:
                    changes = self._run(tx, batch, outcomes, follow_ups)
                except BaseException:
                    _end(conn, "ROLLBACK")
                    raise
                if changes and self.on_mailbox_change is not None:
                    news = self.on_mailbox_change, changes
                if tx.summaries.made:  # made by jobs that read (a FETCH that sets \\Seen)
                    follow_ups.append((_keep_summaries, tx.summaries.made))
        except BaseException as raised:
            follow_ups = []
            failure = as_failure(raised, self.where)
            if failure is None:  # a bug of ours
                log.exception("group commit of %d jobs failed", len(batch))
            # A storage failure is each job's to report (one line, by whoever waits for it).
            cause: BaseException = failure or raised
            outcomes = [(job.future, None, cause) for job in batch]
            for job in batch:
                if job.early is not None:  # never ran: its caller still waits for a result
                    self._answer_early(job, None, cause)
        else:
            self.stats.record(len(batch))
            if self.on_commit is not None:
                self.on_commit(len(batch))
        by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
        for job, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append(outcome)
        for loop, items in by_loop.items():
            _answer(loop, items, news if loop is batch[0].loop else None)
        if follow_ups:  # once the jobs are answered
            self._run_later(follow_ups)

    def _run(
        self,
        tx: PgTx,
        batch: list[_Job],
        outcomes: list[Outcome],
        follow_ups: list[Derived],
    ) -> Changes | None:
        """BEGIN, each job in its savepoint, the changed mailboxes announced, COMMIT (which
        returns once durable); the changes announced.

        A batch waits for locks another client holds for lock_timeout in all, not per job:
        once one job timed out, the rest of the batch may wait SPENT_LOCK_TIMEOUT_MS for a
        lock, so jobs behind the same held lock fail at once (4xx, to be tried again) instead
        of one lock_timeout each, while those that need no held lock still commit."""
        conn = tx.conn
        spent = spend = False
        alone = len(batch) == 1  # a lone job needs no savepoint: its failure undoes it all
        conn.execute("BEGIN")
        if not any(job.durable for job in batch):
            conn.execute("SET LOCAL synchronous_commit = off")
        for job in batch:
            if not alone:
                conn.execute("SAVEPOINT job")
            try:
                value = job.fn(tx)
            except Exception as raised:
                if conn.broken or conn.closed:
                    raise  # the connection is gone, and the transaction with it: all fail
                conn.execute("ROLLBACK" if alone else "ROLLBACK TO SAVEPOINT job")
                spend = not alone and not spent and timed_out(raised)
                error = as_failure(raised, self.where) or raised
                if job.early is not None:
                    self._answer_early(job, None, error)
                    outcomes.append((job.future, None, None))  # nothing left to wait for
                else:
                    outcomes.append((job.future, None, error))
            else:
                if job.then is not None:
                    follow_ups.append((job.then, value))
                if job.early is not None:
                    self._answer_early(job, value, None)
                    value = None
                outcomes.append((job.future, value, None))
            if not alone:
                conn.execute("RELEASE SAVEPOINT job")
            if spend:  # outside the job's savepoint, so that it holds for the rest
                conn.execute(f"SET LOCAL lock_timeout = {SPENT_LOCK_TIMEOUT_MS}")
                spent, spend = True, False
        if conn.info.transaction_status != pq.TransactionStatus.INTRANS:
            return None  # a lone job failed: rolled back, nothing changed
        changes = self._announce(conn, tx.touched) if tx.touched else None
        conn.execute("COMMIT")
        return changes

    def _run_later(self, work: list[Derived]) -> None:
        """Derived work, each piece in its own savepoint, in one unsynced transaction."""
        try:
            with self._writer_link().connection() as conn:
                tx = PgTx(conn)
                try:
                    conn.execute("BEGIN")
                    conn.execute("SET LOCAL synchronous_commit = off")
                    for then, value in work:
                        conn.execute("SAVEPOINT later")
                        try:
                            then(tx, value)
                        except Exception as error:
                            self._derived_failed(error)
                            conn.execute("ROLLBACK TO SAVEPOINT later")
                        conn.execute("RELEASE SAVEPOINT later")
                    conn.execute("COMMIT")
                except BaseException:
                    _end(conn, "ROLLBACK")
                    raise
        except psycopg.Error as error:
            self._derived_failed(error)

    @staticmethod
    def _answer_early(job: _Job, value: Any, error: BaseException | None) -> None:
        early, job.early = job.early, None
        assert early is not None
        _answer(job.loop, [(early, value, error)])

    def _derived_failed(self, error: Exception) -> None:
        """Log a failure of derived work (in an except block): one line when the database
        failed, the traceback when it is a bug of ours."""
        failure = as_failure(error, self.where)
        if failure is None:
            log.exception("work derived from a commit failed (readers make it)")
        else:
            log.warning("work derived from a commit failed (readers make it): %s", failure)


def _sort(item: object, batch: list[_Job], made: list[tuple[int, bytes]]) -> None:
    """A queued item into the batch (a job) or the summaries to keep (a reader's)."""
    if isinstance(item, _Made):
        made += item.summaries
    else:
        assert isinstance(item, _Job)
        batch.append(item)


def _keep_summaries(tx: PgTx, made: list[tuple[int, bytes]]) -> None:
    tx.summaries.keep(made)


def _highest_modseqs(conn: Connection, mailboxes: set[int]) -> dict[int, int | None]:
    """Each mailbox's HIGHESTMODSEQ as committed (None: it is gone)."""
    rows = conn.execute(
        "SELECT id, highestmodseq FROM mailboxes WHERE id = ANY(%s)", (sorted(mailboxes),)
    ).fetchall()
    found: dict[int, int] = {int(mailbox): int(modseq) for mailbox, modseq in rows}
    return {mailbox: found.get(mailbox) for mailbox in sorted(mailboxes)}


def _end(conn: Connection, statement: str) -> None:
    """COMMIT or ROLLBACK an open transaction; ROLLBACK quietly on a broken connection."""
    if conn.closed or conn.info.transaction_status == pq.TransactionStatus.IDLE:
        return
    if statement == "ROLLBACK":
        with contextlib.suppress(psycopg.Error):
            conn.execute(statement)
        return
    conn.execute(statement)


class PgDirect:
    """The store for one CLI command (`storage.api.DirectStore`) on one connection."""

    def __init__(self, dsn: str, data_dir: Path, *, password: str | None = None) -> None:
        self.where = describe(dsn)
        try:
            # The signal stamps live there: a CLI command may run before any server made it.
            private.make_data_dir(data_dir)
        except OSError as error:
            raise StorageFailure(f"{error.filename or data_dir}: {error.strerror}") from None
        self._conn = open_database(dsn, password)
        self._tx = PgTx(self._conn)
        # A signal is the stamp file and a NOTIFY every serving node hears (notify.py).
        self.signals = PgSignals(data_dir, new_origin(), self._send_signal)

    def _send_signal(self, what: Signal) -> None:
        announce_signal(self._conn, self.signals.origin, what)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """BEGIN ... COMMIT (durable when it returns); ROLLBACK on an exception."""
        self._conn.execute("BEGIN")
        try:
            yield self._tx
        except BaseException:
            _end(self._conn, "ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def reader(self) -> Tx:
        """The repositories outside a transaction: each statement sees the latest commit."""
        return self._tx

    def failure(self, error: BaseException) -> StorageFailure | None:
        return as_failure(error, self.where)

    def close(self) -> None:
        self._conn.close()
