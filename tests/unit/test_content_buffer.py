"""ContentBuffer: a spill file that cannot be written never raises while the message arrives
(the session must go on reading it); the failure comes out when the content is stored, and
nothing of it stays on disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from postroom.storage.buffer import MEMORY_LIMIT, ContentBuffer
from postroom.storage.records import StorageFailure

CHUNK = b"x" * 65536


def test_small_content_stays_in_memory(tmp_path: Path) -> None:
    buffer = ContentBuffer(tmp_path, "m")
    buffer.write(b"hello")
    assert buffer.in_memory() == b"hello" and buffer.path is None
    assert list(tmp_path.iterdir()) == []


def test_large_content_spills_to_a_private_file(tmp_path: Path) -> None:
    buffer = ContentBuffer(tmp_path, "m")
    old = os.umask(0o022)
    try:
        while buffer.size <= MEMORY_LIMIT:
            buffer.write(CHUNK)
    finally:
        os.umask(old)
    assert buffer.in_memory() is None and buffer.path == tmp_path / "m"
    assert stat.S_IMODE(os.stat(tmp_path / "m").st_mode) == 0o600
    buffer.seal()
    assert (tmp_path / "m").stat().st_size == buffer.size
    buffer.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_spill_file_that_cannot_be_made_fails_when_stored(tmp_path: Path) -> None:
    buffer = ContentBuffer(tmp_path / "missing", "m")  # ENOENT when it spills
    while buffer.size <= 2 * MEMORY_LIMIT:
        buffer.write(CHUNK)  # never raises: the client's bytes are still read
    assert buffer.size > 2 * MEMORY_LIMIT and buffer.head  # counted, and the head kept
    with pytest.raises(StorageFailure) as failure:
        buffer.in_memory()
    assert not failure.value.full
    assert str(tmp_path / "missing" / "m") in str(failure.value)
    with pytest.raises(StorageFailure):
        buffer.seal()
    buffer.discard()
