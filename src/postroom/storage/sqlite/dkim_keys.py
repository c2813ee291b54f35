"""DKIM key pairs in SQLite: one row per (domain, selector), the private key with it.

The private key is a secret kept in the database, which `storage/private.py` makes 0600 in a
0700 data directory (its -wal and -shm files inherit that mode). Rows become `DkimKey` records,
whose repr leaves the private key out.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, cast

from postroom.storage.records import DKIM_KEY_STATES, DkimKey, DkimKeyState, StoreError

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx

_COLUMNS = "domain, selector, algorithm, private_key, public_key, created, state, state_changed"
_ORDER = " ORDER BY domain, created, selector"


def _key(row: tuple[object, ...]) -> DkimKey:
    domain, selector, algorithm, private, public, created, state, changed = row
    return DkimKey(
        domain=str(domain),
        selector=str(selector),
        algorithm=str(algorithm),
        private=bytes(cast(bytes, private)),
        public=str(public),
        created=float(cast(float, created)),
        state=cast(DkimKeyState, str(state)),
        state_changed=float(cast(float, changed)),
    )


def _check_state(state: str) -> None:
    if state not in DKIM_KEY_STATES:
        raise StoreError(f"{state!r} is not a DKIM key state ({', '.join(DKIM_KEY_STATES)})")


class SqliteDkimKeys:
    def __init__(self, tx: SqliteTx) -> None:
        self.tx = tx
        self.conn = tx.conn

    def add(self, key: DkimKey) -> None:
        _check_state(key.state)
        try:
            self.conn.execute(
                f"INSERT INTO dkim_keys({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.domain,
                    key.selector,
                    key.algorithm,
                    key.private,
                    key.public,
                    key.created,
                    key.state,
                    key.state_changed,
                ),
            )
        except sqlite3.IntegrityError:
            raise StoreError(
                f"{key.domain} has a DKIM key at selector {key.selector} already"
            ) from None

    def keys(self, domain: str | None = None) -> list[DkimKey]:
        if domain is None:
            rows = self.conn.execute(f"SELECT {_COLUMNS} FROM dkim_keys{_ORDER}")
        else:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM dkim_keys WHERE domain = ?{_ORDER}", (domain,)
            )
        return [_key(row) for row in rows]

    def set_state(self, domain: str, selector: str, state: DkimKeyState, when: float) -> None:
        _check_state(state)
        cursor = self.conn.execute(
            "UPDATE dkim_keys SET state = ?, state_changed = ? WHERE domain = ? AND selector = ?",
            (state, when, domain, selector),
        )
        if cursor.rowcount == 0:
            raise StoreError(f"{domain} has no DKIM key at selector {selector}")

    def delete(self, domain: str, selector: str) -> None:
        cursor = self.conn.execute(
            "DELETE FROM dkim_keys WHERE domain = ? AND selector = ?", (domain, selector)
        )
        if cursor.rowcount == 0:
            raise StoreError(f"{domain} has no DKIM key at selector {selector}")

    def delete_retired(self, before: float) -> list[DkimKey]:
        rows = self.conn.execute(
            f"DELETE FROM dkim_keys WHERE state = 'retired' AND state_changed <= ?"
            f" RETURNING {_COLUMNS}",
            (before,),
        ).fetchall()
        return sorted((_key(row) for row in rows), key=lambda k: (k.domain, k.created))
