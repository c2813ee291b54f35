"""Work derived from a commit (Store.write's `then`): computed while the WAL syncs, written with
the next batch or alone soon after, never in the way of the job it comes from; and the IMAP
summaries an APPEND writes that way are made by readers (and at start-up) when missing."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.storage import imap as store_ops
from postroom.storage import store as store_module
from postroom.storage.database import Database
from postroom.storage.store import Store
from postroom.storage.summary import summarise_packed

MESSAGE = (
    b"From: Ann <ann@example.test>\r\nTo: bob@example.test\r\nSubject: Quarterly figures\r\n"
    b"Message-ID: <q1@example.test>\r\n\r\nThe numbers.\r\n"
)


def _note(db: Database, text: str) -> str:
    db.conn.execute("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
    db.conn.execute("INSERT INTO notes VALUES (?)", (text,))
    return text


def _notes(db: Database) -> list[str]:
    db.conn.execute("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
    return sorted(r[0] for r in db.conn.execute("SELECT text FROM notes"))


def _derived_note(text: str) -> Callable[[Database], None]:
    def write(db: Database) -> None:
        _note(db, "derived from " + text)

    return write


async def _wait_for(store: Store, wanted: list[str], timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        notes = await store.read(_notes)
        if notes == wanted or time.monotonic() > deadline:
            return notes
        await asyncio.sleep(0.01)


def test_then_is_computed_while_the_wal_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    store.open()
    computing = threading.Event()
    overlapped: list[bool] = []
    real_fdatasync = os.fdatasync

    def sync_waiting_for_the_derive_thread(fd: int) -> None:
        real_fdatasync(fd)
        overlapped.append(computing.wait(10))  # False if `then` only ran after the sync

    def then(text: str) -> Callable[[Database], None]:
        computing.set()
        return _derived_note(text)

    monkeypatch.setattr("postroom.storage.store.os.fdatasync", sync_waiting_for_the_derive_thread)

    async def scenario() -> list[str]:
        await store.write(lambda db: _note(db, "a"), then=then)
        return await _wait_for(store, ["a", "derived from a"])

    try:
        notes = asyncio.run(scenario())
    finally:
        store.close()
    assert overlapped == [True]
    assert notes == ["a", "derived from a"]


def test_derived_writes_join_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "DERIVED_WAIT", 60.0)  # never alone in this test
    store = Store(tmp_path)
    store.open()

    async def scenario() -> tuple[list[str], list[str]]:
        await store.write(lambda db: _note(db, "a"), then=_derived_note)
        before = await store.read(_notes)
        await store.write(lambda db: _note(db, "b"))
        return before, await store.read(_notes)

    try:
        before, after = asyncio.run(scenario())
    finally:
        store.close()
    assert before == ["a"]  # written behind the answer, not before it
    assert after == ["a", "b", "derived from a"]


def test_derived_writes_without_a_next_batch_are_written_alone_or_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    store.open()

    async def alone() -> list[str]:
        await store.write(lambda db: _note(db, "a"), then=_derived_note)
        return await _wait_for(store, ["a", "derived from a"])

    try:
        assert asyncio.run(alone()) == ["a", "derived from a"]
    finally:
        store.close()
    monkeypatch.setattr(store_module, "DERIVED_WAIT", 60.0)
    store = Store(tmp_path)
    store.open()

    async def then_close() -> None:
        await store.write(lambda db: _note(db, "b"), then=_derived_note)

    try:
        asyncio.run(then_close())
    finally:
        store.close()
    db = Database(store.db_path)
    try:
        assert _notes(db) == ["a", "b", "derived from a", "derived from b"]
    finally:
        db.close()


def test_failed_derived_work_is_logged_and_undoes_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_module, "DERIVED_WAIT", 60.0)
    store = Store(tmp_path)
    store.open()

    def broken_then(text: str) -> Callable[[Database], None]:
        raise ValueError("cannot derive")

    def broken_write(text: str) -> Callable[[Database], None]:
        def write(db: Database) -> None:
            _note(db, "half of " + text)
            raise ValueError("cannot write")

        return write

    def refused(db: Database) -> str:
        raise RuntimeError("job refused")

    async def scenario() -> tuple[str, str, list[str]]:
        first = await store.write(lambda db: _note(db, "a"), then=broken_then)
        second = await store.write(lambda db: _note(db, "b"), then=broken_write)
        with pytest.raises(RuntimeError):
            await store.write(refused, then=_derived_note)  # no `then` for a failed job
        await store.write(lambda db: _note(db, "c"), then=_derived_note)
        await store.write(lambda db: _note(db, "d"))
        return first, second, await store.read(_notes)

    try:
        first, second, notes = asyncio.run(scenario())
    finally:
        store.close()
    assert (first, second) == ("a", "b")
    assert notes == ["a", "b", "c", "d", "derived from c"]
    assert "work derived from a commit failed" in caplog.text


def _message_without_summary(db: Database) -> tuple[int, int]:
    """Alice's INBOX with one message whose summary was never written; (mailbox, UID)."""
    with db.transaction():
        user = db.add_user("alice@example.test", "x", "x")
        inbox = db.mailbox_id(user, "INBOX")
        assert inbox is not None
        blob = db.insert_blob(len(MESSAGE), MESSAGE, None)
        uid = store_ops.append_blob(
            db, inbox, blob, len(MESSAGE), (), 1_700_000_000.0, summarise=False
        )
    return inbox, uid


def test_readers_make_a_missing_summary_themselves(tmp_path: Path) -> None:
    db = Database(tmp_path / "postroom.db")
    try:
        inbox, uid = _message_without_summary(db)
        assert db.conn.execute("SELECT count(*) FROM blob_summaries").fetchone()[0] == 0
        for content in (False, True):
            (row,) = store_ops.fetch_rows(
                db, inbox, [uid], tmp_path / "blobs", summary=True, content=content
            )
            assert row.summary == summarise_packed(MESSAGE)
    finally:
        db.close()


def test_opening_the_store_makes_summaries_a_crash_left_out(tmp_path: Path) -> None:
    db = Database(tmp_path / "postroom.db")
    try:
        _message_without_summary(db)
    finally:
        db.close()
    store = Store(tmp_path)
    store.open()
    store.close()
    db = Database(tmp_path / "postroom.db")
    try:
        rows = db.conn.execute("SELECT summary, subject FROM blob_summaries").fetchall()
    finally:
        db.close()
    assert len(rows) == 1 and bytes(rows[0][0]) == summarise_packed(MESSAGE)
    assert "quarterly figures" in rows[0][1].lower()
