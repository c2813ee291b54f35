"""Blobs (message contents, counted references) and their IMAP summaries, in SQLite.

A small content lives in its `blobs` row; a large one in a file under data_dir/blobs named by
the row (the store's writer placed and synced it before the commit that references it). Each
queue entry and each mailbox copy holds one reference; the row goes with the last one, and its
file is unlinked once that transaction has committed.

A summary is made when it is first needed, not when mail arrives (as Dovecot fills its cache
when a client first asks): delivery stays cheap, and mail nobody reads over IMAP (POP3 users,
forwards) is never parsed. A reader that meets a blob without one makes it (`now`) and notes
it; the store's writer keeps the noted ones later (`keep`), after checking that the blob ID
still names the same content. APPEND has its own made after its commit (`make`).
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from postroom.proto.imap.search import subject_index
from postroom.storage.records import StoreError
from postroom.storage.summary import summarise_packed, wire_part

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx


class SqliteBlobs:
    def __init__(self, tx: SqliteTx) -> None:
        self.tx = tx
        self.conn = tx.conn

    def add(self, data: bytes) -> int:
        cursor = self.conn.execute(
            "INSERT INTO blobs(size, refs, data, path) VALUES (?, 0, ?, NULL)", (len(data), data)
        )
        return int(cursor.lastrowid or 0)

    def add_file(self, size: int, relative: str) -> int:
        """A blob whose content is the (already durable) file blob_dir/relative."""
        cursor = self.conn.execute(
            "INSERT INTO blobs(size, refs, data, path) VALUES (?, 0, NULL, ?)", (size, relative)
        )
        return int(cursor.lastrowid or 0)

    def add_reference(self, blob_id: int) -> None:
        self.conn.execute("UPDATE blobs SET refs = refs + 1 WHERE id = ?", (blob_id,))

    def release(self, blob_id: int) -> None:
        """Drop one reference; the last one removes the blob (its file after the commit)."""
        self.conn.execute("UPDATE blobs SET refs = refs - 1 WHERE id = ?", (blob_id,))
        row = self.conn.execute("SELECT refs, path FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        if row and row[0] <= 0:
            self.conn.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
            if row[1]:
                self.tx.unlink.append(str(row[1]))

    def read(self, blob_id: int) -> bytes:
        row = self.conn.execute("SELECT data, path FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        if row is None:
            raise StoreError(f"message content {blob_id} is missing from the store")
        return self.content(row[0], row[1])

    def content(self, data: bytes | None, path: str | None) -> bytes:
        """A blob's bytes from its row's `data` and `path` columns."""
        if data is not None:
            return bytes(data)
        try:
            return (self.tx.blob_dir / str(path)).read_bytes()
        except OSError as error:
            raise StoreError(f"message file blobs/{path} is unreadable: {error.strerror}") from None

    def exists(self, blob_id: int) -> bool:
        row = self.conn.execute("SELECT 1 FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        return row is not None


# Summaries a reader made and the writer has yet to keep, at most this many per connection (past
# it they are made again next time): bounded memory whatever a client fetches.
MADE_LIMIT = 1000


def content_identity(data: bytes | None, path: str | None, content: bytes) -> str | int:
    """What tells a blob row's content from another's under the same ID (SQLite hands out the
    ID of a deleted last row again): its file's name, which is unique, or a CRC of its bytes."""
    return str(path) if data is None else zlib.crc32(content)


class SqliteSummaries:
    def __init__(self, tx: SqliteTx) -> None:
        self.tx = tx
        self.conn = tx.conn
        # Made by `now` (blob ID, summary, content identity), for the writer to keep.
        self.made: list[tuple[int, bytes, str | int]] = []

    def make(self, blob_id: int) -> None:
        row = self.conn.execute(
            "SELECT b.data, b.path, s.blob_id FROM blobs b"
            " LEFT JOIN blob_summaries s ON s.blob_id = b.id WHERE b.id = ?",
            (blob_id,),
        ).fetchone()
        if row is None or row[2] is not None:
            return
        self.put(blob_id, summarise_packed(self.tx.blobs.content(row[0], row[1])))

    def now(self, blob_id: int) -> bytes:
        """The summary of a blob that has none stored yet, made now and noted in `made`."""
        row = self.conn.execute("SELECT data, path FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        if row is None:
            raise StoreError(f"message content {blob_id} is missing from the store")
        content = self.tx.blobs.content(row[0], row[1])
        summary = summarise_packed(content)
        if len(self.made) < MADE_LIMIT:
            self.made.append((blob_id, summary, content_identity(row[0], row[1], content)))
        return summary

    def take_made(self) -> list[tuple[int, bytes, str | int]]:
        made, self.made = self.made, []
        return made

    def keep(self, made: list[tuple[int, bytes, str | int]]) -> None:
        """Keep summaries readers made, for blobs that still hold the content they were made
        from and have none yet."""
        for blob_id, summary, identity in made:
            row = self.conn.execute(
                "SELECT b.data, b.path, s.blob_id FROM blobs b"
                " LEFT JOIN blob_summaries s ON s.blob_id = b.id WHERE b.id = ?",
                (blob_id,),
            ).fetchone()
            if row is None or row[2] is not None:
                continue
            if content_identity(row[0], row[1], row[0] or b"") == identity:
                self.put(blob_id, summary)

    def put(self, blob_id: int, summary: bytes) -> None:
        """Keep a blob's summary, with its subject index (what SEARCH SUBJECT reads)."""
        subject = subject_index(wire_part(summary, 3))
        self.conn.execute(
            "INSERT OR REPLACE INTO blob_summaries(blob_id, summary) VALUES (?, ?)",
            (blob_id, summary),
        )
        self.conn.execute(
            "INSERT OR REPLACE INTO blob_subjects(blob_id, subject) VALUES (?, ?)",
            (blob_id, subject),
        )
