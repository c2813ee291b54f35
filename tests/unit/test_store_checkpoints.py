"""The store's WAL: durable commits sync it, checkpoints run beside the writer — the WAL is
copied into the database as it grows and started over after a pause, nothing committed lost."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest

from postroom.storage.database import Database
from postroom.storage.store import WAL_KEEP_BYTES, Store

ROW = 8 * 1024


def _insert(db: Database, rows: int) -> None:
    db.conn.execute("CREATE TABLE IF NOT EXISTS filler (data BLOB)")
    db.conn.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(ROW),)] * rows)


def _count(db: Database) -> int:
    return int(db.conn.execute("SELECT count(*) FROM filler").fetchone()[0])


def test_a_grown_wal_is_checkpointed_and_started_over_after_a_pause(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    store.open()
    wal = store.db_path.with_name(store.db_path.name + "-wal")

    async def scenario() -> int:
        # Three times the kept size, in many commits: without checkpoints the WAL holds it all.
        for _ in range(60):
            await store.write(lambda db: _insert(db, 25))
        grown = wal.stat().st_size
        assert grown > WAL_KEEP_BYTES
        # After a pause the next small write starts the WAL over, cut back to the kept size.
        deadline = time.monotonic() + 15
        while wal.stat().st_size > WAL_KEEP_BYTES:
            assert time.monotonic() < deadline, f"WAL still {wal.stat().st_size} bytes"
            await asyncio.sleep(0.2)
            await store.write(lambda db: _insert(db, 1))
        return await store.read(_count)

    try:
        counted = asyncio.run(scenario())
    finally:
        store.close()
    copied = sqlite3.connect(store.db_path)
    try:
        # Rows read straight from the database file, WAL included: every commit is there.
        assert copied.execute("SELECT count(*) FROM filler").fetchone()[0] == counted
    finally:
        copied.close()
    assert counted >= 60 * 25 + 1


def test_writes_that_never_pause_still_keep_the_wal_bounded(tmp_path: Path) -> None:
    store = Store(tmp_path)
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
    store = Store(tmp_path)
    store.open()
    wal = store.db_path.with_name(store.db_path.name + "-wal")
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr("postroom.storage.store.os.fsync", spy)

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
