"""STORE in SQLite: flag changes of many messages in few statements (RFC 3501 §6.4.6).

Every change takes one new MODSEQ for the whole command from the mailbox's HIGHESTMODSEQ
(RFC 7162 §3.1). Messages are updated by groups of identical old flags, one UPDATE per run of
UIDs, so STORE 1:* is one statement whatever the mailbox's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from postroom.proto.imap.selected import MessageState
from postroom.storage.api import FlagMode
from postroom.storage.records import SEEN, FlagWrite, StoreResult, join_flags, split_flags
from postroom.storage.sqlite.uid_filters import uid_filters

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx

GROUPED_UPDATES = 16  # up to this many distinct old flag sets, STORE updates them by group


def next_modseq(tx: SqliteTx, mailbox_id: int) -> int:
    (modseq,) = tx.conn.execute(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?"
        " RETURNING highestmodseq",
        (mailbox_id,),
    ).fetchone()
    return int(modseq)


def store_flags(
    tx: SqliteTx,
    mailbox_id: int,
    uids: Sequence[int],
    mode: FlagMode,
    flags: Iterable[str],
    unchanged_since: int | None = None,
    modseq: int = 0,
) -> StoreResult:
    """RFC 3501 §6.4.6 STORE: mode "set" (FLAGS), "add" (+FLAGS) or "remove" (-FLAGS).
    `modseq`: the MODSEQ to give the changed messages, when the caller has taken it already."""
    wanted = set(flags)
    changed: list[MessageState] = []
    unchanged: list[MessageState] = []
    modified: list[int] = []
    new_flags: dict[str, tuple[str, ...] | None] = {}  # old flags text → new (None: the same)
    for uid, old_text, old_modseq in _state_rows(tx, mailbox_id, uids):
        if unchanged_since is not None and old_modseq > unchanged_since:
            modified.append(uid)
            continue
        if old_text not in new_flags:
            old = set(split_flags(old_text))
            new = wanted if mode == "set" else old | wanted if mode == "add" else old - wanted
            new_flags[old_text] = None if new == old else split_flags(join_flags(new))
        result = new_flags[old_text]
        if result is None:
            unchanged.append(MessageState(uid, split_flags(old_text), old_modseq))
            continue
        if not modseq:
            modseq = next_modseq(tx, mailbox_id)  # one MODSEQ for the whole command
        changed.append(MessageState(uid, result, modseq))
    changes = {old: new for old, new in new_flags.items() if new is not None}
    if changed and len(changes) <= GROUPED_UPDATES:
        # One UPDATE per run of UIDs, each old flag set mapped to its new one: a STORE 1:* is
        # one statement. Rows already as asked keep their flags and MODSEQ (flags IN ...).
        # UIDs refused by UNCHANGEDSINCE may share an old flag set: then only changed UIDs.
        scope = [s.uid for s in changed] if modified else uids
        cases = " ".join("WHEN ? THEN ?" for _ in changes)
        mapping = [v for old, new in changes.items() for v in (old, " ".join(new))]
        seen = [v for old, new in changes.items() for v in (old, int(SEEN in new))]
        olds = list(changes)
        for condition, values in uid_filters(scope):
            tx.conn.execute(
                f"UPDATE mailbox_messages SET flags = CASE flags {cases} END,"
                f" seen = CASE flags {cases} END, modseq = ?"
                f" WHERE mailbox_id = ? AND {condition}"
                f" AND flags IN ({','.join('?' * len(olds))})",
                (*mapping, *seen, modseq, mailbox_id, *values, *olds),
            )
    elif changed:
        # Many distinct flag sets: one prepared statement run per message is cheaper.
        tx.conn.executemany(
            "UPDATE mailbox_messages SET flags = ?, seen = ?, modseq = ?"
            " WHERE mailbox_id = ? AND uid = ?",
            [
                (" ".join(state.flags), int(SEEN in state.flags), modseq, mailbox_id, state.uid)
                for state in changed
            ],
        )
    if changed:
        tx.touched.add(mailbox_id)
    return StoreResult(changed, unchanged, modified)


def write_flag_change(
    tx: SqliteTx,
    mailbox_id: int,
    before: Mapping[int, tuple[str, ...]],
    after: Mapping[tuple[str, ...], tuple[str, ...]],
    mode: FlagMode,
    flags: Iterable[str],
) -> FlagWrite:
    """Make a STORE a session has already applied to its view: `before` holds each message's
    flags as the session saw them, `after` each such flag set's new one. Messages whose stored
    flags are one of those old sets are changed by one UPDATE per run of UIDs without reading
    them first (the new flags depend only on the old); the others (another session changed
    them meanwhile) get `mode` and `flags` applied to their stored flags. Where the result is
    not what the session shows, `elsewhere` says so."""
    if not before:
        return FlagWrite([], 0, [])
    if len(after) > GROUPED_UPDATES:
        result = store_flags(tx, mailbox_id, list(before), mode, flags)
        states = [*result.changed, *result.unchanged]
        return FlagWrite(
            [s.uid for s in result.changed],
            result.changed[0].modseq if result.changed else 0,
            [s for s in states if s.flags != after[before[s.uid]]],
        )
    modseq = next_modseq(tx, mailbox_id)  # one MODSEQ for the whole command
    olds = [join_flags(old) for old in after]
    news = {old: join_flags(new) for old, new in after.items()}
    cases = " ".join("WHEN ? THEN ?" for _ in olds)
    mapping = [v for old, new in zip(olds, news.values(), strict=True) for v in (old, new)]
    seen = [v for old, new in zip(olds, after.values(), strict=True) for v in (old, SEEN in new)]
    done: list[int] = []
    elsewhere: list[MessageState] = []
    for condition, values in uid_filters(list(before)):
        rows = tx.conn.execute(
            f"UPDATE mailbox_messages SET flags = CASE flags {cases} END,"
            f" seen = CASE flags {cases} END, modseq = ?"
            f" WHERE mailbox_id = ? AND {condition}"
            f" AND flags IN ({','.join('?' * len(olds))}) RETURNING uid, flags",
            (*mapping, *seen, modseq, mailbox_id, *values, *olds),
        ).fetchall()
        for uid, text in rows:
            done.append(uid)
            if text != news[before[uid]]:  # its old flags were another message's
                elsewhere.append(MessageState(uid, split_flags(text), modseq))
    if len(done) < len(before):
        finished = set(done)
        rest = [uid for uid in before if uid not in finished]
        result = store_flags(tx, mailbox_id, rest, mode, flags, modseq=modseq)
        done += (state.uid for state in result.changed)
        elsewhere += [*result.changed, *result.unchanged]
    tx.touched.add(mailbox_id)
    return FlagWrite(done, modseq, elsewhere)


def _state_rows(tx: SqliteTx, mailbox_id: int, uids: Sequence[int]) -> list[tuple[int, str, int]]:
    """(UID, flags as stored, MODSEQ) of the `uids` still present, in UID order."""
    rows: list[tuple[int, str, int]] = []
    for condition, values in uid_filters(uids):
        rows += tx.conn.execute(
            f"SELECT uid, flags, modseq FROM mailbox_messages WHERE mailbox_id = ? AND {condition}",
            (mailbox_id, *values),
        ).fetchall()
    rows.sort()
    return rows
