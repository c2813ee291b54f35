"""The PostgreSQL store's group commit against a lock another client holds (a real server,
tests/storage/postgres_server.py): a job that waits past lock_timeout fails as a temporary
`StorageFailure` while the other jobs of its batch commit; the rest of the batch does not wait
a lock_timeout each; and statement_timeout ends a statement that runs too long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from postroom.storage.postgresql.connection import PgTx
from postroom.storage.postgresql.store import PgStore, Timeouts
from postroom.storage.records import StorageFailure

from .postgres_server import PASSWORD, PostgresServer

LOCK = 2.0  # seconds: the store's lock_timeout here


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    database = postgres_server.new_database()
    try:
        with psycopg.connect(postgres_server.dsn(database), password=PASSWORD) as conn:
            conn.execute("CREATE TABLE held (n integer)")
            conn.execute("CREATE TABLE free (n integer)")
        yield postgres_server.dsn(database)
    finally:
        postgres_server.drop_database(database)


@pytest.fixture
def store(dsn: str, tmp_path: Path) -> Iterator[PgStore]:
    # batch_wait: the jobs written together below are gathered into one group commit.
    opened = PgStore(
        dsn,
        tmp_path / "data",
        password=PASSWORD,
        batch_wait=0.5,
        timeouts=Timeouts(lock=LOCK, statement=3 * LOCK),
    )
    opened.open()
    try:
        yield opened
    finally:
        opened.close()


def insert(table: str, n: int) -> Callable[[PgTx], int]:
    def job(tx: PgTx) -> int:
        tx.conn.execute(f"INSERT INTO {table} (n) VALUES (%s)", (n,))
        return n

    return job


def rows(dsn: str, table: str) -> list[int]:
    with psycopg.connect(dsn, password=PASSWORD) as conn:
        return [n for (n,) in conn.execute(f"SELECT n FROM {table} ORDER BY n")]


def test_a_lock_held_elsewhere_fails_its_jobs_and_the_rest_of_the_batch_commits(
    store: PgStore, dsn: str
) -> None:
    batches: list[int] = []
    store.on_commit = batches.append
    holder = psycopg.connect(dsn, password=PASSWORD)
    try:
        holder.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")

        async def together() -> list[object]:
            jobs = [insert("held", 1), insert("free", 1), insert("held", 2), insert("free", 2)]
            return await asyncio.gather(
                *(store.write(job) for job in jobs),
                return_exceptions=True,
            )

        started = time.monotonic()
        results = asyncio.run(together())
        took = time.monotonic() - started
    finally:
        holder.close()
    assert batches == [4]  # one group commit
    assert results[1] == 1 and results[3] == 2
    for failed in (results[0], results[2]):
        assert isinstance(failed, StorageFailure), failed
        assert "lock timeout" in str(failed) and PASSWORD not in str(failed)
    assert rows(dsn, "free") == [1, 2]  # committed, and answered only then
    assert rows(dsn, "held") == []
    # The second job behind the lock did not wait a lock_timeout of its own.
    assert LOCK <= took < 1.75 * LOCK, took

    async def afterwards() -> object:
        return await store.write(insert("held", 3))

    assert asyncio.run(afterwards()) == 3  # the next batch waits the whole lock_timeout again
    assert rows(dsn, "held") == [3]


def test_a_statement_that_runs_too_long_is_ended(store: PgStore) -> None:
    def slow(tx: PgTx) -> None:
        tx.conn.execute("SELECT pg_sleep(%s)", (10 * LOCK,))

    async def run() -> None:
        await store.write(slow)

    started = time.monotonic()
    with pytest.raises(StorageFailure, match="statement timeout"):
        asyncio.run(run())
    assert time.monotonic() - started < 5 * LOCK

    async def reads() -> object:
        def one(tx: PgTx) -> object:
            return tx.conn.execute("SELECT 1").fetchone()

        return await store.read(one)

    assert asyncio.run(reads()) == (1,)  # the store goes on
