"""The backends the storage contract runs against, and a store of each opened per test.

Every backend in BACKENDS passes tests/storage/test_contract*.py unchanged: SQLite in a data
directory per test, PostgreSQL in a database per test (a copy of one migrated once) on a private
server started once per session from Debian's binaries (tests/storage/postgres_server.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from postroom.storage.api import DirectStore, Store, Tx
from postroom.storage.backend import direct_store, server_store

from .postgres_server import PASSWORD, PostgresServer

T = TypeVar("T")

BACKENDS = ("sqlite", "postgresql")


class Backend:
    """Makes stores of one kind over one place: a data directory (and, for PostgreSQL, a
    database of its own)."""

    def __init__(self, name: str, place: Path, dsn: str = "") -> None:
        self.name = name
        self.place = place
        self.dsn = dsn

    @property
    def database(self) -> str | None:
        return self.dsn or None

    def server(self) -> Store:
        store = server_store(self.place, database=self.database, password=PASSWORD)
        store.open()
        return store

    def direct(self) -> DirectStore:
        return direct_store(self.place, database=self.database, password=PASSWORD)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def migrated_template(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A database postroom made its tables in, that the contract tests' databases copy (the
    migration itself is tested from empty databases in test_postgresql_store.py)."""
    name = postgres_server.new_database()
    directory = tmp_path_factory.mktemp("template")
    direct_store(directory, database=postgres_server.dsn(name), password=PASSWORD).close()
    return name


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = str(request.param)
    if name != "postgresql":
        yield Backend(name, tmp_path / "store")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    database = server.new_database(request.getfixturevalue("migrated_template"))
    try:
        yield Backend(name, tmp_path / "store", server.dsn(database))
    finally:
        server.drop_database(database)


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.server()
    try:
        yield opened
    finally:
        opened.close()


def write(store: Store, fn: Callable[[Tx], T]) -> T:
    """One write, from synchronous test code."""
    return asyncio.run(store.write(fn))


def read(store: Store, fn: Callable[[Tx], T]) -> T:
    return asyncio.run(store.read(fn))
