"""STORE in the SQLite store (storage/sqlite/flags.py) on a real SQLite file: each message ends up
with exactly the flags asked for, one MODSEQ per command, and UNCHANGEDSINCE refusals untouched
even when they share their old flags with messages that change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.storage.records import join_flags, split_flags
from postroom.storage.sqlite import flags as flag_writes
from postroom.storage.sqlite.connection import SqliteTx


def inbox_with(db: SqliteTx, flag_sets: list[tuple[str, ...]]) -> tuple[int, list[int]]:
    """Alice's INBOX holding one message per flag set; (mailbox id, UIDs)."""
    with db.transaction():
        user = db.accounts.add_user("alice@example.test", "x", "x")
        inbox = db.mailboxes.require(user, "INBOX").id
        blob = db.blobs.add(b"Subject: s\r\n\r\nbody\r\n")
        uids = [
            db.messages.append(inbox, blob, size=20, internal_date=1_700_000_000.0, flags=flags)
            for flags in flag_sets
        ]
    return inbox, uids


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[tuple[SqliteTx, int, list[int]]]:
    db = SqliteTx(tmp_path)
    inbox, uids = inbox_with(db, [(), ("\\Seen",), (), ("\\Seen", "$Work"), (), ("\\Flagged",)])
    yield db, inbox, uids
    db.close()


def flags_and_modseqs(db: SqliteTx, inbox: int) -> dict[int, tuple[str, int, int]]:
    rows = db.conn.execute(
        "SELECT uid, flags, seen, modseq FROM mailbox_messages WHERE mailbox_id = ?", (inbox,)
    )
    return {uid: (flags, seen, modseq) for uid, flags, seen, modseq in rows}


def test_add_to_every_message_keeps_each_ones_other_flags(
    mailbox: tuple[SqliteTx, int, list[int]],
) -> None:
    db, inbox, uids = mailbox
    with db.transaction():
        result = flag_writes.store_flags(db, inbox, uids, "add", ["\\Seen"])
    after = flags_and_modseqs(db, inbox)
    modseq = result.changed[0].modseq
    assert {s.uid for s in result.changed} == {uids[0], uids[2], uids[4], uids[5]}
    assert {s.uid for s in result.unchanged} == {uids[1], uids[3]}
    assert after[uids[0]] == ("\\Seen", 1, modseq)
    assert after[uids[3]][:2] == ("\\Seen $Work", 1) and after[uids[3]][2] < modseq
    assert after[uids[5]] == ("\\Flagged \\Seen", 1, modseq)


def test_unchangedsince_refusals_keep_their_flags_even_when_shared(
    mailbox: tuple[SqliteTx, int, list[int]],
) -> None:
    db, inbox, uids = mailbox
    with db.transaction():  # messages 3 and 5 (no flags, like 1) change after MODSEQ `since`
        since = flags_and_modseqs(db, inbox)[uids[5]][2]
        flag_writes.store_flags(db, inbox, [uids[2], uids[4]], "add", ["$Tmp"])
        flag_writes.store_flags(db, inbox, [uids[2], uids[4]], "remove", ["$Tmp"])
    with db.transaction():
        result = flag_writes.store_flags(db, inbox, uids, "set", ["$Done"], unchanged_since=since)
    after = flags_and_modseqs(db, inbox)
    assert result.modified == [uids[2], uids[4]]
    assert after[uids[2]][0] == "" and after[uids[4]][0] == ""
    assert after[uids[0]][0] == "$Done" and after[uids[5]][0] == "$Done"


def test_many_distinct_flag_sets_are_updated_one_by_one(tmp_path: Path) -> None:
    db = SqliteTx(tmp_path)
    count = flag_writes.GROUPED_UPDATES + 5
    inbox, uids = inbox_with(db, [(f"$K{i}",) for i in range(count)])
    with db.transaction():
        flag_writes.store_flags(db, inbox, uids, "add", ["\\Answered"])
    after = flags_and_modseqs(db, inbox)
    assert [after[uid][0] for uid in uids] == [f"\\Answered $K{i}" for i in range(count)]
    db.close()


def seen_by_session(
    db: SqliteTx, inbox: int, uids: list[int], wanted: str
) -> tuple[dict[int, tuple[str, ...]], dict[tuple[str, ...], tuple[str, ...]]]:
    """What a session's view hands write_flag_change for +FLAGS (wanted): the flags it saw
    for every message that changes, and each old flag set's new one."""
    seen = {
        uid: split_flags(flags)
        for uid, (flags, _, _) in flags_and_modseqs(db, inbox).items()
        if uid in uids
    }
    before = {uid: old for uid, old in seen.items() if wanted not in old}
    after = {old: split_flags(join_flags({*old, wanted})) for old in before.values()}
    return before, after


def test_a_change_the_session_saw_is_written_in_one_go_with_one_modseq(
    mailbox: tuple[SqliteTx, int, list[int]],
) -> None:
    db, inbox, uids = mailbox
    before, after = seen_by_session(db, inbox, uids, "\\Seen")
    with db.transaction():
        written = flag_writes.write_flag_change(db, inbox, before, after, "add", ["\\Seen"])
    now = flags_and_modseqs(db, inbox)
    assert sorted(written.uids) == [uids[0], uids[2], uids[4], uids[5]]
    assert written.elsewhere == []  # all as the session saw them: nothing to tell it
    assert now[uids[0]] == ("\\Seen", 1, written.modseq)
    assert now[uids[5]] == ("\\Flagged \\Seen", 1, written.modseq)
    assert now[uids[3]][:2] == ("\\Seen $Work", 1) and now[uids[3]][2] < written.modseq


def test_a_message_changed_elsewhere_meanwhile_gets_the_change_on_its_stored_flags(
    mailbox: tuple[SqliteTx, int, list[int]],
) -> None:
    db, inbox, uids = mailbox
    before, after = seen_by_session(db, inbox, uids, "$Done")
    with db.transaction():  # another session, after this one's view was made
        flag_writes.store_flags(db, inbox, [uids[0]], "add", ["\\Flagged"])
        flag_writes.store_flags(db, inbox, [uids[1]], "add", ["$Done"])
        db.conn.execute(
            "DELETE FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?", (inbox, uids[2])
        )
    with db.transaction():
        written = flag_writes.write_flag_change(db, inbox, before, after, "add", ["$Done"])
    now = flags_and_modseqs(db, inbox)
    assert now[uids[0]] == ("\\Flagged $Done", 0, written.modseq)  # not just "$Done"
    assert now[uids[1]][0] == "\\Seen $Done" and now[uids[1]][2] < written.modseq
    assert sorted(written.uids) == [uids[0], uids[3], uids[4], uids[5]]
    assert uids[2] not in now
    # The session is told the flags it could not know (1's are what it shows already).
    assert {state.uid: state.flags for state in written.elsewhere} == {
        uids[0]: ("\\Flagged", "$Done"),
        uids[1]: ("\\Seen", "$Done"),
    }
    assert {now[uid][2] for uid in written.uids} == {written.modseq}


def test_a_change_over_many_flag_sets_is_written_too(tmp_path: Path) -> None:
    db = SqliteTx(tmp_path)
    count = flag_writes.GROUPED_UPDATES + 5
    inbox, uids = inbox_with(db, [(f"$K{i}",) for i in range(count)])
    before, after = seen_by_session(db, inbox, uids, "\\Answered")
    with db.transaction():
        written = flag_writes.write_flag_change(db, inbox, before, after, "add", ["\\Answered"])
    now = flags_and_modseqs(db, inbox)
    assert [now[uid][0] for uid in uids] == [f"\\Answered $K{i}" for i in range(count)]
    assert sorted(written.uids) == uids and {now[u][2] for u in uids} == {written.modseq}
    db.close()
