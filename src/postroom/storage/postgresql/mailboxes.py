"""Mailboxes and subscriptions in PostgreSQL (RFC 3501 §5.1, §6.3; storage.api.Mailboxes)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from postroom.storage.records import (
    INBOX,
    MailboxError,
    MailboxInfo,
    MailboxStatus,
    StatusCounts,
)

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx

_COLUMNS = "id, name, special_use, uidvalidity, uidnext, highestmodseq, recent_uid"
UIDVALIDITY_LIMIT = 0xFFFFFFFF  # RFC 3501 §9: nz-number, 32 bits


def _info(row: Sequence[Any]) -> MailboxInfo:
    return MailboxInfo(
        int(row[0]), str(row[1]), str(row[2]), int(row[3]), int(row[4]), int(row[5]), int(row[6])
    )


class PgMailboxes:
    def __init__(self, tx: PgTx) -> None:
        self.tx = tx
        self.conn = tx.conn

    def of_user(self, user_id: int) -> list[MailboxInfo]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM mailboxes WHERE user_id = %s ORDER BY name", (user_id,)
        )
        return [_info(r) for r in rows]

    def find(self, user_id: int, name: str) -> MailboxInfo | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM mailboxes WHERE user_id = %s AND name = %s", (user_id, name)
        ).fetchone()
        return _info(row) if row else None

    def id_of(self, user_id: int, name: str) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM mailboxes WHERE user_id = %s AND name = %s", (user_id, name)
        ).fetchone()
        return int(row[0]) if row else None

    def get(self, mailbox_id: int) -> MailboxInfo | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM mailboxes WHERE id = %s", (mailbox_id,)
        ).fetchone()
        return _info(row) if row else None

    def require(self, user_id: int, name: str) -> MailboxInfo:
        info = self.find(user_id, name)
        if info is None:
            raise MailboxError("NONEXISTENT", "Mailbox doesn't exist: " + name)
        return info

    def create(self, user_id: int, name: str, special_use: str = "") -> int:
        """RFC 3501 §6.3.3: the name (and, implicitly, its missing parents) is created."""
        if self.find(user_id, name) is not None:
            raise MailboxError("ALREADYEXISTS", "Mailbox already exists")
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if self.find(user_id, parent) is None:
                self._insert(user_id, parent, "")
        return self._insert(user_id, name, special_use)

    def _insert(self, user_id: int, name: str, special_use: str) -> int:
        row = self.conn.execute(
            "INSERT INTO mailboxes(user_id, name, uidvalidity, special_use)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, name) DO NOTHING RETURNING id",
            (user_id, name, self._next_uidvalidity(), special_use),
        ).fetchone()
        if row is None:  # another node made it meanwhile
            raise MailboxError("ALREADYEXISTS", "Mailbox already exists")
        return int(row[0])

    def _next_uidvalidity(self) -> int:
        """RFC 3501 §2.3.1.1: a mailbox created again under an old name must get a different
        UIDVALIDITY, so values come from one counter that starts at the clock and only grows;
        its row is locked until the transaction ends, so no two nodes take the same."""
        now = int(time.time())
        row = self.conn.execute(
            "INSERT INTO meta(key, value) VALUES ('uidvalidity', %s)"
            " ON CONFLICT (key) DO UPDATE"
            " SET value = greatest(%s, meta.value::bigint + 1)::text RETURNING value",
            (str(now % UIDVALIDITY_LIMIT or 1), now),
        ).fetchone()
        assert row is not None
        return int(row[0]) % UIDVALIDITY_LIMIT or 1

    def delete(self, user_id: int, name: str) -> None:
        """RFC 3501 §6.3.4."""
        if name == INBOX:
            raise MailboxError("CANNOT", "INBOX can't be deleted")
        info = self.require(user_id, name)
        child = self.conn.execute(
            "SELECT 1 FROM mailboxes WHERE user_id = %s AND starts_with(name, %s) LIMIT 1",
            (user_id, name + "/"),
        ).fetchone()
        if child is not None:
            # Dovecot's answer too: a mailbox with children keeps existing until they are gone.
            raise MailboxError("INUSE", "Mailbox has children, delete them first")
        uids = [
            int(r[0])
            for r in self.conn.execute(
                "SELECT uid FROM mailbox_messages WHERE mailbox_id = %s", (info.id,)
            ).fetchall()
        ]
        self.tx.messages.expunge(info.id, uids)
        self.conn.execute("DELETE FROM mailboxes WHERE id = %s", (info.id,))
        self.tx.touched.add(info.id)

    def rename(self, user_id: int, old: str, new: str) -> None:
        """RFC 3501 §6.3.5: children move along; renaming INBOX moves its messages instead."""
        source = self.require(user_id, old)
        if self.find(user_id, new) is not None:
            raise MailboxError("ALREADYEXISTS", "Target mailbox already exists")
        if new == old or new.startswith(old + "/"):
            raise MailboxError("CANNOT", "Can't rename a mailbox into itself")
        messages = self.tx.messages
        if old == INBOX:
            target = self.create(user_id, new)
            uids = [state.uid for state in messages.states(source.id)]
            messages.copy(source.id, uids, target)
            messages.expunge(source.id, uids)
            self.tx.touched.add(source.id)
            return
        parts = new.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if self.find(user_id, parent) is None:
                self._insert(user_id, parent, "")
        # RFC 3501 §2.3.1.1: a renamed mailbox keeps its UIDs, so it keeps its UIDVALIDITY;
        # the sessions that have it open still hear of it.
        rows = self.conn.execute(
            "UPDATE mailboxes SET name = %s || substr(name, %s) WHERE user_id = %s"
            " AND (name = %s OR starts_with(name, %s)) RETURNING id",
            (new, len(old) + 1, user_id, old, old + "/"),
        ).fetchall()
        self.tx.touched.update(int(row[0]) for row in rows)

    def subscriptions(self, user_id: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT name FROM subscriptions WHERE user_id = %s ORDER BY name", (user_id,)
        )
        return [str(r[0]) for r in rows]

    def subscribe(self, user_id: int, name: str, *, on: bool) -> None:
        """RFC 3501 §6.3.6: a subscription is a name; it may outlive its mailbox."""
        if on:
            self.conn.execute(
                "INSERT INTO subscriptions(user_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (user_id, name),
            )
        else:
            self.conn.execute(
                "DELETE FROM subscriptions WHERE user_id = %s AND name = %s", (user_id, name)
            )

    def status_counts(self, info: MailboxInfo) -> StatusCounts:
        row = self.conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT seen), coalesce(sum(size), 0),"
            " count(*) FILTER (WHERE uid >= %s) FROM mailbox_messages WHERE mailbox_id = %s",
            (info.recent_uid, info.id),
        ).fetchone()
        assert row is not None
        return StatusCounts(int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    def status(self, mailbox_id: int) -> MailboxStatus:
        row = self.conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT seen), coalesce(sum(size), 0)"
            " FROM mailbox_messages WHERE mailbox_id = %s",
            (mailbox_id,),
        ).fetchone()
        assert row is not None
        return MailboxStatus(int(row[0]), int(row[1]), int(row[2]))

    def claim_recent(self, mailbox_id: int) -> int:
        """RFC 3501 §2.3.2: \\Recent belongs to one session. Returns the first UID this session
        sees as recent; the next session to claim starts after the current last message."""
        row = self.conn.execute(
            "SELECT recent_uid FROM mailboxes WHERE id = %s FOR UPDATE", (mailbox_id,)
        ).fetchone()
        self.conn.execute("UPDATE mailboxes SET recent_uid = uidnext WHERE id = %s", (mailbox_id,))
        return int(row[0]) if row else 0
