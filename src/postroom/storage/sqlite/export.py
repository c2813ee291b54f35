"""The embedded store read for `postroom storage migrate` (storage/migration.py): every kind's
rows in key order, from one read transaction (a consistent snapshot of the whole store).

Contents kept inline are small; those in files under data_dir/blobs are read a chunk at a time
while the target writes them, never whole. A history row brings its event lines and trace keys
(one text each here, rows of their own in PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from postroom.storage.migration import BLOB_BYTES, HISTORY_EVENTS, KINDS, Blob, History, Kind, Row
from postroom.storage.records import StorageFailure, os_failure
from postroom.storage.sqlite.connection import DB_NAME, SqliteTx

# The columns each kind is read in order of, when they are not its primary key's.
_KEYS: dict[str, tuple[str, ...]] = {
    "users": ("id",),
    "aliases": ("address", "target"),
    "blobs": ("id",),
    "blob_summaries": ("blob_id",),
    "blob_subjects": ("blob_id",),
    "mailboxes": ("id",),
    "subscriptions": ("user_id", "name"),
    "mailbox_messages": ("id",),
    "mailbox_vanished": ("mailbox_id", "uid"),
    "queue_messages": ("id",),
    "queue_recipients": ("id",),
    "queue_reports_pending": ("rowid",),  # no key of its own: its insertion order
    "message_history": ("id",),
    "dmarc_reports": ("id",),
    "dmarc_evaluations": ("policy_domain", "day", "source_ip", "header_from", "results"),
    "secrets": ("name",),
    "dkim_keys": ("domain", "selector"),
    "junk_tokens": ("user_id", "token"),
    "junk_totals": ("user_id",),
    "junk_trained": ("user_id", "digest"),
    "sieve_scripts": ("user_id", "name"),
    "sieve_replies": ("user_id", "sender", "handle"),
    "sieve_duplicates": ("user_id", "key"),
    "greylist_triplets": ("key",),
    "greylist_networks": ("network",),
    "abuse_blocks": ("kind", "client", "account"),
    "sending_counts": ("account",),
    "web_sessions": ("id_hash",),
    "api_tokens": ("id_hash",),
    "app_passwords": ("user_id", "name"),
}
PAGE = 500  # rows read per statement
BLOB_PAGE = 16  # contents read per statement (the small ones are in their rows)


class SqliteExport:
    """The store in `data_dir`, held in one read transaction until `close`."""

    def __init__(self, data_dir: Path) -> None:
        path = data_dir / DB_NAME
        if not path.exists():
            raise StorageFailure(f"{path}: there is no SQLite store there to migrate")
        self._tx = SqliteTx(data_dir)  # brings an older store to this postroom's schema
        self.conn = self._tx.conn
        self.blob_dir = self._tx.blob_dir
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT count(*) FROM meta").fetchone()  # the snapshot starts here

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self._tx.close()

    def counts(self) -> dict[str, int]:
        """Rows of each kind, the history's events and the contents' bytes."""
        found: dict[str, int] = {}
        for kind in KINDS:
            (found[kind.name],) = self.conn.execute(f"SELECT count(*) FROM {kind.name}").fetchone()
        # Each event is one line ending in "\n".
        (found[HISTORY_EVENTS],) = self.conn.execute(
            "SELECT coalesce(sum(length(events) - length(replace(events, char(10), ''))), 0)"
            " FROM message_history"
        ).fetchone()
        (found[BLOB_BYTES],) = self.conn.execute(
            "SELECT coalesce(sum(size), 0) FROM blobs"
        ).fetchone()
        return found

    def rows(self, kind: Kind, after: tuple[object, ...] | None) -> Iterator[Row]:
        """The kind's rows after the key `after` (all of them for None), in key order."""
        key = _KEYS[kind.name]
        columns = list(kind.fields)
        if kind.name == "message_history":
            columns += ["events", "(SELECT keys FROM trace_keys WHERE message_id = id)"]
        elif kind.name == "blobs":
            columns += ["data", "path"]
        select = f"SELECT {', '.join(columns)}, {', '.join(key)} FROM {kind.name}"
        page_rows = BLOB_PAGE if kind.name == "blobs" else PAGE
        order = f" ORDER BY {', '.join(key)} LIMIT {page_rows}"
        where = f" WHERE ({', '.join(key)}) > ({', '.join('?' * len(key))})"
        position = after
        while True:
            if position is None:
                page = self.conn.execute(select + order).fetchall()
            else:
                page = self.conn.execute(select + where + order, position).fetchall()
            for row in page:
                yield self._row(kind, tuple(row))
            if len(page) < page_rows:
                return
            position = tuple(page[-1][-len(key) :])

    def _row(self, kind: Kind, row: tuple[object, ...]) -> Row:
        count = len(kind.fields)
        values, key = row[:count], row[-len(_KEYS[kind.name]) :]
        if kind.name == "blobs":
            data, path = row[count], row[count + 1]
            return Blob(kind.name, key, values, chunks=self._chunks(data, path))
        if kind.name == "message_history":
            events, keys = str(row[count]), row[count + 1]
            return History(
                kind.name,
                key,
                values,
                events=tuple(events.splitlines()),
                keys=tuple(k for k in str(keys or "").split("\n") if k),
            )
        return Row(kind.name, key, values)

    def _chunks(self, data: object, path: object) -> Callable[[int], Iterator[bytes]]:
        """The content's bytes, `size` at a time: from the row (small contents), or read from
        its file under data_dir/blobs as they are asked for."""
        blob_dir = self.blob_dir

        def read(size: int) -> Iterator[bytes]:
            if data is not None:
                content = bytes(data) if isinstance(data, bytes) else str(data).encode()
                for start in range(0, len(content), size):
                    yield content[start : start + size]
                return
            file = blob_dir / str(path)
            try:
                with file.open("rb") as source:
                    while chunk := source.read(size):
                        yield chunk
            except OSError as error:
                raise os_failure(error, file) from None

        return read
