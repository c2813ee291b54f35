"""Synchronous SQLite access for the embedded store: every SQL statement postroom runs lives here.

A `Database` wraps one sqlite3 connection (WAL, synchronous=FULL). The server runs its methods
on dedicated threads (see `store.py`); the CLI calls them directly. Methods that write do not
commit: the caller owns the transaction (`transaction()` here, or the group-commit writer).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from postroom.model.queue import (
    Envelope,
    QueuedMessage,
    Recipient,
    RecipientState,
)
from postroom.proto.imap.search import subject_index
from postroom.storage.schema import DEFAULT_MAILBOXES, MIGRATIONS, SCHEMA, SCHEMA_VERSION
from postroom.storage.summary import summarise_packed, wire_part

MAX_ALIAS_DEPTH = 10


class StoreError(Exception):
    """A request the store refuses (duplicate user, unknown user, ...); message is for humans."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    address: str
    password_hash: str
    scram: str


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    messages: int
    unseen: int
    size: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    uid: int
    flags: str
    internal_date: float
    size: int
    blob_id: int
    prefix: bytes


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where mail for one RCPT address goes after alias expansion."""

    local_users: tuple[tuple[str, int], ...]  # (address, user id)
    remote: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.local_users and not self.remote


def normalize_address(address: str) -> str:
    """Addresses are compared case-insensitively, as Postfix and Dovecot do in practice."""
    return address.strip().lower()


class Database:
    """One connection to the store's SQLite file, with the operations postroom needs."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 10000")
        self.conn.execute("PRAGMA foreign_keys = ON")
        # Mailboxes whose messages changed in the current transaction (the store wakes the
        # IMAP sessions that have them open once it commits).
        self.touched: set[int] = set()
        if not readonly:
            self.conn.execute("PRAGMA journal_mode = WAL")
            # WAL + FULL: every COMMIT is fsynced before it returns (the durability contract).
            self.conn.execute("PRAGMA synchronous = FULL")
            self._migrate()

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        # executescript commits on its own; the schema is idempotent (IF NOT EXISTS).
        self.conn.executescript(SCHEMA)
        self.conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        (stored,) = self.conn.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ).fetchone()
        with self.transaction() as conn:
            for version in range(int(stored) + 1, SCHEMA_VERSION + 1):
                for step in MIGRATIONS.get(version, ()):
                    if isinstance(step, str):
                        conn.execute(step)
                    else:
                        step(conn)
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # --- users ---------------------------------------------------------------------------------

    def add_user(self, address: str, password_hash: str, scram: str) -> int:
        address = normalize_address(address)
        try:
            cursor = self.conn.execute(
                "INSERT INTO users(address, password_hash, scram, created) VALUES (?, ?, ?, ?)",
                (address, password_hash, scram, time.time()),
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"user {address} already exists") from None
        user_id = int(cursor.lastrowid or 0)
        for name, use in DEFAULT_MAILBOXES:
            self.create_mailbox(user_id, name, use)
            self.conn.execute(
                "INSERT OR IGNORE INTO subscriptions(user_id, name) VALUES (?, ?)", (user_id, name)
            )
        return user_id

    def create_mailbox(self, user_id: int, name: str, special_use: str = "") -> int:
        cursor = self.conn.execute(
            "INSERT INTO mailboxes(user_id, name, uidvalidity, special_use) VALUES (?, ?, ?, ?)",
            (user_id, name, self._next_uidvalidity(), special_use),
        )
        return int(cursor.lastrowid or 0)

    def _next_uidvalidity(self) -> int:
        """RFC 3501 §2.3.1.1: a mailbox created again under an old name must get a different
        UIDVALIDITY, so values come from a counter that starts at the clock and only grows."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
        value = max(int(time.time()), int(row[0]) + 1 if row else 0) % 0xFFFFFFFF or 1
        self.conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('uidvalidity', ?)", (str(value),)
        )
        return value

    def get_user(self, address: str) -> UserRecord | None:
        row = self.conn.execute(
            "SELECT id, address, password_hash, scram FROM users WHERE address = ?",
            (normalize_address(address),),
        ).fetchone()
        return UserRecord(*row) if row else None

    def list_users(self) -> list[tuple[str, float]]:
        rows = self.conn.execute("SELECT address, created FROM users ORDER BY address")
        return [(str(a), float(c)) for a, c in rows]

    def set_password(self, address: str, password_hash: str, scram: str) -> None:
        cursor = self.conn.execute(
            "UPDATE users SET password_hash = ?, scram = ? WHERE address = ?",
            (password_hash, scram, normalize_address(address)),
        )
        if cursor.rowcount == 0:
            raise StoreError(f"no user {address}")

    def delete_user(self, address: str) -> None:
        user = self.get_user(address)
        if user is None:
            raise StoreError(f"no user {address}")
        blob_ids = [
            int(row[0])
            for row in self.conn.execute(
                "SELECT mm.blob_id FROM mailbox_messages mm"
                " JOIN mailboxes m ON m.id = mm.mailbox_id"
                " WHERE m.user_id = ?",
                (user.id,),
            )
        ]
        self.conn.execute("DELETE FROM users WHERE id = ?", (user.id,))
        for blob_id in blob_ids:
            self.release_blob(blob_id)

    # --- aliases -------------------------------------------------------------------------------

    def add_alias(self, address: str, targets: list[str]) -> None:
        address = normalize_address(address)
        self.conn.executemany(
            "INSERT OR IGNORE INTO aliases(address, target) VALUES (?, ?)",
            [(address, normalize_address(t)) for t in targets],
        )

    def delete_alias(self, address: str) -> None:
        cursor = self.conn.execute(
            "DELETE FROM aliases WHERE address = ?", (normalize_address(address),)
        )
        if cursor.rowcount == 0:
            raise StoreError(f"no alias {address}")

    def list_aliases(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for address, target in self.conn.execute(
            "SELECT address, target FROM aliases ORDER BY address, target"
        ):
            result.setdefault(str(address), []).append(str(target))
        return result

    def alias_targets(self, address: str) -> list[str]:
        rows = self.conn.execute("SELECT target FROM aliases WHERE address = ?", (address,))
        return [str(row[0]) for row in rows]

    def resolve(self, address: str, local_domains: frozenset[str]) -> Resolution:
        """Expand aliases (recursively, loop-safe) into local users and remote addresses.

        An alias "@domain" catches every address of that local domain that is neither a user
        nor an alias of its own.
        """
        local: dict[str, int] = {}
        remote: list[str] = []
        seen: set[str] = set()

        def visit(addr: str, depth: int) -> None:
            if addr in seen or depth > MAX_ALIAS_DEPTH:
                return
            seen.add(addr)
            domain = addr.rpartition("@")[2]
            if domain not in local_domains:
                remote.append(addr)
                return
            targets = self.alias_targets(addr)
            user = self.get_user(addr)
            if user is not None:
                local.setdefault(user.address, user.id)
            if not targets and user is None:
                targets = self.alias_targets("@" + domain)
            for target in targets:
                visit(target, depth + 1)

        visit(normalize_address(address), 0)
        return Resolution(tuple(local.items()), tuple(dict.fromkeys(remote)))

    # --- blobs ---------------------------------------------------------------------------------

    def insert_blob(self, size: int, data: bytes | None, path: str | None) -> int:
        """A new blob with no references yet: each queue entry or mailbox copy adds one."""
        cursor = self.conn.execute(
            "INSERT INTO blobs(size, refs, data, path) VALUES (?, 0, ?, ?)", (size, data, path)
        )
        return int(cursor.lastrowid or 0)

    def release_blob(self, blob_id: int) -> str | None:
        """Drop one reference; returns the file path to unlink when the last one went."""
        self.conn.execute("UPDATE blobs SET refs = refs - 1 WHERE id = ?", (blob_id,))
        row = self.conn.execute("SELECT refs, path FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        if row and row[0] <= 0:
            self.conn.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
            return str(row[1]) if row[1] else None
        return None

    def read_blob(self, blob_id: int, blob_dir: Path) -> bytes:
        row = self.conn.execute("SELECT data, path FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        if row is None:
            raise StoreError(f"blob {blob_id} missing")
        if row[0] is not None:
            return bytes(row[0])
        return (blob_dir / str(row[1])).read_bytes()

    # --- queue ---------------------------------------------------------------------------------

    def enqueue(self, message: QueuedMessage) -> None:
        env = message.envelope
        self.conn.execute("UPDATE blobs SET refs = refs + 1 WHERE id = ?", (message.blob_id,))
        self.conn.execute(
            "INSERT INTO queue_messages(id, blob_id, prefix, sender, size, params, arrival,"
            " client_addr, client_helo, protocol, tls, auth_user) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                message.id,
                message.blob_id,
                message.prefix,
                env.sender,
                message.size,
                env.params_json(),
                env.arrival,
                env.client_addr,
                env.client_helo,
                env.protocol,
                env.tls,
                env.auth_user,
            ),
        )
        for rcpt in message.recipients:
            cursor = self.conn.execute(
                "INSERT INTO queue_recipients(message_id, address, original, orcpt, notify,"
                " user_id, state, next_attempt, last_reply) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    message.id,
                    rcpt.address,
                    rcpt.original,
                    rcpt.orcpt,
                    ",".join(rcpt.notify) if rcpt.notify else None,
                    rcpt.user_id,
                    str(rcpt.state),
                    rcpt.next_attempt or env.arrival,
                    rcpt.last_reply,
                ),
            )
            rcpt.id = int(cursor.lastrowid or 0)

    def load_message(self, message_id: str) -> QueuedMessage | None:
        row = self.conn.execute(
            "SELECT q.id, q.blob_id, q.prefix, q.sender, q.params, q.arrival, q.client_addr,"
            " q.client_helo, q.protocol, q.tls, q.auth_user, b.size"
            " FROM queue_messages q JOIN blobs b ON b.id = q.blob_id WHERE q.id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            return None
        envelope = Envelope(
            sender=row[3],
            params=Envelope.params_from_json(row[4]),
            client_addr=row[6],
            client_helo=row[7],
            protocol=row[8],
            tls=row[9],
            auth_user=row[10],
            arrival=row[5],
        )
        recipients = [
            Recipient(
                address=r[1],
                original=r[2],
                user_id=r[5],
                orcpt=r[3],
                notify=tuple(r[4].split(",")) if r[4] else None,
                state=RecipientState(r[6]),
                attempts=r[7],
                next_attempt=r[8],
                last_reply=r[9],
                id=r[0],
            )
            for r in self.conn.execute(
                "SELECT id, address, original, orcpt, notify, user_id, state, attempts,"
                " next_attempt, last_reply FROM queue_recipients WHERE message_id = ? ORDER BY id",
                (message_id,),
            )
        ]
        return QueuedMessage(row[0], envelope, bytes(row[2]), row[1], row[11], recipients)

    def messages_with_local_work(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT message_id FROM queue_recipients"
            " WHERE user_id IS NOT NULL AND state = 'queued' ORDER BY message_id"
        )
        return [str(row[0]) for row in rows]

    def queue_summary(self) -> list[dict[str, object]]:
        messages: dict[str, dict[str, object]] = {}
        for row in self.conn.execute(
            "SELECT q.id, q.arrival, q.size, q.sender, q.held, r.address, r.state,"
            " r.next_attempt, r.last_reply FROM queue_messages q"
            " JOIN queue_recipients r ON r.message_id = q.id ORDER BY q.id, r.id"
        ):
            entry = messages.setdefault(
                row[0],
                {
                    "id": row[0],
                    "arrival": row[1],
                    "size": row[2],
                    "sender": row[3],
                    "held": bool(row[4]),
                    "recipients": [],
                },
            )
            recipients = entry["recipients"]
            assert isinstance(recipients, list)
            recipients.append(
                {"address": row[5], "state": row[6], "next_attempt": row[7], "last_reply": row[8]}
            )
        return list(messages.values())

    def update_recipient(self, rcpt: Recipient) -> None:
        self.conn.execute(
            "UPDATE queue_recipients SET state = ?, attempts = ?, next_attempt = ?,"
            " last_reply = ? WHERE id = ?",
            (str(rcpt.state), rcpt.attempts, rcpt.next_attempt, rcpt.last_reply, rcpt.id),
        )

    def finish_message_if_done(
        self, message_id: str, final: tuple[RecipientState, ...] = (RecipientState.DELIVERED,)
    ) -> str | None:
        """Drop a queue entry once every recipient is in a `final` state; returns a blob file to
        unlink. By default only delivered counts, so failures stay until they are reported."""
        marks = ", ".join("?" * len(final))
        pending = self.conn.execute(
            "SELECT count(*) FROM queue_recipients"
            f" WHERE message_id = ? AND state NOT IN ({marks})",
            (message_id, *(str(state) for state in final)),
        ).fetchone()[0]
        if pending:
            return None
        row = self.conn.execute(
            "SELECT blob_id FROM queue_messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            return None
        self.conn.execute("DELETE FROM queue_messages WHERE id = ?", (message_id,))
        return self.release_blob(int(row[0]))

    # --- mailboxes -----------------------------------------------------------------------------

    def mailbox_id(self, user_id: int, name: str) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, name)
        ).fetchone()
        return int(row[0]) if row else None

    def append_message(
        self,
        mailbox_id: int,
        blob_id: int,
        prefix: bytes,
        size: int,
        internal_date: float,
        *,
        summarise: bool = True,
    ) -> int:
        """Add a copy of a blob to a mailbox; returns its UID (RFC 3501 §2.3.1.1: UIDs grow).
        The blob's IMAP summary is made now if it has none, unless `summarise` is False (the
        caller has it made behind the commit: see Store.write's `then`)."""
        uid, modseq = self.conn.execute(
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
            " WHERE id = ? RETURNING uidnext - 1, highestmodseq",
            (mailbox_id,),
        ).fetchone()
        self.conn.execute(
            "INSERT INTO mailbox_messages(mailbox_id, uid, modseq, internal_date, size, blob_id,"
            " prefix) VALUES (?,?,?,?,?,?,?)",
            (mailbox_id, uid, modseq, internal_date, size, blob_id, prefix),
        )
        self.conn.execute("UPDATE blobs SET refs = refs + 1 WHERE id = ?", (blob_id,))
        if summarise:
            self.summarise_blob(blob_id)
        self.touched.add(mailbox_id)
        return int(uid)

    def summarise_blob(self, blob_id: int) -> None:
        """Compute the IMAP summary of a blob unless it has one, or is gone (expunged since)."""
        row = self.conn.execute(
            "SELECT b.data, b.path, s.blob_id FROM blobs b"
            " LEFT JOIN blob_summaries s ON s.blob_id = b.id WHERE b.id = ?",
            (blob_id,),
        ).fetchone()
        if row is None or row[2] is not None:
            return
        data, path = row[0], row[1]
        if data is None:
            data = (self.path.parent / "blobs" / path).read_bytes()
        content = bytes(data)
        self.set_blob_summary(blob_id, summarise_packed(content))

    def summarise_recent(self, window: int = 10_000) -> int:
        """Give an IMAP summary to the blobs of the last `window` messages added to mailboxes
        that have none: an APPEND's is written once the writer is idle, unsynced (Store.write's
        `then`), so a crash can leave the last few without. Returns how many were made."""
        rows = self.conn.execute(
            "SELECT DISTINCT m.blob_id FROM mailbox_messages m"
            " LEFT JOIN blob_summaries s ON s.blob_id = m.blob_id"
            " WHERE m.id > (SELECT coalesce(max(id), 0) FROM mailbox_messages) - ?"
            " AND s.blob_id IS NULL",
            (window,),
        ).fetchall()
        if rows:
            with self.transaction():
                for (blob_id,) in rows:
                    self.summarise_blob(int(blob_id))
        return len(rows)

    def set_blob_summary(self, blob_id: int, summary: bytes, subject: str | None = None) -> None:
        """Store a blob's IMAP summary, with its subject index (made here unless given)."""
        if subject is None:
            subject = subject_index(wire_part(summary, 3))
        self.conn.execute(
            "INSERT OR REPLACE INTO blob_summaries(blob_id, summary) VALUES (?, ?)",
            (blob_id, summary),
        )
        self.conn.execute(
            "INSERT OR REPLACE INTO blob_subjects(blob_id, subject) VALUES (?, ?)",
            (blob_id, subject),
        )

    def mailbox_status(self, address: str, mailbox: str) -> MailboxStatus:
        user = self._require_user(address)
        mailbox_id = self.mailbox_id(user.id, mailbox)
        if mailbox_id is None:
            raise StoreError(f"{address} has no mailbox {mailbox}")
        count, unseen, size = self.conn.execute(
            "SELECT count(*), coalesce(sum(1 - seen), 0), coalesce(sum(size), 0)"
            " FROM mailbox_messages WHERE mailbox_id = ?",
            (mailbox_id,),
        ).fetchone()
        return MailboxStatus(int(count), int(unseen), int(size))

    def mailbox_messages(self, address: str, mailbox: str) -> list[StoredMessage]:
        user = self._require_user(address)
        mailbox_id = self.mailbox_id(user.id, mailbox)
        if mailbox_id is None:
            raise StoreError(f"{address} has no mailbox {mailbox}")
        rows = self.conn.execute(
            "SELECT uid, flags, internal_date, size, blob_id, prefix FROM mailbox_messages"
            " WHERE mailbox_id = ? ORDER BY uid",
            (mailbox_id,),
        )
        return [StoredMessage(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    def _require_user(self, address: str) -> UserRecord:
        user = self.get_user(address)
        if user is None:
            raise StoreError(f"no user {address}")
        return user


ACCOUNTS_STAMP = "accounts.changed"  # users or aliases changed: drop lookup caches
QUEUE_STAMP = "queue.changed"  # `queue retry/release`: look at the queue now


def touch_stamp(data_dir: Path, name: str) -> None:
    """Tell a running server something changed behind its back (CLI → server signal)."""
    stamp = data_dir / name
    stamp.touch()
    now = time.time_ns()
    os.utime(stamp, ns=(now, now))


def mark_accounts_changed(data_dir: Path) -> None:
    touch_stamp(data_dir, ACCOUNTS_STAMP)


def read_stamp(stamp_path: str) -> int:
    """A stamp's mtime (0 when absent); takes a str path: this runs once per RCPT."""
    try:
        return os.stat(stamp_path).st_mtime_ns
    except FileNotFoundError:
        return 0


def unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
