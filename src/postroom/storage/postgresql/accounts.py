"""Users and aliases in PostgreSQL (storage.api.Accounts)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from postroom.storage.records import (
    DEFAULT_MAILBOXES,
    Resolution,
    StoreError,
    UserRecord,
    UserSummary,
    normalize_address,
)

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx

MAX_ALIAS_DEPTH = 10
USER_COLUMNS = "u.id, u.address, u.password_hash, u.scram, u.admin"


def user_of(row: Sequence[Any]) -> UserRecord:
    """A UserRecord of the columns USER_COLUMNS."""
    return UserRecord(int(row[0]), str(row[1]), str(row[2]), str(row[3]), bool(row[4]))


class PgAccounts:
    def __init__(self, tx: PgTx) -> None:
        self.tx = tx
        self.conn = tx.conn

    def add_user(self, address: str, password_hash: str, scram: str, admin: bool = False) -> int:
        address = normalize_address(address)
        row = self.conn.execute(
            "INSERT INTO users(address, password_hash, scram, created, admin)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (address) DO NOTHING RETURNING id",
            (address, password_hash, scram, time.time(), admin),
        ).fetchone()
        if row is None:
            raise StoreError(f"user {address} already exists")
        user_id = int(row[0])
        for name, use in DEFAULT_MAILBOXES:
            self.tx.mailboxes.create(user_id, name, use)
            self.tx.mailboxes.subscribe(user_id, name, on=True)
        return user_id

    def get_user(self, address: str) -> UserRecord | None:
        row = self.conn.execute(
            f"SELECT {USER_COLUMNS} FROM users u WHERE u.address = %s",
            (normalize_address(address),),
        ).fetchone()
        return user_of(row) if row else None

    def require_user(self, address: str) -> UserRecord:
        user = self.get_user(address)
        if user is None:
            raise StoreError(f"no user {address}")
        return user

    def list_users(self) -> list[UserSummary]:
        rows = self.conn.execute("SELECT address, created, admin FROM users ORDER BY address")
        return [UserSummary(str(a), float(c), bool(admin)) for a, c, admin in rows]

    def set_admin(self, address: str, admin: bool) -> None:
        cursor = self.conn.execute(
            "UPDATE users SET admin = %s WHERE address = %s", (admin, normalize_address(address))
        )
        if cursor.rowcount == 0:
            raise StoreError(f"no user {address}")

    def set_password(self, address: str, password_hash: str, scram: str) -> None:
        cursor = self.conn.execute(
            "UPDATE users SET password_hash = %s, scram = %s WHERE address = %s",
            (password_hash, scram, normalize_address(address)),
        )
        if cursor.rowcount == 0:
            raise StoreError(f"no user {address}")

    def count_messages(self, address: str) -> int:
        user = self.require_user(address)
        row = self.conn.execute(
            "SELECT count(*) FROM mailbox_messages mm JOIN mailboxes m ON m.id = mm.mailbox_id"
            " WHERE m.user_id = %s",
            (user.id,),
        ).fetchone()
        return int(row[0]) if row else 0

    def delete_user(self, address: str) -> int:
        user = self.require_user(address)
        blob_ids = [
            int(row[0])
            for row in self.conn.execute(
                "SELECT mm.blob_id FROM mailbox_messages mm"
                " JOIN mailboxes m ON m.id = mm.mailbox_id WHERE m.user_id = %s",
                (user.id,),
            ).fetchall()
        ]
        self.conn.execute("DELETE FROM users WHERE id = %s", (user.id,))  # cascades to mail
        for blob_id in blob_ids:
            self.tx.blobs.release(blob_id)
        return len(blob_ids)

    def add_alias(self, address: str, targets: Sequence[str]) -> None:
        address = normalize_address(address)
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO aliases(address, target) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(address, normalize_address(t)) for t in targets],
            )

    def delete_alias(self, address: str) -> None:
        cursor = self.conn.execute(
            "DELETE FROM aliases WHERE address = %s", (normalize_address(address),)
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

    def _alias_targets(self, address: str) -> list[str]:
        rows = self.conn.execute("SELECT target FROM aliases WHERE address = %s", (address,))
        return [str(row[0]) for row in rows]

    def resolve(self, address: str, local_domains: frozenset[str]) -> Resolution:
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
            targets = self._alias_targets(addr)
            user = self.get_user(addr)
            if user is not None:
                local.setdefault(user.address, user.id)
            if not targets and user is None:
                targets = self._alias_targets("@" + domain)
            for target in targets:
                visit(target, depth + 1)

        visit(normalize_address(address), 0)
        return Resolution(tuple(local.items()), tuple(dict.fromkeys(remote)))
