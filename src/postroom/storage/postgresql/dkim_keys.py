"""DKIM key pairs in PostgreSQL (storage.api.DkimKeys): one row per (domain, selector), the
private key with it. Whoever can read the database can sign as our domains: grant its tables
to postroom's database user only. Rows become `DkimKey` records, whose repr leaves the private
key out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from postroom.storage.records import DKIM_KEY_STATES, DkimKey, DkimKeyState, StoreError

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx

_COLUMNS = "domain, selector, algorithm, private_key, public_key, created, state, state_changed"
_ORDER = " ORDER BY domain, created, selector"


def _key(row: Sequence[Any]) -> DkimKey:
    domain, selector, algorithm, private, public, created, state, changed = row
    return DkimKey(
        domain=str(domain),
        selector=str(selector),
        algorithm=str(algorithm),
        private=bytes(private),
        public=str(public),
        created=float(created),
        state=cast(DkimKeyState, str(state)),
        state_changed=float(changed),
    )


def _check_state(state: str) -> None:
    if state not in DKIM_KEY_STATES:
        raise StoreError(f"{state!r} is not a DKIM key state ({', '.join(DKIM_KEY_STATES)})")


class PgDkimKeys:
    def __init__(self, tx: PgTx) -> None:
        self.conn = tx.conn

    def add(self, key: DkimKey) -> None:
        _check_state(key.state)
        row = self.conn.execute(
            f"INSERT INTO dkim_keys({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING 1",
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
        ).fetchone()
        if row is None:
            raise StoreError(f"{key.domain} has a DKIM key at selector {key.selector} already")

    def keys(self, domain: str | None = None) -> list[DkimKey]:
        if domain is None:
            rows = self.conn.execute(f"SELECT {_COLUMNS} FROM dkim_keys{_ORDER}")
        else:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM dkim_keys WHERE domain = %s{_ORDER}", (domain,)
            )
        return [_key(row) for row in rows]

    def set_state(self, domain: str, selector: str, state: DkimKeyState, when: float) -> None:
        _check_state(state)
        cursor = self.conn.execute(
            "UPDATE dkim_keys SET state = %s, state_changed = %s"
            " WHERE domain = %s AND selector = %s",
            (state, when, domain, selector),
        )
        if cursor.rowcount == 0:
            raise StoreError(f"{domain} has no DKIM key at selector {selector}")

    def delete(self, domain: str, selector: str) -> None:
        cursor = self.conn.execute(
            "DELETE FROM dkim_keys WHERE domain = %s AND selector = %s", (domain, selector)
        )
        if cursor.rowcount == 0:
            raise StoreError(f"{domain} has no DKIM key at selector {selector}")

    def delete_retired(self, before: float) -> list[DkimKey]:
        rows = self.conn.execute(
            "DELETE FROM dkim_keys WHERE state = 'retired' AND state_changed <= %s"
            f" RETURNING {_COLUMNS}",
            (before,),
        ).fetchall()
        return sorted((_key(row) for row in rows), key=lambda k: (k.domain, k.created))
