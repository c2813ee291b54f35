"""Work derived from a commit (Store.write's `then`): done by the writer once it has nothing else
to do, or between batches past a backlog, in unsynced transactions, never in the way of the job
it comes from; and IMAP summaries: none made when mail enters a mailbox, made by the readers
that need one, and those kept by the writer for the blob they were made from."""

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
        uid = db.messages.append(inbox, blob, size=len(MESSAGE), internal_date=1_700_000_000.0)
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


def _summaries_in(data_dir: Path) -> list[tuple[int, bytes, str]]:
    db = SqliteTx(data_dir)
    try:
        rows = db.conn.execute(
            "SELECT blob_id, summary, subject"
            " FROM blob_summaries JOIN blob_subjects USING (blob_id)"
        ).fetchall()
    finally:
        db.close()
    return [(int(r[0]), bytes(r[1]), str(r[2])) for r in rows]


def test_a_summary_a_reader_made_is_kept_by_the_writer(tmp_path: Path) -> None:
    db = SqliteTx(tmp_path)
    try:
        inbox, uid = _message_without_summary(db)
        blob = db.conn.execute("SELECT blob_id FROM mailbox_messages").fetchone()[0]
    finally:
        db.close()

    async def main() -> list[tuple[int, bytes, str]]:
        store = SqliteStore(tmp_path)
        store.open()
        try:
            (row,) = await store.read(
                lambda tx: tx.messages.fetch_rows(inbox, [uid], summary=True, content=False)
            )
            assert row.summary == summarise_packed(MESSAGE)
            deadline = time.monotonic() + 10
            while not (kept := await store.read(lambda tx: _summaries_in(tmp_path))):
                assert time.monotonic() < deadline, "the reader's summary was never kept"
                await asyncio.sleep(0.01)
            return kept
        finally:
            store.close()

    kept = asyncio.run(main())
    assert [(b, s) for b, s, _ in kept] == [(blob, summarise_packed(MESSAGE))]
    assert "quarterly figures" in kept[0][2].lower()


def test_a_summary_made_for_content_gone_since_is_not_kept(tmp_path: Path) -> None:
    """SQLite hands a deleted last row's ID out again: a summary made before is not the new
    content's, whether that lives in its row or in a file."""
    db = SqliteTx(tmp_path)
    try:
        with db.transaction():
            blob = db.blobs.add(MESSAGE)
        db.summaries.now(blob)
        made = db.summaries.take_made()
        with db.transaction():
            db.conn.execute("DELETE FROM blobs WHERE id = ?", (blob,))
            again = db.blobs.add(MESSAGE.replace(b"numbers", b"figures"))
            assert again == blob
            db.summaries.keep(made)
        with db.transaction():
            db.conn.execute("DELETE FROM blobs WHERE id = ?", (blob,))
            again = db.blobs.add_file(len(MESSAGE), "ab/elsewhere")
            assert again == blob
            db.summaries.keep(made)
        assert db.conn.execute("SELECT count(*) FROM blob_summaries").fetchone()[0] == 0
        with db.transaction():  # the same content: kept
            db.conn.execute("UPDATE blobs SET data = ?, path = NULL WHERE id = ?", (MESSAGE, blob))
            db.summaries.keep(made)
            db.summaries.keep(made)  # once only
        rows = db.conn.execute("SELECT blob_id, summary FROM blob_summaries").fetchall()
    finally:
        db.close()
    assert [(r[0], bytes(r[1])) for r in rows] == [(blob, summarise_packed(MESSAGE))]


def test_a_reader_notes_a_bounded_number_of_summaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postroom.storage.sqlite import blobs as blobs_module

    monkeypatch.setattr(blobs_module, "MADE_LIMIT", 3)
    db = SqliteTx(tmp_path)
    try:
        with db.transaction():
            ids = [db.blobs.add(MESSAGE + b"%d\r\n" % n) for n in range(5)]
        for blob in ids:
            db.summaries.now(blob)
        assert [b for b, _, _ in db.summaries.take_made()] == ids[:3]
        assert db.summaries.take_made() == []
    finally:
        db.close()


def test_a_summary_for_a_blob_gone_meanwhile_is_skipped(tmp_path: Path) -> None:
    db = SqliteTx(tmp_path)
    try:
        with db.transaction():
            gone = db.blobs.add(MESSAGE)
            blob = db.blobs.add(MESSAGE)
            db.conn.execute("DELETE FROM blobs WHERE id = ?", (gone,))
            db.summaries.make(gone)
            db.summaries.make(blob)
            db.summaries.make(blob)  # once only
        rows = db.conn.execute("SELECT blob_id, summary FROM blob_summaries").fetchall()
    finally:
        db.close()
    assert [(r[0], bytes(r[1])) for r in rows] == [(blob, summarise_packed(MESSAGE))]
