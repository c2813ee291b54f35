"""Message contents in PostgreSQL (storage.api.Blobs): a `blobs` row counted by references,
its bytes in `blob_chunks` rows of CHUNK_SIZE bytes each.

A spilled message is copied from its file into the table with COPY a chunk at a time, never
read whole into memory; `read` gives the whole content, as the Blobs interface asks. The row and
its chunks go with the last reference (ON DELETE CASCADE).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from postroom.storage.records import StoreError, os_failure

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx

CHUNK_SIZE = 256 * 1024


class PgBlobs:
    def __init__(self, tx: PgTx) -> None:
        self.tx = tx
        self.conn = tx.conn

    def _new(self, size: int) -> int:
        row = self.conn.execute(
            "INSERT INTO blobs(size, refs) VALUES (%s, 0) RETURNING id", (size,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    def add(self, data: bytes) -> int:
        if len(data) <= CHUNK_SIZE:  # the common case in one statement: row and chunk
            row = self.conn.execute(
                "WITH b AS (INSERT INTO blobs(size, refs) VALUES (%s, 0) RETURNING id),"
                " c AS (INSERT INTO blob_chunks(blob_id, seq, data)"
                " SELECT id, 0, %s FROM b WHERE %s)"
                " SELECT id FROM b",
                (len(data), data, bool(data)),
            ).fetchone()
            assert row is not None
            return int(row[0])
        blob_id = self._new(len(data))
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO blob_chunks(blob_id, seq, data) VALUES (%s, %s, %s)",
                [
                    (blob_id, seq, data[start : start + CHUNK_SIZE])
                    for seq, start in enumerate(range(0, len(data), CHUNK_SIZE))
                ],
            )
        return blob_id

    def add_file(self, path: Path) -> int:
        """A new blob with the content of the file at `path`, copied a chunk at a time."""
        try:
            with path.open("rb") as source:
                size = path.stat().st_size
                blob_id = self._new(size)
                with self.conn.cursor().copy(
                    "COPY blob_chunks(blob_id, seq, data) FROM STDIN"
                ) as copy:
                    seq = 0
                    while chunk := source.read(CHUNK_SIZE):
                        copy.write_row((blob_id, seq, chunk))
                        seq += 1
        except OSError as error:
            raise os_failure(error, path) from None
        return blob_id

    def add_reference(self, blob_id: int) -> None:
        self.conn.execute("UPDATE blobs SET refs = refs + 1 WHERE id = %s", (blob_id,))

    def release(self, blob_id: int) -> None:
        """Drop one reference; the last one removes the blob and its chunks."""
        row = self.conn.execute(
            "UPDATE blobs SET refs = refs - 1 WHERE id = %s RETURNING refs", (blob_id,)
        ).fetchone()
        if row is not None and row[0] <= 0:
            self.conn.execute("DELETE FROM blobs WHERE id = %s", (blob_id,))

    def read(self, blob_id: int) -> bytes:
        """The whole content (storage.api.Blobs.read gives bytes), in one statement."""
        rows = self.conn.execute(
            "SELECT data FROM blob_chunks WHERE blob_id = %s ORDER BY seq", (blob_id,)
        ).fetchall()
        if not rows and not self.exists(blob_id):  # an empty content has no chunks
            raise StoreError(f"message content {blob_id} is missing from the store")
        return b"".join(bytes(row[0]) for row in rows)

    def exists(self, blob_id: int) -> bool:
        row = self.conn.execute("SELECT 1 FROM blobs WHERE id = %s", (blob_id,)).fetchone()
        return row is not None
