"""Store operations of IMAP sessions: mailboxes, subscriptions, message metadata and flags.

Functions of a `Database`, run on the store's reader (listing, fetching) or inside the
group-commit writer (changes). Every change to a mailbox's messages takes a new MODSEQ from the
mailbox's HIGHESTMODSEQ (RFC 7162 §3.1), so a session learns what changed since it last looked
with one indexed query (`changes_since`), and marks the mailbox in `db.touched` so the store can
wake the sessions that have it open.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from postroom.proto.imap.selected import MessageColumns, MessageState
from postroom.storage.database import Database
from postroom.storage.mailboxes import expunge
from postroom.storage.summary import header_block, summarise_packed, wire_part

INBOX = "INBOX"
SEEN = "\\Seen"
DELETED = "\\Deleted"


class MailboxError(Exception):
    """A mailbox operation refused; `code` is the RFC 5530 response code (ALREADYEXISTS, ...)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    id: int
    name: str
    special_use: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    recent_uid: int


class FetchRow(NamedTuple):
    """A message as FETCH reads it (a tuple: FETCH 1:* makes one per message)."""

    uid: int
    modseq: int
    internal_date: float
    size: int
    summary: bytes | None  # packed ENVELOPE/BODYSTRUCTURE data, when asked for
    content: bytes | None  # the whole message (prefix + blob), when asked for


@dataclass(frozen=True, slots=True)
class StatusCounts:
    messages: int
    unseen: int
    size: int
    recent: int


def split_flags(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


def join_flags(flags: Iterable[str]) -> str:
    """Canonical form: system flags first, then keywords, each sorted, no duplicates."""
    unique = set(flags)
    return " ".join(sorted(unique, key=lambda f: (not f.startswith("\\"), f.lower())))


_MAILBOX_COLUMNS = "id, name, special_use, uidvalidity, uidnext, highestmodseq, recent_uid"


def _info(row: Sequence[Any]) -> MailboxInfo:
    return MailboxInfo(
        int(row[0]), str(row[1]), str(row[2]), int(row[3]), int(row[4]), int(row[5]), int(row[6])
    )


# --- mailboxes ---------------------------------------------------------------------------------


def list_mailboxes(db: Database, user_id: int) -> list[MailboxInfo]:
    rows = db.conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = ? ORDER BY name", (user_id,)
    )
    return [_info(r) for r in rows]


def find_mailbox(db: Database, user_id: int, name: str) -> MailboxInfo | None:
    row = db.conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = ? AND name = ?",
        (user_id, name),
    ).fetchone()
    return _info(row) if row else None


def mailbox_info(db: Database, mailbox_id: int) -> MailboxInfo | None:
    row = db.conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    return _info(row) if row else None


def require_mailbox(db: Database, user_id: int, name: str) -> MailboxInfo:
    info = find_mailbox(db, user_id, name)
    if info is None:
        raise MailboxError("NONEXISTENT", "Mailbox doesn't exist: " + name)
    return info


def create_mailbox(db: Database, user_id: int, name: str, special_use: str = "") -> int:
    """RFC 3501 §6.3.3: the name (and, implicitly, its missing parents) is created."""
    if find_mailbox(db, user_id, name) is not None:
        raise MailboxError("ALREADYEXISTS", "Mailbox already exists")
    parts = name.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if find_mailbox(db, user_id, parent) is None:
            db.create_mailbox(user_id, parent)
    return db.create_mailbox(user_id, name, special_use)


def delete_mailbox(db: Database, user_id: int, name: str) -> list[str]:
    """RFC 3501 §6.3.4; returns blob files to unlink after the commit."""
    if name == INBOX:
        raise MailboxError("CANNOT", "INBOX can't be deleted")
    info = require_mailbox(db, user_id, name)
    child = db.conn.execute(
        "SELECT 1 FROM mailboxes WHERE user_id = ? AND substr(name, 1, ?) = ?",
        (user_id, len(name) + 1, name + "/"),
    ).fetchone()
    if child is not None:
        # Dovecot's answer too: a mailbox with children keeps existing until they are gone.
        raise MailboxError("INUSE", "Mailbox has children, delete them first")
    uids = [
        r[0]
        for r in db.conn.execute(
            "SELECT uid FROM mailbox_messages WHERE mailbox_id = ?", (info.id,)
        )
    ]
    unlink = expunge(db, info.id, uids)
    db.conn.execute("DELETE FROM mailboxes WHERE id = ?", (info.id,))
    db.touched.add(info.id)
    return unlink


def rename_mailbox(db: Database, user_id: int, old: str, new: str) -> None:
    """RFC 3501 §6.3.5: children move along; renaming INBOX moves its messages instead."""
    source = require_mailbox(db, user_id, old)
    if find_mailbox(db, user_id, new) is not None:
        raise MailboxError("ALREADYEXISTS", "Target mailbox already exists")
    if new == old or new.startswith(old + "/"):
        raise MailboxError("CANNOT", "Can't rename a mailbox into itself")
    if old == INBOX:
        target = create_mailbox(db, user_id, new)
        states = message_states(db, source.id)
        copy_messages(db, source.id, [s.uid for s in states], target)
        expunge(db, source.id, [s.uid for s in states])
        db.touched.add(source.id)
        return
    parts = new.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if find_mailbox(db, user_id, parent) is None:
            db.create_mailbox(user_id, parent)
    rows = db.conn.execute(
        "SELECT id, name FROM mailboxes WHERE user_id = ? AND (name = ? OR substr(name, 1, ?) = ?)",
        (user_id, old, len(old) + 1, old + "/"),
    ).fetchall()
    for mailbox_id, name in rows:
        renamed = new + name[len(old) :]
        # RFC 3501 §2.3.1.1: a renamed mailbox keeps its UIDs, so a new UIDVALIDITY is not
        # needed; the sessions that have it open still hear of it.
        db.conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (renamed, mailbox_id))
        db.touched.add(int(mailbox_id))


def subscriptions(db: Database, user_id: int) -> list[str]:
    rows = db.conn.execute(
        "SELECT name FROM subscriptions WHERE user_id = ? ORDER BY name", (user_id,)
    )
    return [str(r[0]) for r in rows]


def subscribe(db: Database, user_id: int, name: str, *, on: bool) -> None:
    if on:
        db.conn.execute(
            "INSERT OR IGNORE INTO subscriptions(user_id, name) VALUES (?, ?)", (user_id, name)
        )
    else:
        db.conn.execute("DELETE FROM subscriptions WHERE user_id = ? AND name = ?", (user_id, name))


def status_counts(db: Database, info: MailboxInfo) -> StatusCounts:
    count, unseen, size, recent = db.conn.execute(
        "SELECT count(*), coalesce(sum(1 - seen), 0), coalesce(sum(size), 0),"
        " coalesce(sum(uid >= ?), 0) FROM mailbox_messages WHERE mailbox_id = ?",
        (info.recent_uid, info.id),
    ).fetchone()
    return StatusCounts(int(count), int(unseen), int(size), int(recent))


# --- messages ----------------------------------------------------------------------------------


def _uid_filters(uids: Sequence[int], column: str = "uid") -> Iterator[tuple[str, tuple[int, ...]]]:
    """SQL conditions on `uid` covering `uids`: contiguous runs become BETWEEN ranges (one query
    for 1:*), scattered UIDs go in IN lists of at most 500."""
    if len(uids) == 1:
        yield f"{column} = ?", (uids[0],)  # FETCH n: the commonest case, made quickly
        return
    ordered = sorted(set(uids))
    runs: list[tuple[int, int]] = []
    if ordered and ordered[-1] - ordered[0] + 1 == len(ordered):
        runs.append((ordered[0], ordered[-1]))  # one run (1:* of a mailbox without gaps)
        ordered = []
    for uid in ordered:
        if runs and uid == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], uid)
        else:
            runs.append((uid, uid))
    singles = [a for a, b in runs if a == b]
    ranges = [(a, b) for a, b in runs if a != b]
    for start in range(0, len(ranges), 200):
        spans = ranges[start : start + 200]
        yield (
            "(" + " OR ".join(f"{column} BETWEEN ? AND ?" for _ in spans) + ")",
            tuple(v for pair in spans for v in pair),
        )
    for start in range(0, len(singles), 500):
        some = singles[start : start + 500]
        yield f"{column} IN ({','.join('?' * len(some))})", tuple(some)


def message_states(db: Database, mailbox_id: int, since_modseq: int = 0) -> list[MessageState]:
    """Messages in UID order; with `since_modseq`, only those changed (or added) after it."""
    rows = db.conn.execute(
        "SELECT uid, flags, modseq FROM mailbox_messages WHERE mailbox_id = ? AND modseq > ?"
        " ORDER BY uid",
        (mailbox_id, since_modseq),
    )
    # Few distinct flag sets in a mailbox: one shared tuple each (less memory per session).
    shared: dict[str, tuple[str, ...]] = {}
    return [
        MessageState(u, shared[f] if f in shared else shared.setdefault(f, split_flags(f)), m)
        for u, f, m in rows
    ]


def message_columns(db: Database, mailbox_id: int) -> MessageColumns:
    """Every message of a mailbox in UID order as parallel lists (what SELECT loads): cheaper
    than one object per message, and each distinct flag set is one shared tuple."""
    rows = db.conn.execute(
        "SELECT uid, flags, modseq FROM mailbox_messages WHERE mailbox_id = ? ORDER BY uid",
        (mailbox_id,),
    ).fetchall()
    shared: dict[str, tuple[str, ...]] = {}
    flags = [shared[f] if f in shared else shared.setdefault(f, split_flags(f)) for _, f, _ in rows]
    return MessageColumns([r[0] for r in rows], flags, [r[2] for r in rows], list(shared.values()))


def vanished_since(db: Database, mailbox_id: int, since_modseq: int) -> list[int]:
    """UIDs expunged after `since_modseq` (RFC 7162 §3.2.10)."""
    rows = db.conn.execute(
        "SELECT uid FROM mailbox_vanished WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
        (mailbox_id, since_modseq),
    )
    return [int(r[0]) for r in rows]


@dataclass(frozen=True, slots=True)
class MailboxNews:
    """What changed in a mailbox since a MODSEQ a session knows (RFC 7162 §3.1, §3.2.10)."""

    changed: list[MessageState]  # changed or added
    vanished: list[int]
    highestmodseq: int
    recent_from: int | None  # first UID claimed as \\Recent for the added ones, if claimed


def mailbox_news(
    db: Database, mailbox_id: int, since: int, claim_recent_after: int | None = None
) -> MailboxNews | None:
    """None when the mailbox is gone. With `claim_recent_after` (the session's highest UID),
    messages added after it are claimed as \\Recent for the session (RFC 3501 §2.3.2)."""
    info = mailbox_info(db, mailbox_id)
    if info is None:
        return None
    changed = message_states(db, mailbox_id, since)
    recent_from = None
    if claim_recent_after is not None and any(s.uid > claim_recent_after for s in changed):
        recent_from = claim_recent(db, mailbox_id)
    return MailboxNews(
        changed, vanished_since(db, mailbox_id, since), info.highestmodseq, recent_from
    )


def claim_recent(db: Database, mailbox_id: int) -> int:
    """RFC 3501 §2.3.2: \\Recent belongs to one session. Returns the first UID this session
    sees as recent; the next session to claim starts after the current last message."""
    row = db.conn.execute("SELECT recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    db.conn.execute("UPDATE mailboxes SET recent_uid = uidnext WHERE id = ?", (mailbox_id,))
    return int(row[0]) if row else 0


GROUPED_UPDATES = 16  # up to this many distinct old flag sets, STORE updates them by group


def fetch_rows(
    db: Database,
    mailbox_id: int,
    uids: Sequence[int],
    blob_dir: Path,
    *,
    summary: bool,
    content: bool | Literal["header"],
    must_contain: tuple[str, str] | None = None,
) -> list[FetchRow]:
    """The stored data of `uids` (those still present), in UID order.

    `content="header"` gives only the header block (prefix included), from the summary:
    what header searches need, without reading any body. `must_contain` (header name, text)
    skips messages that cannot have the text in that header: for Subject (any case-folded
    text, blanks included) the stored decoded, case-folded subjects tell; for others (a
    lower-case ASCII word) the summary and trace headers (unless an RFC 2047 word could hide
    it). A pre-filter: the caller still decides.
    """
    header_only = content == "header"
    full = bool(content) and not header_only
    # The blobs table is touched only when the body is wanted: the rest lives beside it.
    blob_columns = "b.data, b.path" if full else "NULL, NULL"
    blob_join = " JOIN blobs b ON b.id = m.blob_id" if full else ""
    rows: list[FetchRow] = []
    prefix_column = "m.prefix" if content else "NULL"
    by_subject = must_contain is not None and must_contain[0] == "subject"
    with_summary = summary or header_only or (must_contain is not None and not by_subject)
    summary_column = "s.summary" if summary or header_only else "NULL"
    # The subjects' join comes first: its filter runs before any summary is looked up.
    joins = blob_join
    if by_subject:
        joins += " LEFT JOIN blob_subjects t ON t.blob_id = m.blob_id"
    if with_summary:
        joins += " LEFT JOIN blob_summaries s ON s.blob_id = m.blob_id"
    for condition, values in _uid_filters(uids, "m.uid"):
        query = (
            f"SELECT m.uid, m.modseq, m.internal_date, m.size, {prefix_column},"
            f" {summary_column}, {blob_columns}, m.blob_id"
            f" FROM mailbox_messages m{joins}"
            f" WHERE m.mailbox_id = ? AND {condition}"
        )
        arguments: tuple[object, ...] = (mailbox_id, *values)
        if must_contain is not None and by_subject:
            # No subject row: no summary yet (both are written together), so maybe a match.
            query += " AND (t.subject IS NULL OR instr(t.subject, ?) > 0)"
            arguments += (must_contain[1],)
        elif must_contain is not None:
            query += (
                " AND (s.summary IS NULL OR instr(lower(s.summary), ?) > 0"
                " OR instr(lower(m.prefix), ?) > 0 OR instr(s.summary, X'3D3F') > 0)"
            )
            arguments += (must_contain[1], must_contain[1])
        cursor = db.conn.execute(query, arguments)
        if not content:
            # Metadata and summaries only: the rows as SQLite gives them.
            rows += [
                FetchRow(
                    uid,
                    modseq,
                    date,
                    size,
                    (packed or _summary_now(db, blob, blob_dir)) if summary else None,
                    None,
                )
                for uid, modseq, date, size, _, packed, _, _, blob in cursor
            ]
            continue
        for uid, modseq, date, size, prefix, packed, data, path, blob in cursor:
            if summary and packed is None:
                packed = _summary_now(db, blob, blob_dir)
            if header_only:
                # The header block kept in the summary: the body is never read.
                header = wire_part(packed, 3) if packed is not None else None
                if header is None:
                    header = header_block(db.read_blob(int(blob), blob_dir))
                body = bytes(prefix) + header
            else:
                if data is None:
                    data = (blob_dir / str(path)).read_bytes()
                body = bytes(prefix) + bytes(data)
            rows.append(FetchRow(uid, modseq, date, size, packed if summary else None, body))
    rows.sort(key=lambda r: r.uid)
    return rows


def _summary_now(db: Database, blob_id: int, blob_dir: Path) -> bytes:
    """The IMAP summary of a blob that has none stored yet: an APPEND's is written once the
    store's writer is idle (Store.write's `then`), and a crash in between can lose it."""
    return summarise_packed(db.read_blob(int(blob_id), blob_dir))


def next_modseq(db: Database, mailbox_id: int) -> int:
    (modseq,) = db.conn.execute(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?"
        " RETURNING highestmodseq",
        (mailbox_id,),
    ).fetchone()
    return int(modseq)


@dataclass(frozen=True, slots=True)
class StoreResult:
    changed: list[MessageState]  # messages whose flags changed, with their new MODSEQ
    unchanged: list[MessageState]  # asked for, present, already as asked
    modified: list[int]  # RFC 7162 §3.1.3: UIDs refused by UNCHANGEDSINCE


def store_flags(
    db: Database,
    mailbox_id: int,
    uids: Sequence[int],
    mode: str,
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
    for uid, old_text, old_modseq in _state_rows(db, mailbox_id, uids):
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
            modseq = next_modseq(db, mailbox_id)  # one MODSEQ for the whole command
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
        for condition, values in _uid_filters(scope):
            db.conn.execute(
                f"UPDATE mailbox_messages SET flags = CASE flags {cases} END,"
                f" seen = CASE flags {cases} END, modseq = ?"
                f" WHERE mailbox_id = ? AND {condition}"
                f" AND flags IN ({','.join('?' * len(olds))})",
                (*mapping, *seen, modseq, mailbox_id, *values, *olds),
            )
    elif changed:
        # Many distinct flag sets: one prepared statement run per message is cheaper.
        db.conn.executemany(
            "UPDATE mailbox_messages SET flags = ?, seen = ?, modseq = ?"
            " WHERE mailbox_id = ? AND uid = ?",
            [
                (" ".join(state.flags), int(SEEN in state.flags), modseq, mailbox_id, state.uid)
                for state in changed
            ],
        )
    if changed:
        db.touched.add(mailbox_id)
    return StoreResult(changed, unchanged, modified)


@dataclass(frozen=True, slots=True)
class FlagWrite:
    """What `write_flag_change` changed: these messages, all to this MODSEQ; `elsewhere`: the
    messages whose stored flags were not as the session saw them, with their flags now."""

    uids: list[int]
    modseq: int
    elsewhere: list[MessageState]


def write_flag_change(
    db: Database,
    mailbox_id: int,
    before: Mapping[int, tuple[str, ...]],
    after: Mapping[tuple[str, ...], tuple[str, ...]],
    mode: str,
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
        result = store_flags(db, mailbox_id, list(before), mode, flags)
        states = [*result.changed, *result.unchanged]
        return FlagWrite(
            [s.uid for s in result.changed],
            result.changed[0].modseq if result.changed else 0,
            [s for s in states if s.flags != after[before[s.uid]]],
        )
    modseq = next_modseq(db, mailbox_id)  # one MODSEQ for the whole command
    olds = [join_flags(old) for old in after]
    news = {old: join_flags(new) for old, new in after.items()}
    cases = " ".join("WHEN ? THEN ?" for _ in olds)
    mapping = [v for old, new in zip(olds, news.values(), strict=True) for v in (old, new)]
    seen = [v for old, new in zip(olds, after.values(), strict=True) for v in (old, SEEN in new)]
    done: list[int] = []
    elsewhere: list[MessageState] = []
    for condition, values in _uid_filters(list(before)):
        rows = db.conn.execute(
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
        result = store_flags(db, mailbox_id, rest, mode, flags, modseq=modseq)
        done += (state.uid for state in result.changed)
        elsewhere += [*result.changed, *result.unchanged]
    db.touched.add(mailbox_id)
    return FlagWrite(done, modseq, elsewhere)


def _state_rows(db: Database, mailbox_id: int, uids: Sequence[int]) -> list[tuple[int, str, int]]:
    """(UID, flags as stored, MODSEQ) of the `uids` still present, in UID order."""
    rows: list[tuple[int, str, int]] = []
    for condition, values in _uid_filters(uids):
        rows += db.conn.execute(
            f"SELECT uid, flags, modseq FROM mailbox_messages WHERE mailbox_id = ? AND {condition}",
            (mailbox_id, *values),
        ).fetchall()
    rows.sort()
    return rows


def copy_messages(
    db: Database, source: int, uids: Sequence[int], target: int
) -> list[tuple[int, int]]:
    """RFC 3501 §6.4.7 COPY (flags and internal date kept; the body is shared, not copied).
    Returns (source UID, new UID) pairs for RFC 4315 COPYUID."""
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.conn.execute(
            "SELECT uid, flags, internal_date, size, blob_id, prefix FROM mailbox_messages"
            f" WHERE mailbox_id = ? AND uid IN ({marks}) ORDER BY uid",
            (source, *chunk),
        ).fetchall()
        for uid, flags, date, size, blob_id, prefix in rows:
            new_uid = db.append_message(target, int(blob_id), bytes(prefix), int(size), float(date))
            if flags:
                db.conn.execute(
                    "UPDATE mailbox_messages SET flags = ?, seen = ?"
                    " WHERE mailbox_id = ? AND uid = ?",
                    (flags, int(SEEN in split_flags(flags)), target, new_uid),
                )
            pairs.append((int(uid), new_uid))
    pairs.sort()
    return pairs


def append_blob(
    db: Database,
    mailbox_id: int,
    blob_id: int,
    size: int,
    flags: Iterable[str],
    internal_date: float,
    *,
    summarise: bool = True,
) -> int:
    """RFC 3501 §6.3.11 APPEND of content already stored as `blob_id`; returns the new UID."""
    uid = db.append_message(mailbox_id, blob_id, b"", size, internal_date, summarise=summarise)
    text = join_flags(flags)
    if text:
        db.conn.execute(
            "UPDATE mailbox_messages SET flags = ?, seen = ? WHERE mailbox_id = ? AND uid = ?",
            (text, int(SEEN in split_flags(text)), mailbox_id, uid),
        )
    return uid


def deleted_uids(db: Database, mailbox_id: int, within: Sequence[int] | None = None) -> list[int]:
    """UIDs flagged \\Deleted (optionally only among `within`, RFC 4315 UID EXPUNGE)."""
    rows = db.conn.execute(
        "SELECT uid, flags FROM mailbox_messages WHERE mailbox_id = ? AND flags LIKE ?"
        " ORDER BY uid",
        (mailbox_id, "%\\Deleted%"),
    )
    uids = [int(uid) for uid, flags in rows if DELETED in split_flags(flags)]
    if within is not None:
        allowed = set(within)
        uids = [u for u in uids if u in allowed]
    return uids
