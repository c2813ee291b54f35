"""The backends the storage contract runs against, and a store of each opened per test.

Every backend named in BACKENDS must pass tests/storage/test_contract*.py unchanged; a new one
(PostgreSQL) adds its name here and a way to make an empty store of its kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from postroom.storage.api import DirectStore, Store, Tx
from postroom.storage.backend import direct_store, server_store

T = TypeVar("T")

BACKENDS = ("sqlite",)


class Backend:
    """Makes stores of one kind over one place (a data directory, later a database)."""

    def __init__(self, name: str, place: Path) -> None:
        self.name = name
        self.place = place

    def server(self) -> Store:
        store = server_store(self.place)
        store.open()
        return store

    def direct(self) -> DirectStore:
        return direct_store(self.place)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(str(request.param), tmp_path / "store")


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
