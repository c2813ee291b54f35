"""The embedded store (SQLite + files): one writer thread with group commit, one reader thread.

`SqliteStore` implements `storage.api.Store`. Writes are jobs (functions of a `Tx`). The writer
takes every job that is waiting, runs them in ONE transaction (each inside its own SAVEPOINT, so
one failing job fails alone), fsyncs the directories of any new blob files and commits; the
syncer thread (wal_sync.py) fsyncs the WAL and only then resolves each job's future, while the
writer already runs the next batch. Sessions that finish DATA at the same moment therefore share
one fsync (group commit, as Postfix and mox avoid one sync per message), and the sync of one
batch overlaps the work of the next. A batch of only `durable=False` jobs (IMAP flags) needs no
sync. A job's `then` (data derived from its result that readers can also make themselves, such
as an appended message's IMAP summary) waits until the writer has nothing else to do
(DERIVED_IDLE), or until DERIVED_BACKLOG of them wait; they are then made in slices, each slice
one unsynced transaction. The IMAP summaries readers made for blobs that had none are kept the
same way (blobs.py). Checkpoints (WAL pages copied into the database file) run on a thread
of their own. The event loop never touches the disk. Blob files released by a batch are unlinked
once it has committed.

`SqliteDirect` is the same store for one CLI command: the repositories on one connection, in
transactions the command opens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from postroom.storage import private
from postroom.storage.api import Tx
from postroom.storage.buffer import ContentBuffer
from postroom.storage.commit_stats import CommitStats
from postroom.storage.records import StorageFailure, os_failure
from postroom.storage.signals import FileSignals
from postroom.storage.sqlite.connection import BLOB_DIR, DB_NAME, SqliteTx
from postroom.storage.sqlite.errors import as_failure, open_failure
from postroom.storage.sqlite.wal_sync import Answers, Outcome, WalSyncer, settle

log = logging.getLogger("postroom.store")

T = TypeVar("T")
# A reset WAL is cut back to this size (journal_size_limit); about this much of new pages
# are copied into the database per checkpoint.
WAL_KEEP_BYTES = 4 * 1024 * 1024
WAL_LIMIT_BYTES = 64 * 1024 * 1024  # past this the writer itself checkpoints (see below)
CHECKPOINT_IDLE = 1.0  # seconds without a checkpoint request after which one is taken
# Derived work (a job's `then`) is done once the writer has waited this long for a job, or,
# under a steady stream of jobs, between batches once this many wait; so many at a time.
DERIVED_IDLE = 0.02
DERIVED_BACKLOG = 256
DERIVED_SLICE = 16
TMP_DIR = "tmp"  # under BLOB_DIR: content on its way in (ContentBuffer's spill files)


@dataclass
class _Job:
    fn: Callable[[SqliteTx], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    sync_dirs: tuple[Path, ...] = ()
    durable: bool = True
    early: asyncio.Future[Any] | None = None  # gets fn's result before the commit
    then: Callable[[SqliteTx, Any], None] | None = None  # see Store.write


@dataclass
class _Made:
    """IMAP summaries the reader made, handed to the writer to keep (as derived work)."""

    summaries: list[tuple[int, bytes, str | int]]


@dataclass
class _Read:
    fn: Callable[[SqliteTx], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_STOP = object()


class SqliteStore:
    """Owns the database file and the blob directory under `data_dir`."""

    def __init__(self, data_dir: Path, *, batch_max: int = 256, batch_wait: float = 0.0) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / BLOB_DIR
        self.tmp_dir = self.blob_dir / TMP_DIR
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.stats = CommitStats()
        self.signals = FileSignals(data_dir)
        self._jobs: queue.SimpleQueue[_Job | _Made | object] = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._checkpoint_thread: threading.Thread | None = None
        self._checkpoint_due = threading.Event()
        self._stopping = False
        self._wal_path = self.db_path.with_name(DB_NAME + "-wal")
        self._wal_checkpointed_at = 0  # WAL size when the last checkpoint was asked for
        self.wal_limit = WAL_LIMIT_BYTES
        self._catch_up = False  # set by the checkpoint thread after a checkpoint
        self._syncer = WalSyncer(self._wal_path, self._sync_failure)
        # Committed jobs' `then` with their results, oldest first (writer thread only).
        self._later: collections.deque[tuple[Callable[[SqliteTx, Any], None], Any]] = (
            collections.deque()
        )
        # Reads go to one thread of their own, started by the first one (plain queue and
        # loop callbacks: a read is a hop on the hot path of every IMAP command).
        self._reads: queue.SimpleQueue[_Read | object] = queue.SimpleQueue()
        self._reader_thread: threading.Thread | None = None
        # Called on the event loop after a batch changed mailboxes: id → HIGHESTMODSEQ after the
        # commit (None when the mailbox is gone).
        self.on_mailbox_change: Callable[[dict[int, int | None]], None] | None = None
        self.on_missed: Callable[[], None] | None = None  # one process: nothing is missed
        # Called on the writer thread after each group commit with its number of jobs.
        self.on_commit: Callable[[int], None] | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_NAME

    def open(self) -> None:
        """Prepare data_dir and start the threads; StorageFailure, naming the path and the
        fix, when the directory or the database cannot be used."""
        try:
            writer_db = self._prepare()
        except (OSError, sqlite3.Error) as error:
            raise open_failure(error, self.db_path) from None
        try:
            checkpoint_db = SqliteTx(self.data_dir, readonly=True)
        except BaseException:
            writer_db.close()
            raise
        self._checkpoint_thread = threading.Thread(
            target=self._checkpoint_loop,
            args=(checkpoint_db,),
            name="store-checkpoint",
            daemon=True,
        )
        self._checkpoint_thread.start()
        self._writer_thread = threading.Thread(
            target=self._writer_loop, args=(writer_db,), name="store-write", daemon=True
        )
        self._syncer.start()
        self._writer_thread.start()

    def _prepare(self) -> SqliteTx:
        """The directories, the writer's connection, and the warnings."""
        private.make_data_dir(self.data_dir)
        private.make_dirs(self.data_dir, BLOB_DIR, TMP_DIR)
        # Blob files that never made it into a committed transaction are garbage.
        for leftover in self.tmp_dir.iterdir():
            leftover.unlink(missing_ok=True)
        writer_db = SqliteTx(self.data_dir)
        try:
            # Checkpoints (WAL pages copied into the database, then fsynced) run on their own
            # thread, so no commit waits for one; the WAL file shrinks back to WAL_KEEP_BYTES
            # once reset, which makes its size tell how much waits to be copied.
            writer_db.conn.execute("PRAGMA wal_autocheckpoint = 0")
            writer_db.conn.execute("PRAGMA synchronous = NORMAL")  # _commit syncs the WAL
            writer_db.conn.execute(f"PRAGMA journal_size_limit = {WAL_KEEP_BYTES}")
        except BaseException:
            writer_db.close()
            raise
        for path, fix in ((self.data_dir, "chmod 700"), (self.db_path, "chmod 600")):
            current = private.exposed(path)
            if current is not None:
                log.warning(
                    "%s is open to group or others (mode %04o): mail, password hashes and keys"
                    " are readable by other local users; fix: %s %s",
                    path,
                    current,
                    fix,
                    path,
                )
        return writer_db

    def close(self) -> None:
        if self._writer_thread is not None:
            self._jobs.put(_STOP)
            self._writer_thread.join()
            self._writer_thread = None
        if self._checkpoint_thread is not None:
            self._stopping = True
            self._checkpoint_due.set()
            self._checkpoint_thread.join()
            self._checkpoint_thread = None
        if self._reader_thread is not None:
            self._reads.put(_STOP)
            self._reader_thread.join()
            self._reader_thread = None

    async def write(
        self,
        fn: Callable[[Tx], T],
        *,
        durable: bool = True,
        then: Callable[[Tx, T], None] | None = None,
    ) -> T:
        return await self._write(fn, (), durable=durable, then=then)

    async def _write(
        self,
        fn: Callable[[SqliteTx], T],
        sync_dirs: Iterable[Path],
        *,
        durable: bool = True,
        then: Callable[[SqliteTx, T], None] | None = None,
    ) -> T:
        """Run `fn` in the next group commit; returns once its transaction is durable.

        `durable=False` is for changes a crash may undo without breaking a promise (IMAP flags,
        \\Recent claims): a batch made only of those commits without waiting for the disk; the
        next durable commit (or checkpoint) makes them durable too, in order (SQLite WAL).

        `then(tx, result)`, once `fn` has committed, is run later by the writer, when it has
        had no job for DERIVED_IDLE (or DERIVED_BACKLOG wait), in a transaction that is not
        synced (the next durable commit syncs it): work kept off the answer's path, for data
        derived from `fn`'s that readers can also make themselves when it is missing (a crash
        can lose it). Failures are logged and undo nothing else.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, loop, future, tuple(sync_dirs), durable, then=then))
        return await future

    async def write_early(self, fn: Callable[[Tx], T]) -> tuple[T, asyncio.Future[None]]:
        """A `durable=False` write whose result comes back as soon as `fn` has run, before the
        commit, with a future that is done once the commit is. The caller answers its client
        meanwhile and awaits that future before it reads again (so it reads its own writes;
        later writes are ordered behind it anyway). A failed commit then undoes a change
        already reported, as a crash may undo any change that is not durable (IMAP flags);
        that future carries the error.
        """
        result, committed = self.submit_early(fn)
        return await result, committed

    def submit_early(self, fn: Callable[[Tx], T]) -> tuple[asyncio.Future[T], asyncio.Future[None]]:
        """`write_early` without waiting: (future of fn's result, future of the commit)."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()
        committed: asyncio.Future[None] = loop.create_future()
        self._jobs.put(_Job(fn, loop, committed, (), False, early=result))
        return result, committed

    def new_buffer(self, name: str) -> ContentBuffer:
        return ContentBuffer(self.tmp_dir, name)

    async def write_content(self, content: ContentBuffer, then: Callable[[Tx, int], T]) -> T:
        """A large content's file is fsynced and moved into place first, so the commit that
        references it is never ahead of its bytes. Whatever fails, neither its spill file nor
        its blob file stays behind (a `StorageFailure` when the disk or the database failed).
        """
        relative: str | None = None
        try:
            data = content.in_memory()
            sync_dirs: list[Path] = []
            if data is None:
                name = f"{time.time_ns():x}-{id(content):x}"
                relative = f"{name[-2:]}/{name}"
                final = self.blob_dir / relative
                await asyncio.to_thread(_seal_and_place, content, final)
                sync_dirs += [final.parent, self.blob_dir]

            def write(tx: SqliteTx) -> T:
                if relative is None:
                    assert data is not None
                    return then(tx, tx.blobs.add(data))
                return then(tx, tx.blobs.add_file(content.size, relative))

            return await self._write(write, sync_dirs)
        except Exception:
            # Not when cancelled: the job may still commit, and must find its file.
            if relative is not None:
                with contextlib.suppress(OSError):
                    (self.blob_dir / relative).unlink(missing_ok=True)
            raise
        finally:
            content.discard()  # its spill file, when it was not moved into place

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` on the reader thread's connection (WAL: it never waits for the writer)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._reader_thread is None:
            self._reader_thread = threading.Thread(
                target=self._reader_loop, name="store-read", daemon=True
            )
            self._reader_thread.start()
        self._reads.put(_Read(fn, loop, future))
        return await future

    def _reader_loop(self) -> None:
        db: SqliteTx | None = None
        try:
            while True:
                item = self._reads.get()
                if item is _STOP:
                    return
                assert isinstance(item, _Read)
                outcome: tuple[asyncio.Future[Any], Any, BaseException | None]
                try:
                    if db is None:
                        db = SqliteTx(self.data_dir, readonly=True)
                    outcome = (item.future, item.fn(db), None)
                except BaseException as error:  # handed to the caller, like any outcome
                    outcome = (item.future, None, as_failure(error, self.db_path) or error)
                if db is not None and db.summaries.made:
                    self._jobs.put(_Made(db.summaries.take_made()))
                settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = [outcome]
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    item.loop.call_soon_threadsafe(settle, settled, None)
        finally:
            if db is not None:
                db.close()

    def _writer_loop(self, db: SqliteTx) -> None:
        idle = False  # the last wait for a job timed out: derived work goes on slice by slice
        try:
            while True:
                try:
                    if not self._later:
                        first = self._jobs.get()
                    elif idle:
                        first = self._jobs.get_nowait()
                    else:
                        first = self._jobs.get(timeout=DERIVED_IDLE)
                except queue.Empty:
                    idle = True
                    self._run_later(db, DERIVED_SLICE)
                    continue
                idle = False
                if first is _STOP:
                    return
                if isinstance(first, _Made):
                    self._later.append((_keep_summaries, first.summaries))
                    continue
                assert isinstance(first, _Job)
                batch = [first]
                stop = self._gather(batch)
                self._commit(db, batch)
                if stop:
                    return
                if len(self._later) >= DERIVED_BACKLOG:
                    self._run_later(db, DERIVED_SLICE)
        finally:
            while self._later:
                self._run_later(db, DERIVED_SLICE)
            self._syncer.stop()  # answers what was committed
            db.close()

    def _checkpoint_loop(self, db: SqliteTx) -> None:
        """Copy WAL pages into the database when the writer asks, and once writes pause."""
        done_at = 0  # commits counted when the last checkpoint started
        try:
            while True:
                asked = self._checkpoint_due.wait(timeout=CHECKPOINT_IDLE)
                self._checkpoint_due.clear()
                if self._stopping:
                    return
                commits = self.stats.batches
                if not asked and commits == done_at:
                    continue  # nothing written since the last checkpoint
                done_at = commits
                try:
                    # PASSIVE: copies what it can without ever blocking the writer.
                    db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as error:
                    log.warning("WAL checkpoint failed: %s", error)
                else:
                    self._catch_up = True
        finally:
            db.close()

    def _note_wal_size(self, db: SqliteTx) -> None:
        """After a commit (writer thread): ask for a checkpoint once the WAL has grown enough."""
        try:
            size = os.stat(self._wal_path).st_size
        except OSError:
            return
        if size < self._wal_checkpointed_at:
            self._wal_checkpointed_at = 0  # the WAL was reset (and cut back to WAL_KEEP_BYTES)
        # A reset WAL is rewritten from its start: growth past WAL_KEEP_BYTES is new pages.
        if size > self._wal_checkpointed_at + WAL_KEEP_BYTES:
            self._wal_checkpointed_at = size
            self._checkpoint_due.set()
        if self._catch_up or size > self.wal_limit:
            # The checkpoint thread copied the bulk; the writer copies the pages committed
            # since (few), so the next transaction starts the WAL over from its beginning:
            # overwriting a small WAL is cheaper than growing a large one. Past wal_limit it
            # does so in any case.
            self._catch_up = False
            try:
                db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as error:
                log.warning("WAL checkpoint failed: %s", error)

    def _gather(self, batch: list[_Job]) -> bool:
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
            if isinstance(item, _Made):
                self._later.append((_keep_summaries, item.summaries))
                continue
            assert isinstance(item, _Job)
            batch.append(item)
        return False

    def _commit(self, db: SqliteTx, batch: list[_Job]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        follow_ups: list[tuple[Callable[[SqliteTx, Any], None], Any]] = []
        conn = db.conn
        # A lone job needs no savepoint: if it fails, the whole transaction is undone.
        alone = len(batch) == 1
        durable = False  # a failed batch changed nothing: nothing to sync
        try:
            conn.execute("BEGIN IMMEDIATE")
            for index, job in enumerate(batch):
                if not alone:
                    conn.execute(f"SAVEPOINT job{index}")
                released = len(db.unlink)
                try:
                    value = job.fn(db)
                except Exception as raised:
                    if not conn.in_transaction:
                        raise  # SQLite undid the whole transaction (an I/O error): all fail
                    conn.execute("ROLLBACK" if alone else f"ROLLBACK TO job{index}")
                    del db.unlink[released:]
                    error = as_failure(raised, db.path) or raised
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
                    conn.execute(f"RELEASE job{index}")
            for directory in {d for job in batch for d in job.sync_dirs}:
                fsync_directory(directory)
            if conn.in_transaction:
                # synchronous=NORMAL: no sync at COMMIT; the syncer makes the WAL durable
                # before any job is answered (wal_sync.py). A batch of only flag changes
                # needs no sync (a crash may undo those, never mail).
                conn.execute("COMMIT")
                durable = any(job.durable for job in batch)
                self._later.extend(follow_ups)
            if db.summaries.made:  # made by jobs that read (a FETCH that sets \\Seen)
                self._later.append((_keep_summaries, db.summaries.take_made()))
        except BaseException as raised:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the disk may refuse that too
                    conn.execute("ROLLBACK")
            db.unlink.clear()
            failure = as_failure(raised, db.path)
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
        touched, db.touched = sorted(db.touched), set()
        changes: dict[int, int | None] | None = None
        if touched and self.on_mailbox_change is not None and outcomes:
            marks = ",".join("?" * len(touched))
            found = dict(
                conn.execute(
                    f"SELECT id, highestmodseq FROM mailboxes WHERE id IN ({marks})", touched
                ).fetchall()
            )
            changes = {mailbox: found.get(mailbox) for mailbox in touched}
        # One wake-up of each event loop per batch, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
        for job, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append(outcome)
        freed = [db.blob_dir / relative for relative in db.unlink]
        db.unlink.clear()
        news = (self.on_mailbox_change, changes)
        self._syncer.hand(Answers(by_loop, batch[0].loop, news, durable, freed))
        # While the syncer syncs: a checkpoint the writer takes now delays the next batch only.
        self._note_wal_size(db)

    @staticmethod
    def _answer_early(job: _Job, value: Any, error: BaseException | None) -> None:
        early, job.early = job.early, None
        assert early is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            job.loop.call_soon_threadsafe(settle, [(early, value, error)], None)

    def _run_later(self, db: SqliteTx, count: int) -> None:
        """The oldest `count` jobs' `then`, each in its own savepoint, in one unsynced commit."""
        work = [self._later.popleft() for _ in range(min(count, len(self._later)))]
        try:
            with db.transaction() as conn:
                for index, (then, value) in enumerate(work):
                    conn.execute(f"SAVEPOINT later{index}")
                    try:
                        then(db, value)
                    except Exception as error:
                        self._derived_failed(error)
                        conn.execute(f"ROLLBACK TO later{index}")
                    conn.execute(f"RELEASE later{index}")
        except sqlite3.Error as error:
            self._derived_failed(error)

    def _sync_failure(self, error: OSError) -> BaseException:
        """The error the jobs of a batch whose WAL sync failed report (syncer thread)."""
        failure = as_failure(error, self.db_path)
        log.warning("syncing the WAL failed: %s", failure or error)
        return failure or error

    def _derived_failed(self, error: Exception) -> None:
        """Log a failure of derived work (in an except block): one line when the storage
        failed, the traceback when it is a bug of ours."""
        failure = as_failure(error, self.db_path)
        if failure is None:
            log.exception("work derived from a commit failed (readers make it)")
        else:
            log.warning("work derived from a commit failed (readers make it): %s", failure)


def _keep_summaries(db: SqliteTx, made: list[tuple[int, bytes, str | int]]) -> None:
    db.summaries.keep(made)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _seal_and_place(content: ContentBuffer, final: Path) -> None:
    content.seal()
    source = content.path
    assert source is not None
    try:
        private.make_dir(final.parent)
        os.replace(source, final)
    except OSError as error:
        raise os_failure(error) from None


class SqliteDirect:
    """The store for one CLI command (`storage.api.DirectStore`)."""

    def __init__(self, data_dir: Path) -> None:
        self.signals = FileSignals(data_dir)
        self._tx = SqliteTx(data_dir)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._tx.transaction():
            yield self._tx

    def reader(self) -> Tx:
        return self._tx

    def failure(self, error: BaseException) -> StorageFailure | None:
        return as_failure(error, self._tx.path)

    def close(self) -> None:
        self._tx.close()
