"""The store's WAL: durable commits sync it; checkpoints run beside the writer, which catches
up so the WAL starts over while writes go on; nothing committed is lost."""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
from pathlib import Path

import pytest

from postroom.storage.sqlite.connection import SqliteTx
from postroom.storage.sqlite.store import WAL_KEEP_BYTES, SqliteStore

ROW = 8 * 1024


def _insert(db: SqliteTx, rows: int) -> None:
    db.conn.execute("CREATE TABLE IF NOT EXISTS filler (data BLOB)")
    db.conn.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(ROW),)] * rows)


def _count(db: SqliteTx) -> int:
    return int(db.conn.execute("SELECT count(*) FROM filler").fetchone()[0])


def test_the_wal_starts_over_while_writes_go_on_and_nothing_is_lost(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.open()
    wal = store.db_path.with_name(store.db_path.name + "-wal")

    async def scenario() -> tuple[int, int]:
        # Six times the kept size in many commits, back to back: the checkpoint thread
        # copies, the writer catches up, and the WAL is cut back without any pause.
        sizes = []
        for _ in range(120):
            await store.write(lambda db: _insert(db, 25))
            sizes.append(wal.stat().st_size)
        restarts = sum(1 for a, b in itertools.pairwise(sizes) if b < a)
        return restarts, await store.read(_count)

    try:
        restarts, counted = asyncio.run(scenario())
    finally:
        store.close()
    assert restarts >= 1
    copied = sqlite3.connect(store.db_path)
    try:
        # Rows read straight from the database file, WAL included: every commit is there.
        assert copied.execute("SELECT count(*) FROM filler").fetchone()[0] == counted
    finally:
        copied.close()
    assert counted == 120 * 25


def test_without_the_checkpoint_thread_the_writer_keeps_the_wal_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SqliteStore, "_checkpoint_loop", lambda self, db: db.close())
    store = SqliteStore(tmp_path)
    store.wal_limit = 2 * WAL_KEEP_BYTES
    store.open()
    wal = store.db_path.with_name(store.db_path.name + "-wal")
    commit = 25 * ROW

    async def scenario() -> int:
        largest = 0
        for _ in range(200):  # about 40 MiB, back to back
            await store.write(lambda db: _insert(db, 25))
            largest = max(largest, wal.stat().st_size)
        return largest

    try:
        largest = asyncio.run(scenario())
    finally:
        store.close()
    # Reset at the latest by the commit after the one that passed the limit.
    assert largest <= store.wal_limit + 3 * commit, largest


def test_durable_commits_sync_the_wal_and_flag_only_commits_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path)
    store.open()
    wal = store.db_path.with_name(store.db_path.name + "-wal")
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fdatasync(fd)

    monkeypatch.setattr("postroom.storage.sqlite.store.os.fdatasync", spy)

    async def scenario() -> tuple[int, int]:
        await store.write(lambda db: _insert(db, 1), durable=False)
        relaxed = synced.count(wal.stat().st_ino)
        await store.write(lambda db: _insert(db, 1))
        return relaxed, synced.count(wal.stat().st_ino)

    try:
        relaxed, durable = asyncio.run(scenario())
    finally:
        store.close()
    assert (relaxed, durable) == (0, 1)


def test_early_writes_answer_before_the_commit_and_are_read_after_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.open()

    def insert_and_count(db: SqliteTx) -> int:
        _insert(db, 2)
        return _count(db)

    def refuse(db: SqliteTx) -> int:
        _insert(db, 5)
        raise ValueError("no")

    async def scenario() -> tuple[int, int, str]:
        value, committed = await store.write_early(insert_and_count)
        await committed
        seen_after = await store.read(_count)
        failed = ""
        try:
            await store.write_early(refuse)
        except ValueError as error:
            failed = str(error)
        return value, seen_after, failed

    try:
        value, seen_after, failed = asyncio.run(scenario())
        assert (value, seen_after, failed) == (2, 2, "no")  # the refused job left nothing
    finally:
        store.close()
