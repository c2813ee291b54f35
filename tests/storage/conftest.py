"""The backends the storage contract runs against, and a store of each opened per test.

Every backend must pass tests/storage/test_contract*.py unchanged. SQLite runs every contract
module; PostgreSQL (a private server started once per session from Debian's binaries, a new
database per test: tests/storage/postgres_server.py) runs the modules in POSTGRESQL_MODULES,
those whose repositories its backend has so far.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from postroom.storage.api import DirectStore, Store, Tx
from postroom.storage.backend import direct_store, server_store
from postroom.storage.postgresql.store import PgDirect, PgStore

from .postgres_server import PASSWORD, PostgresServer

T = TypeVar("T")

BACKENDS = ("sqlite", "postgresql")
# The contract modules whose repositories the PostgreSQL backend implements.
POSTGRESQL_MODULES = frozenset(
    {
        "test_contract_abuse",
        "test_contract_commits",
        "test_contract_dkim_keys",
        "test_contract_dmarc",
        "test_contract_junk",
        "test_contract_mailboxes",
        "test_contract_queue",
        "test_contract_secrets",
        "test_contract_sieve",
        "test_contract_trace",
        "test_contract_web",
    }
)


class Backend:
    """Makes stores of one kind over one place: a data directory (and, for PostgreSQL, a
    database of its own)."""

    def __init__(self, name: str, place: Path, dsn: str = "") -> None:
        self.name = name
        self.place = place
        self.dsn = dsn

    def server(self) -> Store:
        store: Store
        if self.name == "postgresql":
            store = PgStore(self.dsn, self.place, password=PASSWORD)
        else:
            store = server_store(self.place)
        store.open()
        return store

    def direct(self) -> DirectStore:
        if self.name == "postgresql":
            return PgDirect(self.dsn, self.place, password=PASSWORD)
        return direct_store(self.place)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rpartition(".")[2]
    names = BACKENDS if module in POSTGRESQL_MODULES else ("sqlite",)
    metafunc.parametrize("backend", names, indirect=True)


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
    PgDirect(
        postgres_server.dsn(name), tmp_path_factory.mktemp("template"), password=PASSWORD
    ).close()
    return name


@pytest.fixture
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
