"""The junk filter's training in SQLite: token counts, totals and trained messages per user."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postroom.storage.sqlite.connection import SqliteTx

_CHUNK = 500  # tokens per statement (SQLite's variable limit is far above)


class SqliteJunk:
    def __init__(self, tx: SqliteTx) -> None:
        self.conn = tx.conn

    def totals(self, user_id: int) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT ham, spam FROM junk_totals WHERE user_id = ?", (user_id,)
        ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def counts(self, user_id: int, tokens: Collection[str]) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        ordered = sorted(tokens)
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for token, ham, spam in self.conn.execute(
                "SELECT token, ham, spam FROM junk_tokens"
                f" WHERE user_id = ? AND token IN ({marks})",
                (user_id, *chunk),
            ):
                found[str(token)] = (int(ham), int(spam))
        return found

    def train(self, user_id: int, digest: bytes, tokens: Collection[str], spam: bool) -> bool:
        row = self.conn.execute(
            "SELECT spam FROM junk_trained WHERE user_id = ? AND digest = ?", (user_id, digest)
        ).fetchone()
        if row is not None and bool(row[0]) == spam:
            return False
        if row is not None:
            self._count(user_id, tokens, spam=not spam, step=-1)
        self._count(user_id, tokens, spam=spam, step=1)
        self.conn.execute(
            "INSERT OR REPLACE INTO junk_trained(user_id, digest, spam) VALUES (?, ?, ?)",
            (user_id, digest, int(spam)),
        )
        return True

    def _count(self, user_id: int, tokens: Collection[str], *, spam: bool, step: int) -> None:
        column = "spam" if spam else "ham"
        ham, spam_step = (0, step) if spam else (step, 0)
        self.conn.executemany(
            "INSERT INTO junk_tokens(user_id, token, ham, spam) VALUES (?, ?, ?, ?)"
            f" ON CONFLICT(user_id, token) DO UPDATE SET {column} = max(0, {column} + ?)",
            [(user_id, token, max(ham, 0), max(spam_step, 0), step) for token in tokens],
        )
        self.conn.execute(
            "INSERT INTO junk_totals(user_id, ham, spam) VALUES (?, ?, ?)"
            f" ON CONFLICT(user_id) DO UPDATE SET {column} = max(0, {column} + ?)",
            (user_id, max(ham, 0), max(spam_step, 0), step),
        )
