"""STORE in the store (storage/imap.py store_flags) on a real SQLite file: each message ends up
with exactly the flags asked for, one MODSEQ per command, and UNCHANGEDSINCE refusals untouched
even when they share their old flags with messages that change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.storage import imap as store_ops
from postroom.storage.database import Database


def inbox_with(db: Database, flag_sets: list[tuple[str, ...]]) -> tuple[int, list[int]]:
    """Alice's INBOX holding one message per flag set; (mailbox id, UIDs)."""
    with db.transaction():
        user = db.add_user("alice@example.test", "x", "x")
        inbox = db.mailbox_id(user, "INBOX")
        assert inbox is not None
        blob = db.insert_blob(20, b"Subject: s\r\n\r\nbody\r\n", None)
        uids = [
            store_ops.append_blob(db, inbox, blob, 20, flags, 1_700_000_000.0)
            for flags in flag_sets
        ]
    return inbox, uids


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[tuple[Database, int, list[int]]]:
    db = Database(tmp_path / "postroom.db")
    inbox, uids = inbox_with(
        db, [(), ("\\Seen",), (), ("\\Seen", "$Work"), (), ("\\Flagged",)]
    )
    yield db, inbox, uids
    db.close()


def flags_and_modseqs(db: Database, inbox: int) -> dict[int, tuple[str, int, int]]:
    rows = db.conn.execute(
        "SELECT uid, flags, seen, modseq FROM mailbox_messages WHERE mailbox_id = ?", (inbox,)
    )
    return {uid: (flags, seen, modseq) for uid, flags, seen, modseq in rows}


def test_add_to_every_message_keeps_each_ones_other_flags(
    mailbox: tuple[Database, int, list[int]],
) -> None:
    db, inbox, uids = mailbox
    with db.transaction():
        result = store_ops.store_flags(db, inbox, uids, "add", ["\\Seen"])
    after = flags_and_modseqs(db, inbox)
    modseq = result.changed[0].modseq
    assert {s.uid for s in result.changed} == {uids[0], uids[2], uids[4], uids[5]}
    assert {s.uid for s in result.unchanged} == {uids[1], uids[3]}
    assert after[uids[0]] == ("\\Seen", 1, modseq)
    assert after[uids[3]][:2] == ("\\Seen $Work", 1) and after[uids[3]][2] < modseq
    assert after[uids[5]] == ("\\Flagged \\Seen", 1, modseq)


def test_unchangedsince_refusals_keep_their_flags_even_when_shared(
    mailbox: tuple[Database, int, list[int]],
) -> None:
    db, inbox, uids = mailbox
    with db.transaction():  # messages 3 and 5 (no flags, like 1) change after MODSEQ `since`
        since = flags_and_modseqs(db, inbox)[uids[5]][2]
        store_ops.store_flags(db, inbox, [uids[2], uids[4]], "add", ["$Tmp"])
        store_ops.store_flags(db, inbox, [uids[2], uids[4]], "remove", ["$Tmp"])
    with db.transaction():
        result = store_ops.store_flags(db, inbox, uids, "set", ["$Done"], unchanged_since=since)
    after = flags_and_modseqs(db, inbox)
    assert result.modified == [uids[2], uids[4]]
    assert after[uids[2]][0] == "" and after[uids[4]][0] == ""
    assert after[uids[0]][0] == "$Done" and after[uids[5]][0] == "$Done"


def test_many_distinct_flag_sets_are_updated_one_by_one(tmp_path: Path) -> None:
    db = Database(tmp_path / "postroom.db")
    count = store_ops.GROUPED_UPDATES + 5
    inbox, uids = inbox_with(db, [(f"$K{i}",) for i in range(count)])
    with db.transaction():
        store_ops.store_flags(db, inbox, uids, "add", ["\\Answered"])
    after = flags_and_modseqs(db, inbox)
    assert [after[uid][0] for uid in uids] == [f"\\Answered $K{i}" for i in range(count)]
    db.close()
