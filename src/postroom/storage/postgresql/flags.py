"""STORE in PostgreSQL: flag changes of many messages in few statements (RFC 3501 §6.4.6).

Every change takes one new MODSEQ for the whole command from the mailbox's HIGHESTMODSEQ
(RFC 7162 §3.1), by UPDATE ... RETURNING on the mailbox row, which stays locked until the
transaction ends: two nodes never hand out the same MODSEQ. Messages are updated by groups of
identical old flags (one UPDATE for each set of UIDs), so STORE 1:* is one statement whatever
the mailbox's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from postroom.proto.imap.selected import MessageState
from postroom.storage.api import FlagMode
from postroom.storage.records import SEEN, FlagWrite, StoreResult, join_flags, split_flags

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx

GROUPED_UPDATES = 16  # up to this many distinct old flag sets, STORE updates them by group


def uid_condition(uids: Sequence[int], column: str = "uid") -> tuple[str, tuple[object, ...]]:
    """An SQL condition on `column` covering `uids`: one range when they are contiguous (1:* of
    a mailbox without gaps), else one array."""
    ordered = sorted(set(uids))
    if ordered and ordered[-1] - ordered[0] + 1 == len(ordered):
        return f"{column} BETWEEN %s AND %s", (ordered[0], ordered[-1])
    return f"{column} = ANY(%s)", (ordered,)


def next_modseq(tx: PgTx, mailbox_id: int) -> int:
    row = tx.conn.execute(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = %s"
        " RETURNING highestmodseq",
        (mailbox_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _cases(changes: Mapping[str, str | bool]) -> tuple[str, list[object]]:
    """A CASE over the old flags text giving each its new value."""
    arguments: list[object] = []
    for old, new in changes.items():
        arguments += (old, new)
    return "CASE flags " + " ".join("WHEN %s THEN %s" for _ in changes) + " END", arguments


def store_flags(
    tx: PgTx,
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
        # RFC 7162 §3.1.3: UNCHANGEDSINCE refuses messages changed after it.
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
        # Rows already as asked keep their flags and MODSEQ (flags = ANY ...). UIDs refused
        # by UNCHANGEDSINCE may share an old flag set: then only the changed UIDs.
        scope = [s.uid for s in changed] if modified else uids
        flag_case, flag_args = _cases({old: " ".join(new) for old, new in changes.items()})
        seen_case, seen_args = _cases({old: SEEN in new for old, new in changes.items()})
        condition, values = uid_condition(scope)
        tx.conn.execute(
            f"UPDATE mailbox_messages SET flags = {flag_case}, seen = {seen_case}, modseq = %s"
            f" WHERE mailbox_id = %s AND {condition} AND flags = ANY(%s)",
            (*flag_args, *seen_args, modseq, mailbox_id, *values, list(changes)),
        )
    elif changed:
        with tx.conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE mailbox_messages SET flags = %s, seen = %s, modseq = %s"
                " WHERE mailbox_id = %s AND uid = %s",
                [
                    (" ".join(state.flags), SEEN in state.flags, modseq, mailbox_id, state.uid)
                    for state in changed
                ],
            )
    if changed:
        tx.touched.add(mailbox_id)
    return StoreResult(changed, unchanged, modified)


def write_flag_change(
    tx: PgTx,
    mailbox_id: int,
    before: Mapping[int, tuple[str, ...]],
    after: Mapping[tuple[str, ...], tuple[str, ...]],
    mode: FlagMode,
    flags: Iterable[str],
) -> FlagWrite:
    """Make a STORE a session has already applied to its view (see the SQLite store's): the
    messages whose stored flags are one of the old sets seen are changed by one UPDATE without
    reading them first; the others get `mode` and `flags` applied to their stored flags, and
    where the result is not what the session shows, `elsewhere` says so."""
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
    news = {join_flags(old): join_flags(new) for old, new in after.items()}
    flag_case, flag_args = _cases(news)
    seen_case, seen_args = _cases({join_flags(old): SEEN in new for old, new in after.items()})
    condition, values = uid_condition(list(before))
    rows = tx.conn.execute(
        f"UPDATE mailbox_messages SET flags = {flag_case}, seen = {seen_case}, modseq = %s"
        f" WHERE mailbox_id = %s AND {condition} AND flags = ANY(%s) RETURNING uid, flags",
        (*flag_args, *seen_args, modseq, mailbox_id, *values, list(news)),
    ).fetchall()
    done: list[int] = []
    elsewhere: list[MessageState] = []
    for uid, text in rows:
        done.append(int(uid))
        if text != news[join_flags(before[uid])]:  # its old flags were another message's
            elsewhere.append(MessageState(int(uid), split_flags(text), modseq))
    if len(done) < len(before):
        finished = set(done)
        rest = [uid for uid in before if uid not in finished]
        result = store_flags(tx, mailbox_id, rest, mode, flags, modseq=modseq)
        done += (state.uid for state in result.changed)
        elsewhere += [*result.changed, *result.unchanged]
    tx.touched.add(mailbox_id)
    return FlagWrite(done, modseq, elsewhere)


def _state_rows(tx: PgTx, mailbox_id: int, uids: Sequence[int]) -> list[tuple[int, str, int]]:
    """(UID, flags as stored, MODSEQ) of the `uids` still present, in UID order."""
    if not uids:
        return []
    condition, values = uid_condition(uids)
    rows = tx.conn.execute(
        f"SELECT uid, flags, modseq FROM mailbox_messages WHERE mailbox_id = %s AND {condition}"
        " ORDER BY uid",
        (mailbox_id, *values),
    ).fetchall()
    return [(int(uid), str(text), int(modseq)) for uid, text, modseq in rows]
