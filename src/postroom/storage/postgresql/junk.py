"""The junk filter's training in PostgreSQL: token counts, totals and trained messages per
user (storage.api.Junk)."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx


class PgJunk:
    def __init__(self, tx: PgTx) -> None:
        self.conn = tx.conn

    def totals(self, user_id: int) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT ham, spam FROM junk_totals WHERE user_id = %s", (user_id,)
        ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def counts(self, user_id: int, tokens: Collection[str]) -> dict[str, tuple[int, int]]:
        rows = self.conn.execute(
            "SELECT token, ham, spam FROM junk_tokens WHERE user_id = %s AND token = ANY(%s)",
            (user_id, list(tokens)),
        )
        return {str(token): (int(ham), int(spam)) for token, ham, spam in rows}

    def train(self, user_id: int, digest: bytes, tokens: Collection[str], spam: bool) -> bool:
        row = self.conn.execute(
            "SELECT spam FROM junk_trained WHERE user_id = %s AND digest = %s FOR UPDATE",
            (user_id, digest),
        ).fetchone()
        if row is not None and bool(row[0]) == spam:
            return False
        if row is not None:
            self._count(user_id, tokens, spam=not spam, step=-1)
        self._count(user_id, tokens, spam=spam, step=1)
        self.conn.execute(
            "INSERT INTO junk_trained(user_id, digest, spam) VALUES (%s, %s, %s)"
            " ON CONFLICT (user_id, digest) DO UPDATE SET spam = excluded.spam",
            (user_id, digest, spam),
        )
        return True

    def _count(self, user_id: int, tokens: Collection[str], *, spam: bool, step: int) -> None:
        column = "spam" if spam else "ham"
        ham, spam_step = (0, step) if spam else (step, 0)
        # One statement for all tokens, sorted so concurrent trainings lock rows in one order.
        self.conn.execute(
            "INSERT INTO junk_tokens(user_id, token, ham, spam)"
            " SELECT %s, token, %s, %s FROM unnest(%s::text[]) AS token ORDER BY token"
            f" ON CONFLICT (user_id, token) DO UPDATE"
            f" SET {column} = greatest(0, junk_tokens.{column} + %s)",
            (user_id, max(ham, 0), max(spam_step, 0), sorted(set(tokens)), step),
        )
        self.conn.execute(
            "INSERT INTO junk_totals(user_id, ham, spam) VALUES (%s, %s, %s)"
            " ON CONFLICT (user_id) DO UPDATE"
            f" SET {column} = greatest(0, junk_totals.{column} + %s)",
            (user_id, max(ham, 0), max(spam_step, 0), step),
        )
