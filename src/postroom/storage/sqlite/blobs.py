"""Blobs (message contents, counted references) and their IMAP summaries, in SQLite.

A small content lives in its `blobs` row; a large one in a file under data_dir/blobs named by
the row (the store's writer placed and synced it before the commit that references it). Each
queue entry and each mailbox copy holds one reference; the row goes with the last one, and its
file is unlinked once that transaction has committed.
"""

from __future__ import annotations

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
        blob_id = int(cursor.lastrowid or 0)
        self.tx.summaries.fresh = (blob_id, data)
        return blob_id

    def add_file(self, size: int, relative: str) -> int:
        """A blob whose content is the (already durable) file blob_dir/relative."""
        cursor = self.conn.execute(
            "INSERT INTO blobs(size, refs, data, path) VALUES (?, 0, NULL, ?)", (size, relative)
        )
        self.tx.summaries.fresh = None  # its ID may be that of a fresh blob rolled back
        return int(cursor.lastrowid or 0)

    def add_reference(self, blob_id: int) -> None:
        self.conn.execute("UPDATE blobs SET refs = refs + 1 WHERE id = ?", (blob_id,))

    def release(self, blob_id: int) -> None:
        """Drop one reference; the last one removes the blob (its file after the commit)."""
        self.conn.execute("UPDATE blobs SET refs = refs - 1 WHERE id = ?", (blob_id,))
        row = self.conn.execute("SELECT refs, path FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        if row and row[0] <= 0:
            self.conn.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
            if self.tx.summaries.fresh is not None and self.tx.summaries.fresh[0] == blob_id:
                self.tx.summaries.fresh = None
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


class SqliteSummaries:
    def __init__(self, tx: SqliteTx) -> None:
        self.tx = tx
        self.conn = tx.conn
        # The blob `blobs.add` made last, with its bytes, until its summary is made: a message
        # delivered as it is accepted is summarised from memory, not read back. (A rolled-back
        # blob's ID can come again, but only from the next `add` or `add_file`, which replace
        # this; `release` forgets it when the blob goes.)
        self.fresh: tuple[int, bytes] | None = None

    def make(self, blob_id: int) -> None:
        fresh = self.fresh
        if fresh is not None and fresh[0] == blob_id:
            self.fresh = None
            self.put(blob_id, summarise_packed(fresh[1]))
            return
        row = self.conn.execute(
            "SELECT b.data, b.path, s.blob_id FROM blobs b"
            " LEFT JOIN blob_summaries s ON s.blob_id = b.id WHERE b.id = ?",
            (blob_id,),
        ).fetchone()
        if row is None or row[2] is not None:
            return
        self.put(blob_id, summarise_packed(self.tx.blobs.content(row[0], row[1])))

    def now(self, blob_id: int) -> bytes:
        """The summary of a blob that has none stored yet (made, not kept): an APPEND's is
        written once the writer is idle, and a crash in between can lose it."""
        return summarise_packed(self.tx.blobs.read(blob_id))

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

    def repair_recent(self, window: int = 10_000) -> int:
        """Make the summaries of the last `window` messages added to mailboxes that have none
        (an APPEND's is written unsynced once the writer is idle, so a crash can leave the
        last few without), in one transaction. Returns how many were made."""
        rows = self.conn.execute(
            "SELECT DISTINCT m.blob_id FROM mailbox_messages m"
            " LEFT JOIN blob_summaries s ON s.blob_id = m.blob_id"
            " WHERE m.id > (SELECT coalesce(max(id), 0) FROM mailbox_messages) - ?"
            " AND s.blob_id IS NULL",
            (window,),
        ).fetchall()
        if rows:
            with self.tx.transaction():
                for (blob_id,) in rows:
                    self.make(int(blob_id))
        return len(rows)
