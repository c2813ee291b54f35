"""Work derived from a commit (Store.write's `then`): done by the writer once it has nothing else
to do, or between batches past a backlog, in unsynced transactions, never in the way of the job
it comes from; and the IMAP summaries an APPEND leaves to it are made by readers (and at
start-up) when missing."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from postroom.storage.sqlite import store as store_module
from postroom.storage.sqlite.connection import SqliteTx
from postroom.storage.sqlite.store import SqliteStore
from postroom.storage.summary import summarise_packed

MESSAGE = (
    b"From: Ann <ann@example.test>\r\nTo: bob@example.test\r\nSubject: Quarterly figures\r\n"
    b"Message-ID: <q1@example.test>\r\n\r\nThe numbers.\r\n"
)


def _note(db: SqliteTx, text: str) -> str:
    db.conn.execute("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
    db.conn.execute("INSERT INTO notes VALUES (?)", (text,))
    return text


def _notes(db: SqliteTx) -> list[str]:
    db.conn.execute("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
    return sorted(r[0] for r in db.conn.execute("SELECT text FROM notes"))


def _derived_note(db: SqliteTx, text: str) -> None:
    _note(db, "derived from " + text)


async def _wait_for(store: SqliteStore, wanted: list[str], timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        notes = await store.read(_notes)
        if notes == wanted or time.monotonic() > deadline:
            return notes
        await asyncio.sleep(0.01)


def _notes_in(path: Path) -> list[str]:
    db = SqliteTx(path.parent)
    try:
        return _notes(db)
    finally:
        db.close()


def test_derived_work_is_done_once_the_writer_is_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "DERIVED_IDLE", 0.02)
    store = SqliteStore(tmp_path)
    store.open()
    idle_once = ["a", "b", "derived from a", "derived from b"]
    idle_twice = sorted([*idle_once, "c", "derived from c"])

    async def scenario() -> tuple[list[str], list[str]]:
        await store.write(lambda db: _note(db, "a"), then=_derived_note)
        await store.write(lambda db: _note(db, "b"), then=_derived_note)
        once = await _wait_for(store, idle_once)  # no further job needed
        await store.write(lambda db: _note(db, "c"), then=_derived_note)
        return once, await _wait_for(store, idle_twice)

    try:
        once, twice = asyncio.run(scenario())
    finally:
        store.close()
    assert (once, twice) == (idle_once, idle_twice)


def test_derived_work_waiting_at_close_is_done_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "DERIVED_IDLE", 60.0)
    monkeypatch.setattr(store_module, "DERIVED_SLICE", 2)  # several slices at close
    store = SqliteStore(tmp_path)
    store.open()

    async def scenario() -> list[str]:
        for text in "abcde":
            await store.write(lambda db, text=text: _note(db, text), then=_derived_note)
        return await store.read(_notes)

    try:
        before = asyncio.run(scenario())
    finally:
        store.close()
    assert before == list("abcde")  # while the writer was never idle for DERIVED_IDLE
    assert _notes_in(store.db_path) == sorted([*"abcde", *(f"derived from {t}" for t in "abcde")])


def test_a_backlog_of_derived_work_is_done_between_batches_oldest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "DERIVED_IDLE", 60.0)  # never idle in this test
    monkeypatch.setattr(store_module, "DERIVED_BACKLOG", 3)
    monkeypatch.setattr(store_module, "DERIVED_SLICE", 2)
    store = SqliteStore(tmp_path)
    store.open()
    after_two = ["a", "b"]
    after_three = ["a", "b", "c", "derived from a", "derived from b"]

    async def scenario() -> tuple[list[str], list[str]]:
        await store.write(lambda db: _note(db, "a"), then=_derived_note)
        await store.write(lambda db: _note(db, "b"), then=_derived_note)
        two = await store.read(_notes)
        await store.write(lambda db: _note(db, "c"), then=_derived_note)
        return two, await _wait_for(store, after_three)

    try:
        two, three = asyncio.run(scenario())
    finally:
        store.close()
    assert two == after_two
    assert three == after_three  # one slice of the oldest two; "c" waits for the next


def test_derived_work_is_committed_without_a_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "DERIVED_IDLE", 60.0)
    store = SqliteStore(tmp_path)
    store.open()
    syncs: list[int] = []
    real_fdatasync = os.fdatasync

    def counted(fd: int) -> None:
        syncs.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr("postroom.storage.sqlite.store.os.fdatasync", counted)

    async def scenario() -> None:
        await store.write(lambda db: _note(db, "a"), then=_derived_note)

    try:
        asyncio.run(scenario())
        assert len(syncs) == 1  # the job's own commit
    finally:
        store.close()
    assert len(syncs) == 1  # the derived work written at close added none
    assert _notes_in(store.db_path) == ["a", "derived from a"]


def test_failed_derived_work_is_logged_and_undoes_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_module, "DERIVED_IDLE", 60.0)
    store = SqliteStore(tmp_path)
    store.open()

    def broken(db: SqliteTx, text: str) -> None:
        _note(db, "half of " + text)
        raise ValueError("cannot derive")

    def refused(db: SqliteTx) -> str:
        raise RuntimeError("job refused")

    async def scenario() -> tuple[str, list[str]]:
        first = await store.write(lambda db: _note(db, "a"), then=broken)
        with pytest.raises(RuntimeError):
            await store.write(refused, then=_derived_note)  # no `then` for a failed job
        await store.write(lambda db: _note(db, "b"), then=_derived_note)
        return first, await store.read(_notes)

    try:
        first, notes = asyncio.run(scenario())
    finally:
        store.close()
    assert (first, notes) == ("a", ["a", "b"])
    assert _notes_in(store.db_path) == ["a", "b", "derived from b"]
    assert "work derived from a commit failed" in caplog.text


def _message_without_summary(db: SqliteTx) -> tuple[int, int]:
    """Alice's INBOX with one message whose summary was never written; (mailbox, UID)."""
    with db.transaction():
        user = db.accounts.add_user("alice@example.test", "x", "x")
        inbox = db.mailboxes.require(user, "INBOX").id
        blob = db.blobs.add(MESSAGE)
        uid = db.messages.append(
            inbox, blob, size=len(MESSAGE), internal_date=1_700_000_000.0, summarise=False
        )
    return inbox, uid


def test_readers_make_a_missing_summary_themselves(tmp_path: Path) -> None:
    db = SqliteTx(tmp_path)
    try:
        inbox, uid = _message_without_summary(db)
        assert db.conn.execute("SELECT count(*) FROM blob_summaries").fetchone()[0] == 0
        for content in (False, True):
            (row,) = db.messages.fetch_rows(inbox, [uid], summary=True, content=content)
            assert row.summary == summarise_packed(MESSAGE)
    finally:
        db.close()


def test_opening_the_store_makes_summaries_a_crash_left_out(tmp_path: Path) -> None:
    db = SqliteTx(tmp_path)
    try:
        _message_without_summary(db)
    finally:
        db.close()
    store = SqliteStore(tmp_path)
    store.open()
    store.close()
    db = SqliteTx(tmp_path)
    try:
        rows = db.conn.execute(
            "SELECT summary, subject FROM blob_summaries JOIN blob_subjects USING (blob_id)"
        ).fetchall()
    finally:
        db.close()
    assert len(rows) == 1 and bytes(rows[0][0]) == summarise_packed(MESSAGE)
    assert "quarterly figures" in rows[0][1].lower()


def test_a_summary_for_a_blob_gone_meanwhile_is_skipped(tmp_path: Path) -> None:
    db = SqliteTx(tmp_path)
    try:
        with db.transaction():
            gone = db.blobs.add(MESSAGE)
            blob = db.blobs.add(MESSAGE)
            db.conn.execute("DELETE FROM blobs WHERE id = ?", (gone,))
            db.summaries.make(gone)
            db.summaries.make(blob)  # from the bytes `add` had (the last blob added)
            db.summaries.make(blob)  # once only
        rows = db.conn.execute("SELECT blob_id, summary FROM blob_summaries").fetchall()
    finally:
        db.close()
    assert [(r[0], bytes(r[1])) for r in rows] == [(blob, summarise_packed(MESSAGE))]


def test_the_last_blob_added_and_released_gets_no_summary(tmp_path: Path) -> None:
    db = SqliteTx(tmp_path)
    try:
        with db.transaction():
            gone = db.blobs.add(MESSAGE)
            db.blobs.add_reference(gone)
            db.blobs.release(gone)
            db.summaries.make(gone)
        with db.transaction():
            rolled_back = db.blobs.add(b"Subject: undone\r\n\r\nundone\r\n")
            db.conn.execute("DELETE FROM blobs WHERE id = ?", (rolled_back,))
        with db.transaction():  # a new transaction forgets the bytes of the last one
            again = db.blobs.add_file(10, "ab/elsewhere")
            assert again == rolled_back  # SQLite hands the free row ID out again
            db.conn.execute("UPDATE blobs SET data = ?, path = NULL WHERE id = ?", (MESSAGE, again))
            db.summaries.make(again)
        rows = db.conn.execute("SELECT blob_id, summary FROM blob_summaries").fetchall()
    finally:
        db.close()
    assert [(r[0], bytes(r[1])) for r in rows] == [(again, summarise_packed(MESSAGE))]
