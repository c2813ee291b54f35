"""storage.mailboxes on a real SQLite file: listing, reading, expunge with shared blobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.storage import mailboxes
from postroom.storage.database import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "postroom.db")
    yield database
    database.close()


def deliver(db: Database, mailbox_id: int, blob_id: int, prefix: bytes) -> int:
    size = (
        len(prefix)
        + db.conn.execute("SELECT size FROM blobs WHERE id = ?", (blob_id,)).fetchone()[0]
    )
    return db.append_message(mailbox_id, blob_id, prefix, size, 1_700_000_000.0)


def test_listing_read_and_expunge_with_a_shared_blob(db: Database, tmp_path: Path) -> None:
    blob_dir = tmp_path / "blobs"
    blob_dir.mkdir()
    big_content = b"Subject: big\r\n\r\nfile body\r\n"
    small_content = b"Subject: s\r\n\r\nbody\r\n"
    (blob_dir / "big").write_bytes(big_content)
    with db.transaction():
        alice = db.add_user("alice@example.test", "x", "x")
        bob = db.add_user("bob@example.test", "x", "x")
        inbox = db.mailbox_id(alice, "INBOX")
        bob_inbox = db.mailbox_id(bob, "INBOX")
        assert inbox is not None and bob_inbox is not None
        small = db.insert_blob(len(small_content), small_content, None)
        big = db.insert_blob(len(big_content), None, "big")
        uid1 = deliver(db, inbox, small, b"Return-Path: <a@b>\r\n")
        uid2 = deliver(db, inbox, big, b"Return-Path: <c@d>\r\n")
        deliver(db, bob_inbox, big, b"Return-Path: <c@d>\r\n")
    listing = mailboxes.inbox_listing(db, alice)
    assert listing is not None and listing.mailbox_id == inbox
    assert [m.uid for m in listing.messages] == [uid1, uid2] == [1, 2]
    for message in listing.messages:
        content = mailboxes.read_message(db, blob_dir, inbox, message.uid)
        assert content is not None and len(content) == message.size
        assert message.prefix_size == len(b"Return-Path: <a@b>\r\n")
    assert mailboxes.read_message(db, blob_dir, inbox, 99) is None
    before = listing.highestmodseq
    assert _summaries(db) == (2, 2)  # one per blob, with its subject

    with db.transaction():
        assert mailboxes.expunge(db, inbox, [uid2, 42]) == []  # bob still holds the big blob
    with db.transaction():
        assert mailboxes.expunge(db, bob_inbox, [1]) == ["big"]  # last reference: unlink it
    with db.transaction():
        assert mailboxes.expunge(db, inbox, [uid1, uid1]) == []  # stored inline: no file
        assert mailboxes.expunge(db, inbox, [uid1]) == []  # already gone: nothing changes

    after = mailboxes.inbox_listing(db, alice)
    assert after is not None and after.messages == ()
    assert after.highestmodseq == before + 2  # one new MODSEQ per expunge that removed something
    vanished = db.conn.execute(
        "SELECT uid, modseq FROM mailbox_vanished WHERE mailbox_id = ? ORDER BY uid", (inbox,)
    ).fetchall()
    assert vanished == [(uid1, before + 2), (uid2, before + 1)]
    assert db.conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 0
    assert _summaries(db) == (0, 0)  # gone with their blobs
    assert mailboxes.inbox_listing(db, 12345) is None


def _summaries(db: Database) -> tuple[int, int]:
    (summaries,) = db.conn.execute("SELECT count(*) FROM blob_summaries").fetchone()
    (subjects,) = db.conn.execute("SELECT count(*) FROM blob_subjects").fetchone()
    return summaries, subjects
