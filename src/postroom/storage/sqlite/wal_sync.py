"""The answers of committed batches, given once the WAL that holds them is on disk.

The group-commit writer (store.py) commits a batch with synchronous=NORMAL (no sync at COMMIT)
and hands its answers here; a thread of its own takes every batch handed so far, makes the WAL
durable with ONE fdatasync, then answers them all, in commit order. Meanwhile the writer already
runs the next batch: the sync of one batch overlaps the work of the next (a pipeline, as a
database's WAL writer does), and batches committed during a sync share the next one.

Why one later sync covers every earlier batch: SQLite appends a commit's frames to the WAL, and
recovery keeps the longest prefix of frames whose checksums hold, so a batch never survives a
crash without every batch committed before it; and a checkpoint syncs the WAL before it copies
pages out of it (synchronous=NORMAL), so a WAL restarted after one never holds a batch that was
not synced. A batch of only non-durable jobs (IMAP flags) needs no sync of its own, but waits
behind earlier batches so answers keep commit order. A failed sync fails every durable batch it
was to cover (their changes may be committed, as after a crash they may not be; the clients are
told to retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (future, value, error) for each job of a batch, as _settle takes them.
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
MailboxNews = Callable[[dict[int, int | None]], None]


@dataclass
class Answers:
    """What a committed batch owes: outcomes per event loop, and the mailbox news (HIGHESTMODSEQ
    per changed mailbox) for the loop that listens for it."""

    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]]
    news_loop: asyncio.AbstractEventLoop | None
    news: tuple[MailboxNews | None, dict[int, int | None] | None] | None
    durable: bool
    unlink: list[Path]  # blob files the batch released: removed once it is durable


_STOP = object()


class WalSyncer:
    def __init__(self, wal_path: Path, on_failure: Callable[[OSError], BaseException]) -> None:
        self._wal_path = wal_path
        self._on_failure = on_failure  # raised OSError → the error each job reports
        self._fd: int | None = None  # the WAL, kept open: one system call less per sync
        self._inode = 0
        self._handed: queue.SimpleQueue[Answers | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="store-sync", daemon=True)
        self._thread.start()

    def hand(self, answers: Answers) -> None:
        """Answer this batch once the WAL holding it is durable (writer thread)."""
        self._handed.put(answers)

    def stop(self) -> None:
        """Answer what was handed, then end the thread (writer thread, before it closes)."""
        if self._thread is not None:
            self._handed.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            group: list[Answers] = []
            item = self._handed.get()
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    assert isinstance(item, Answers)
                    group.append(item)
                try:
                    item = self._handed.get_nowait()
                except queue.Empty:
                    break
            if not group:
                continue
            failure: BaseException | None = None
            if any(answers.durable or answers.unlink for answers in group):
                try:
                    self._sync()
                except OSError as error:
                    failure = self._on_failure(error)
            for answers in group:
                _deliver(answers, failure if answers.durable else None)
            if failure is None:  # else kept: a file too many beats a message without its bytes
                for answers in group:
                    for path in answers.unlink:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)

    def _sync(self) -> None:
        # fdatasync, as SQLite itself syncs: the data and the file size, not the timestamps
        # (a WAL written over in place then costs no inode update). SQLite keeps the file while
        # the writer's connection is open; should it ever have been replaced, the new one is
        # opened and synced too.
        fd = self._fd
        if fd is None:
            fd = self._fd = os.open(self._wal_path, os.O_RDONLY)
            self._inode = os.fstat(fd).st_ino
        os.fdatasync(fd)
        if os.stat(self._wal_path).st_ino != self._inode:
            os.close(fd)
            self._fd = None
            self._sync()


def _deliver(answers: Answers, failure: BaseException | None) -> None:
    for loop, items in answers.by_loop.items():
        if failure is not None:
            items = [(future, None, failure) for future, _value, _error in items]
        news = answers.news if loop is answers.news_loop else None  # committed either way
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, items, news)


def settle(
    items: list[Outcome],
    news: tuple[MailboxNews | None, dict[int, int | None] | None] | None,
) -> None:
    """On the event loop: tell sessions which mailboxes changed, then answer the jobs."""
    if news is not None and news[0] is not None and news[1] is not None:
        news[0](news[1])
    for future, value, error in items:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
