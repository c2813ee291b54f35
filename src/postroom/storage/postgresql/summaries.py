"""The IMAP summaries of blobs in PostgreSQL (storage.api.Summaries): ENVELOPE, BODYSTRUCTURE,
header block and sort keys packed by storage/summary.py, with the blob's subject index."""

from __future__ import annotations

from typing import TYPE_CHECKING

from postroom.proto.imap.search import subject_index
from postroom.storage.summary import summarise_packed, wire_part

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx


class PgSummaries:
    def __init__(self, tx: PgTx) -> None:
        self.tx = tx
        self.conn = tx.conn
        # The blob `blobs.add` made last, with its bytes, until its summary is made: a message
        # delivered as it is accepted is summarised from memory, not read back. The writer
        # forgets it before each job (what another job added may have been undone).
        self.fresh: tuple[int, bytes] | None = None

    def make(self, blob_id: int) -> None:
        fresh = self.fresh
        if fresh is not None and fresh[0] == blob_id:
            self.fresh = None
            self.put(blob_id, summarise_packed(fresh[1]))
            return
        row = self.conn.execute(
            "SELECT s.blob_id FROM blobs b LEFT JOIN blob_summaries s ON s.blob_id = b.id"
            " WHERE b.id = %s",
            (blob_id,),
        ).fetchone()
        if row is None or row[0] is not None:
            return
        self.put(blob_id, summarise_packed(self.tx.blobs.read(blob_id)))

    def now(self, blob_id: int) -> bytes:
        """The summary of a blob that has none stored yet (made, not kept)."""
        return summarise_packed(self.tx.blobs.read(blob_id))

    def put(self, blob_id: int, summary: bytes) -> None:
        """Keep a blob's summary, with its subject index (what SEARCH SUBJECT reads)."""
        subject = subject_index(wire_part(summary, 3))
        self.conn.execute(
            "WITH s AS (INSERT INTO blob_summaries(blob_id, summary) VALUES (%s, %s)"
            " ON CONFLICT (blob_id) DO UPDATE SET summary = excluded.summary)"
            " INSERT INTO blob_subjects(blob_id, subject) VALUES (%s, %s)"
            " ON CONFLICT (blob_id) DO UPDATE SET subject = excluded.subject",
            (blob_id, summary, blob_id, subject),
        )
