"""Messages in mailboxes, in SQLite: append, copy, expunge, listings, FETCH reads, changes.

A stored message is its copy's `prefix` (Return-Path and trace headers) followed by the shared
blob; `size` is the length of exactly those bytes. Every change to a mailbox's messages takes a
new MODSEQ from the mailbox's HIGHESTMODSEQ (RFC 7162 §3.1), so a session learns what changed
since it last looked with one indexed query (`states(since_modseq)`), and marks the mailbox in
`tx.touched` so the store wakes the sessions that have it open.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from postroom.proto.imap.selected import MessageColumns, MessageState
from postroom.storage.api import Content, FlagMode
from postroom.storage.records import (
    DELETED,
    SEEN,
    FetchRow,
    FlagWrite,
    ListedMessage,
    MailboxListing,
    MailboxNews,
    StoredMessage,
    StoreError,
    StoreResult,
    join_flags,
    split_flags,
)
from postroom.storage.sqlite import flags as flag_writes
from postroom.storage.sqlite.uid_filters import uid_filters
from postroom.storage.summary import header_block, wire_part

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx


class SqliteMessages:
    def __init__(self, tx: SqliteTx) -> None:
        self.tx = tx
        self.conn = tx.conn

    # --- changes -------------------------------------------------------------------------------

    def append(
        self,
        mailbox_id: int,
        blob_id: int,
        *,
        size: int,
        internal_date: float,
        prefix: bytes = b"",
        flags: Iterable[str] = (),
    ) -> int:
        text = join_flags(flags)
        # RFC 3501 §2.3.1.1: UIDs only grow; UIDNEXT is never handed out twice.
        uid, modseq = self.conn.execute(
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
            " WHERE id = ? RETURNING uidnext - 1, highestmodseq",
            (mailbox_id,),
        ).fetchone()
        self.conn.execute(
            "INSERT INTO mailbox_messages(mailbox_id, uid, modseq, flags, seen, internal_date,"
            " size, blob_id, prefix) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                mailbox_id,
                uid,
                modseq,
                text,
                int(SEEN in split_flags(text)),
                internal_date,
                size,
                blob_id,
                prefix,
            ),
        )
        self.tx.blobs.add_reference(blob_id)
        self.tx.touched.add(mailbox_id)
        return int(uid)

    def copy(self, source: int, uids: Sequence[int], target: int) -> list[tuple[int, int]]:
        """RFC 3501 §6.4.7 COPY (flags and internal date kept; the body is shared, not copied).
        Returns (source UID, new UID) pairs for RFC 4315 COPYUID."""
        pairs: list[tuple[int, int]] = []
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                "SELECT uid, flags, internal_date, size, blob_id, prefix FROM mailbox_messages"
                f" WHERE mailbox_id = ? AND uid IN ({marks}) ORDER BY uid",
                (source, *chunk),
            ).fetchall()
            for uid, flags, date, size, blob_id, prefix in rows:
                new_uid = self.append(
                    target,
                    int(blob_id),
                    size=int(size),
                    internal_date=float(date),
                    prefix=bytes(prefix),
                    flags=split_flags(flags),
                )
                pairs.append((int(uid), new_uid))
        pairs.sort()
        return pairs

    def expunge(self, mailbox_id: int, uids: Iterable[int]) -> list[int]:
        """UIDs not in the mailbox are ignored. The expunge gets one new MODSEQ (the mailbox's
        HIGHESTMODSEQ grows, RFC 7162 §3.1.10) and every removed UID is recorded with it in
        `mailbox_vanished`, so QRESYNC clients can be told what went (RFC 7162 §3.2.10)."""
        present: list[tuple[int, int]] = []
        for uid in sorted(set(uids)):
            row = self.conn.execute(
                "SELECT blob_id FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?",
                (mailbox_id, uid),
            ).fetchone()
            if row is not None:
                present.append((uid, int(row[0])))
        if not present:
            return []
        modseq = flag_writes.next_modseq(self.tx, mailbox_id)
        self.tx.touched.add(mailbox_id)
        for uid, blob_id in present:
            self.conn.execute(
                "DELETE FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid)
            )
            self.conn.execute(
                "INSERT OR REPLACE INTO mailbox_vanished(mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                (mailbox_id, uid, modseq),
            )
            self.tx.blobs.release(blob_id)
        return [uid for uid, _ in present]

    def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: Iterable[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        return flag_writes.store_flags(self.tx, mailbox_id, uids, mode, flags, unchanged_since)

    def write_flag_change(
        self,
        mailbox_id: int,
        before: Mapping[int, tuple[str, ...]],
        after: Mapping[tuple[str, ...], tuple[str, ...]],
        mode: FlagMode,
        flags: Iterable[str],
    ) -> FlagWrite:
        return flag_writes.write_flag_change(self.tx, mailbox_id, before, after, mode, flags)

    # --- reads ---------------------------------------------------------------------------------

    def deleted_uids(self, mailbox_id: int, within: Sequence[int] | None = None) -> list[int]:
        rows = self.conn.execute(
            "SELECT uid, flags FROM mailbox_messages WHERE mailbox_id = ? AND flags LIKE ?"
            " ORDER BY uid",
            (mailbox_id, "%\\Deleted%"),
        )
        uids = [int(uid) for uid, flags in rows if DELETED in split_flags(flags)]
        if within is not None:
            allowed = set(within)
            uids = [u for u in uids if u in allowed]
        return uids

    def states(self, mailbox_id: int, since_modseq: int = 0) -> list[MessageState]:
        rows = self.conn.execute(
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

    def columns(self, mailbox_id: int) -> MessageColumns:
        """Cheaper than one object per message, and each distinct flag set is one tuple."""
        rows = self.conn.execute(
            "SELECT uid, flags, modseq FROM mailbox_messages WHERE mailbox_id = ? ORDER BY uid",
            (mailbox_id,),
        ).fetchall()
        shared: dict[str, tuple[str, ...]] = {}
        flags = [
            shared[f] if f in shared else shared.setdefault(f, split_flags(f)) for _, f, _ in rows
        ]
        return MessageColumns(
            [r[0] for r in rows], flags, [r[2] for r in rows], list(shared.values())
        )

    def vanished_since(self, mailbox_id: int, since_modseq: int) -> list[int]:
        """UIDs expunged after `since_modseq` (RFC 7162 §3.2.10)."""
        rows = self.conn.execute(
            "SELECT uid FROM mailbox_vanished WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
            (mailbox_id, since_modseq),
        )
        return [int(r[0]) for r in rows]

    def keywords(self, mailbox_id: int) -> set[str]:
        found: set[str] = set()
        for (flags,) in self.conn.execute(
            "SELECT DISTINCT flags FROM mailbox_messages WHERE mailbox_id = ? AND flags != ''",
            (mailbox_id,),
        ):
            found.update(f for f in split_flags(flags) if not f.startswith("\\"))
        return found

    def news(
        self, mailbox_id: int, since: int, claim_recent_after: int | None = None
    ) -> MailboxNews | None:
        info = self.tx.mailboxes.get(mailbox_id)
        if info is None:
            return None
        changed = self.states(mailbox_id, since)
        recent_from = None
        if claim_recent_after is not None and any(s.uid > claim_recent_after for s in changed):
            recent_from = self.tx.mailboxes.claim_recent(mailbox_id)
        return MailboxNews(
            changed, self.vanished_since(mailbox_id, since), info.highestmodseq, recent_from
        )

    def fetch_rows(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        *,
        summary: bool,
        content: Content,
        must_contain: tuple[str, str] | None = None,
        content_budget: int | None = None,
    ) -> list[FetchRow]:
        """For Subject, `must_contain` uses the stored decoded subjects; for other headers the
        summary and trace headers (unless an RFC 2047 word could hide the word)."""
        header_only = content == "header"
        full = bool(content) and not header_only
        if full and content_budget is not None and len(uids) > 1:
            uids = self._within_budget(mailbox_id, uids, content_budget)
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
        summaries = self.tx.summaries
        for condition, values in uid_filters(uids, "m.uid"):
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
            cursor = self.conn.execute(query, arguments)
            if not content:
                # Metadata and summaries only: the rows as SQLite gives them.
                rows += [
                    FetchRow(
                        uid,
                        modseq,
                        date,
                        size,
                        (packed or summaries.now(blob)) if summary else None,
                        None,
                    )
                    for uid, modseq, date, size, _, packed, _, _, blob in cursor
                ]
                continue
            for uid, modseq, date, size, prefix, packed, data, path, blob in cursor:
                if summary and packed is None:
                    packed = summaries.now(blob)
                if header_only:
                    # The header block kept in the summary: the body is never read.
                    header = wire_part(packed, 3) if packed is not None else None
                    if header is None:
                        header = header_block(self.tx.blobs.read(int(blob)))
                    body = bytes(prefix) + header
                else:
                    body = bytes(prefix) + self.tx.blobs.content(data, path)
                rows.append(FetchRow(uid, modseq, date, size, packed if summary else None, body))
        rows.sort(key=lambda r: r.uid)
        return rows

    def _within_budget(self, mailbox_id: int, uids: Sequence[int], budget: int) -> list[int]:
        """The first of `uids` (in UID order, present ones) whose sizes fit `budget` (one at
        least): a FETCH of many large messages reads them a few at a time."""
        sizes: list[tuple[int, int]] = []
        for condition, values in uid_filters(uids):
            sizes += self.conn.execute(
                f"SELECT uid, size FROM mailbox_messages WHERE mailbox_id = ? AND {condition}",
                (mailbox_id, *values),
            ).fetchall()
        sizes.sort()
        kept: list[int] = []
        total = 0
        for uid, size in sizes:
            if kept and total + size > budget:
                break
            kept.append(uid)
            total += size
        return kept

    def read(self, mailbox_id: int, uid: int) -> bytes | None:
        row = self.conn.execute(
            "SELECT blob_id, prefix FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?",
            (mailbox_id, uid),
        ).fetchone()
        if row is None:
            return None
        try:
            return bytes(row[1]) + self.tx.blobs.read(int(row[0]))
        except StoreError:
            return None

    def listing(self, mailbox_id: int) -> MailboxListing | None:
        row = self.conn.execute(
            "SELECT uidvalidity, uidnext, highestmodseq FROM mailboxes WHERE id = ?",
            (mailbox_id,),
        ).fetchone()
        if row is None:
            return None
        rows = self.conn.execute(
            "SELECT uid, size, blob_id, length(prefix) FROM mailbox_messages"
            " WHERE mailbox_id = ? ORDER BY uid",
            (mailbox_id,),
        )
        messages = tuple(ListedMessage(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows)
        return MailboxListing(mailbox_id, int(row[0]), int(row[1]), int(row[2]), messages)

    def stored(self, mailbox_id: int) -> list[StoredMessage]:
        rows = self.conn.execute(
            "SELECT uid, flags, internal_date, size, blob_id, prefix FROM mailbox_messages"
            " WHERE mailbox_id = ? ORDER BY uid",
            (mailbox_id,),
        )
        return [StoredMessage(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]
