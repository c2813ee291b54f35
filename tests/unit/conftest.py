"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.storage.api import Store
from postroom.storage.backend import server_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real store (SQLite and files) in a fresh directory, open for the test's duration."""
    opened = server_store(tmp_path)
    opened.open()
    try:
        yield opened
    finally:
        opened.close()
