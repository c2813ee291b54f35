"""The PostgreSQL side of `postroom storage migrate` (storage/migration.py): rows written kind
by kind into a database this postroom migrated, each batch in one transaction with the key of
its last row, so a copy that was stopped anywhere resumes after the last batch committed and
never writes a row twice.

The rows keep their ids (`OVERRIDING SYSTEM VALUE`); the identity sequences are moved past
them at the end. A content is written to `blob_chunks` with COPY a chunk at a time as the source
reads it. A history row's events become rows of `history_events`, its keys rows of
`history_keys`. The database must be empty or hold a copy an earlier run began: `meta` says
which ('migrate.started', then 'migrate.complete'; 'migrate.after.KIND': where KIND resumes).
A database holding tables of something else is refused before postroom makes its own there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import psycopg

from postroom.storage.migration import (
    BLOB_BYTES,
    HISTORY_EVENTS,
    KINDS,
    Blob,
    ForeignTarget,
    History,
    Kind,
    Row,
)
from postroom.storage.postgresql.blobs import CHUNK_SIZE
from postroom.storage.postgresql.errors import as_failure, describe, open_failure
from postroom.storage.postgresql.schema import stored_version
from postroom.storage.postgresql.store import connect, open_database
from postroom.storage.records import StorageFailure

STARTED = "migrate.started"
COMPLETE = "migrate.complete"
AFTER = "migrate.after."
# Tables whose `id` is an identity column: their sequences go past the ids copied.
_IDENTITIES = (
    "users",
    "blobs",
    "mailboxes",
    "mailbox_messages",
    "queue_recipients",
    "dmarc_reports",
)


def _key_text(key: tuple[object, ...]) -> str:
    """A resume key as JSON (bytes as {"hex": ...})."""
    return json.dumps([{"hex": v.hex()} if isinstance(v, bytes) else v for v in key])


def _key_from_text(text: str) -> tuple[object, ...]:
    return tuple(bytes.fromhex(v["hex"]) if isinstance(v, dict) else v for v in json.loads(text))


class PgImport:
    """A PostgreSQL database (`dsn`) the copy writes to; its schema is made or migrated first."""

    def __init__(self, dsn: str, password: str | None) -> None:
        self.where = describe(dsn)
        try:
            with connect(dsn, password) as probe:
                foreign = stored_version(probe) == 0 and probe.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema())"
                ).fetchone() == (True,)
        except psycopg.Error as error:
            raise open_failure(error, self.where) from None
        if foreign:  # someone else's tables: postroom's are not made beside them
            raise ForeignTarget(
                f"{self.where} holds tables that are not postroom's;"
                " migrate into a new, empty database (createdb NAME)"
            )
        self.conn = open_database(dsn, password)
        self._booleans: set[tuple[str, str]] = set()
        self._bytes: set[tuple[str, str]] = set()
        for table, column, kind in self.conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
        ):
            if kind == "boolean":
                self._booleans.add((str(table), str(column)))
            elif kind == "bytea":
                self._bytes.add((str(table), str(column)))

    def close(self) -> None:
        self.conn.close()

    def failure(self, error: BaseException) -> StorageFailure | None:
        """The StorageFailure an exception of the copy is (None: something else)."""
        return as_failure(error, self.where)

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def begin(self) -> str:
        """'new', 'resumed' or 'complete': what the database held. ForeignTarget when it holds
        data no copy put there."""
        if self._meta(COMPLETE) is not None:
            return "complete"
        if self._meta(STARTED) is not None:
            return "resumed"
        holding = [
            kind.name
            for kind in KINDS
            if self.conn.execute(f"SELECT EXISTS (SELECT 1 FROM {kind.name})").fetchone() == (True,)
        ]
        if holding:
            raise ForeignTarget(
                f"{self.where} already holds data no migration copied there"
                f" ({', '.join(holding[:3])}{', ...' if len(holding) > 3 else ''});"
                " migrate into a new, empty database (createdb NAME)"
            )
        self._set_meta(STARTED, repr(time.time()))
        return "new"

    def position(self, kind: Kind) -> tuple[object, ...] | None:
        """The key of the last row of `kind` written (None: none yet)."""
        text = self._meta(AFTER + kind.name)
        return None if text is None else _key_from_text(text)

    def write(self, kind: Kind, rows: Sequence[Row]) -> None:
        """The rows, and the key of the last as where `kind` resumes, in one transaction."""
        if not rows:
            return
        self.conn.execute("BEGIN")
        try:
            insert = (
                f"INSERT INTO {kind.name} ({', '.join(kind.fields)}) OVERRIDING SYSTEM VALUE"
                f" VALUES ({', '.join(['%s'] * len(kind.fields))})"
            )
            with self.conn.cursor() as cursor:
                cursor.executemany(insert, [self._values(kind, row) for row in rows])
            for row in rows:
                if isinstance(row, Blob):
                    self._chunks(row)
                elif isinstance(row, History):
                    self._history(row)
            self._set_meta(AFTER + kind.name, _key_text(rows[-1].key))
        except BaseException:
            if not self.conn.closed:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _values(self, kind: Kind, row: Row) -> tuple[object, ...]:
        values = list(row.values)
        for index, name in enumerate(kind.fields):
            value = values[index]
            if value is None:
                continue
            if (kind.name, name) in self._booleans:
                values[index] = bool(value)
            elif (kind.name, name) in self._bytes and isinstance(value, str):
                values[index] = value.encode()
        return tuple(values)

    def _chunks(self, blob: Blob) -> None:
        blob_id = blob.values[0]
        with self.conn.cursor().copy("COPY blob_chunks(blob_id, seq, data) FROM STDIN") as copy:
            for seq, chunk in enumerate(blob.chunks(CHUNK_SIZE)):
                copy.write_row((blob_id, seq, chunk))

    def _history(self, history: History) -> None:
        message_id = history.values[0]
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO history_events(message_id, moment, line) VALUES (%s, %s, %s)",
                [(message_id, float(json.loads(line)[0]), line) for line in history.events],
            )
        self.conn.execute(
            "INSERT INTO history_keys(key, message_id) SELECT key, %s FROM unnest(%s::text[])"
            " AS key ON CONFLICT DO NOTHING",
            (message_id, sorted(set(history.keys))),
        )

    def finish(self) -> None:
        """Identity sequences past the ids copied, and the copy marked complete."""
        self.conn.execute("BEGIN")
        for table in _IDENTITIES:
            self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id))"
                f" FROM {table} HAVING max(id) IS NOT NULL"
            )
        self._set_meta(COMPLETE, repr(time.time()))
        self.conn.execute("COMMIT")

    def counts(self) -> dict[str, int]:
        """Rows of each kind, the history's events and the contents' bytes."""
        found: dict[str, int] = {}
        for kind in KINDS:
            row = self.conn.execute(f"SELECT count(*) FROM {kind.name}").fetchone()
            found[kind.name] = int(row[0]) if row else 0
        row = self.conn.execute("SELECT count(*) FROM history_events").fetchone()
        found[HISTORY_EVENTS] = int(row[0]) if row else 0
        row = self.conn.execute(
            "SELECT coalesce(sum(octet_length(data)), 0) FROM blob_chunks"
        ).fetchone()
        found[BLOB_BYTES] = int(row[0]) if row else 0
        return found
