"""Message content on its way in: in memory while small, then in a spill file the store owns.

A session writes what arrives into a `ContentBuffer`; the store (`Store.write_content`) later
makes it a blob. Past MEMORY_LIMIT the content goes to a file, so a session's memory stays
bounded whatever the message size; `head` keeps the start for header checks.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

from postroom.storage import private
from postroom.storage.records import StorageFailure, os_failure

MEMORY_LIMIT = 256 * 1024  # content above this size goes to a file
HEAD_LIMIT = 64 * 1024  # the start of the content kept for header inspection


class ContentBuffer:
    """Accumulates one message's content in memory or, past MEMORY_LIMIT, in a temp file.

    A write to the spill file that fails (a full disk, a missing directory) never raises: the
    session must go on reading the message to stay in step with its client. The buffer keeps
    the failure, drops what it held (the spill file is removed at once, freeing its space) and
    counts what follows; `in_memory` and `seal` raise the failure, so the store refuses the
    content with it.
    """

    def __init__(self, tmp_dir: Path, name: str) -> None:
        self._tmp_dir = tmp_dir
        self._name = name
        self._chunks: list[bytes] = []
        self._file: BinaryIO | None = None
        self.size = 0
        self.head = b""
        self.failure: StorageFailure | None = None

    @property
    def _tmp_path(self) -> Path:
        return self._tmp_dir / self._name

    @property
    def path(self) -> Path | None:
        return self._tmp_path if self._file is not None else None

    def write(self, data: bytes) -> None:
        if len(self.head) < HEAD_LIMIT:
            self.head += data[: HEAD_LIMIT - len(self.head)]
        self.size += len(data)
        if self.failure is not None:
            return
        try:
            if self._file is not None:
                self._file.write(data)
                return
            self._chunks.append(data)
            if self.size > MEMORY_LIMIT:
                self._file = os.fdopen(private.open_file(self._tmp_path), "wb")
                for chunk in self._chunks:
                    self._file.write(chunk)
                self._chunks.clear()
        except OSError as error:
            self._fail(error)

    def in_memory(self) -> bytes | None:
        """The content when it is in memory, None when it is in the spill file."""
        if self.failure is not None:
            raise self.failure
        return None if self._file is not None else b"".join(self._chunks)

    def contents(self) -> bytes:
        """The whole content; reads the spill file (blocking: call from a worker thread)."""
        if self.failure is not None:
            raise self.failure
        if self._file is None:
            return b"".join(self._chunks)
        try:
            self._file.flush()
            return self._tmp_path.read_bytes()
        except OSError as error:
            raise self._fail(error) from None

    def seal(self) -> None:
        """Flush and fsync the temp file (blocking: call from a worker thread)."""
        if self.failure is not None:
            raise self.failure
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
            except OSError as error:
                raise self._fail(error) from None

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # what failed to be written fails again
                self._file.close()
            with contextlib.suppress(OSError):
                self._tmp_path.unlink(missing_ok=True)
            self._file = None
        self._chunks.clear()

    def _fail(self, error: OSError) -> StorageFailure:
        self.failure = os_failure(error, self._tmp_path)
        self.discard()
        return self.failure
