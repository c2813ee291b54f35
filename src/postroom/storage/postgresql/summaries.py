"""The IMAP summaries of blobs in PostgreSQL (storage.api.Summaries): ENVELOPE, BODYSTRUCTURE,
header block and sort keys packed by storage/summary.py, with the blob's subject index.

A summary is made when it is first needed, not when mail arrives (as the SQLite store does,
see its blobs.py): a reader that meets a blob without one makes it (`now`) and notes it in
`made`; the store's writer keeps the noted ones later (`keep`). Blob IDs are never handed out
again (an identity column), so a noted summary still belongs to the blob of its ID, if that
blob is still there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from postroom.proto.imap.search import subject_index
from postroom.storage.summary import summarise_packed, wire_part

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx

# Summaries a reader made and the writer has yet to keep, at most this many per transaction
# (past it they are made again next time): bounded memory whatever a client fetches.
MADE_LIMIT = 1000


class PgSummaries:
    def __init__(self, tx: PgTx) -> None:
        self.tx = tx
        self.conn = tx.conn
        self.made: list[tuple[int, bytes]] = []  # made by `now`, for the writer to keep

    def make(self, blob_id: int) -> None:
        row = self.conn.execute(
            "SELECT s.blob_id FROM blobs b LEFT JOIN blob_summaries s ON s.blob_id = b.id"
            " WHERE b.id = %s",
            (blob_id,),
        ).fetchone()
        if row is None or row[0] is not None:
            return
        self.put(blob_id, summarise_packed(self.tx.blobs.read(blob_id)))

    def now(self, blob_id: int) -> bytes:
        """The summary of a blob that has none stored yet, made now and noted in `made`."""
        summary = summarise_packed(self.tx.blobs.read(blob_id))
        if len(self.made) < MADE_LIMIT:
            self.made.append((blob_id, summary))
        return summary

    def keep(self, made: list[tuple[int, bytes]]) -> None:
        """Keep summaries readers made, for the blobs still there that have none yet."""
        for blob_id, summary in made:
            row = self.conn.execute(
                "SELECT s.blob_id FROM blobs b LEFT JOIN blob_summaries s ON s.blob_id = b.id"
                " WHERE b.id = %s",
                (blob_id,),
            ).fetchone()
            if row is not None and row[0] is None:
                self.put(blob_id, summary)

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
