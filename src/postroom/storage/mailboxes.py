"""Mailbox operations shared by POP3 and IMAP: list a mailbox, read a message, expunge.

Functions of a `Database`, run by the caller on the store's reader (listing, reading) or inside
the group-commit writer (expunge). A stored message is its copy's `prefix` (Return-Path and
trace headers) followed by the shared blob; `size` is the length of exactly those bytes, with
the CRLF line endings SMTP received them with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from postroom.storage.database import Database, StoreError

INBOX = "INBOX"


@dataclass(frozen=True, slots=True)
class ListedMessage:
    """One message of a mailbox as a listing shows it."""

    uid: int
    size: int  # octets of prefix + blob, as sent to a client
    blob_id: int
    prefix_size: int


@dataclass(frozen=True, slots=True)
class MailboxListing:
    """A snapshot of one mailbox: its identity, UIDVALIDITY and messages in UID order."""

    mailbox_id: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: tuple[ListedMessage, ...]


def mailbox_listing(db: Database, mailbox_id: int) -> MailboxListing | None:
    """The messages of one mailbox in UID order, or None when the mailbox does not exist."""
    row = db.conn.execute(
        "SELECT uidvalidity, uidnext, highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    if row is None:
        return None
    rows = db.conn.execute(
        "SELECT uid, size, blob_id, length(prefix) FROM mailbox_messages"
        " WHERE mailbox_id = ? ORDER BY uid",
        (mailbox_id,),
    )
    messages = tuple(ListedMessage(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows)
    return MailboxListing(mailbox_id, int(row[0]), int(row[1]), int(row[2]), messages)


def inbox_listing(db: Database, user_id: int) -> MailboxListing | None:
    """The user's INBOX (the POP3 maildrop), or None when the user has none."""
    mailbox_id = db.mailbox_id(user_id, INBOX)
    return None if mailbox_id is None else mailbox_listing(db, mailbox_id)


def read_message(db: Database, blob_dir: Path, mailbox_id: int, uid: int) -> bytes | None:
    """The full message (prefix + blob), or None when that UID is no longer in the mailbox."""
    row = db.conn.execute(
        "SELECT blob_id, prefix FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?",
        (mailbox_id, uid),
    ).fetchone()
    if row is None:
        return None
    try:
        return bytes(row[1]) + db.read_blob(int(row[0]), blob_dir)
    except StoreError:
        return None


def expunge(db: Database, mailbox_id: int, uids: Iterable[int]) -> list[str]:
    """Remove messages by UID; returns blob files to unlink once the transaction is committed.

    UIDs not in the mailbox are ignored. The expunge gets one new MODSEQ (the mailbox's
    HIGHESTMODSEQ grows, RFC 7162 §3.1.10) and every removed UID is recorded with it in
    `mailbox_vanished`, so QRESYNC clients can be told what went (RFC 7162 §3.2.10).
    """
    present: list[tuple[int, int]] = []
    for uid in sorted(set(uids)):
        row = db.conn.execute(
            "SELECT blob_id FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?",
            (mailbox_id, uid),
        ).fetchone()
        if row is not None:
            present.append((uid, int(row[0])))
    if not present:
        return []
    (modseq,) = db.conn.execute(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?"
        " RETURNING highestmodseq",
        (mailbox_id,),
    ).fetchone()
    db.touched.add(mailbox_id)  # the store wakes the sessions that have it open
    unlink: list[str] = []
    for uid, blob_id in present:
        db.conn.execute(
            "DELETE FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid)
        )
        db.conn.execute(
            "INSERT OR REPLACE INTO mailbox_vanished(mailbox_id, uid, modseq) VALUES (?, ?, ?)",
            (mailbox_id, uid, int(modseq)),
        )
        path = db.release_blob(blob_id)
        if path:
            unlink.append(path)
    return unlink
