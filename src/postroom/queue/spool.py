"""The spool: message content on its way in, and the one durable write that accepts it.

`ContentBuffer` collects a message's content while it arrives: small messages stay in memory,
large ones spill to a file under blobs/tmp so a session's memory stays bounded. `Spool.accept`
makes the message durable: a large file is fsynced and moved into place, then the blob, the local
deliveries and the queue entry are written in the next group commit. Only after that returns may
the server say 250 (RFC 5321 §6.1: a 250 is a promise to deliver or report).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from postroom.model.queue import QueuedMessage
from postroom.storage.database import Database
from postroom.storage.store import Store

T = TypeVar("T")

MEMORY_LIMIT = 256 * 1024  # content above this size goes to a file
HEAD_LIMIT = 64 * 1024  # the start of the content kept for header inspection


class ContentBuffer:
    """Accumulates one message's content in memory or, past MEMORY_LIMIT, in a temp file."""

    def __init__(self, tmp_dir: Path, name: str) -> None:
        self._tmp_dir = tmp_dir
        self._name = name
        self._chunks: list[bytes] = []
        self._file: BinaryIO | None = None
        self.size = 0
        self.head = b""

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
        if self._file is not None:
            self._file.write(data)
            return
        self._chunks.append(data)
        if self.size > MEMORY_LIMIT:
            self._file = open(self._tmp_path, "wb")  # noqa: SIM115 - closed in seal/discard
            for chunk in self._chunks:
                self._file.write(chunk)
            self._chunks.clear()

    def in_memory(self) -> bytes | None:
        return None if self._file is not None else b"".join(self._chunks)

    def seal(self) -> None:
        """Flush and fsync the temp file (blocking: call from a worker thread)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._tmp_path.unlink(missing_ok=True)
            self._file = None
        self._chunks.clear()


class Spool:
    """Queues messages durably through the store's group commit."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def new_buffer(self, name: str) -> ContentBuffer:
        return ContentBuffer(self.store.tmp_dir, name)

    async def accept(
        self,
        message: QueuedMessage,
        content: ContentBuffer,
        deliver_first: Callable[[Database, QueuedMessage], T],
    ) -> T:
        """Make the message durable; returns what `deliver_first` returned. Sets blob_id.

        In ONE transaction: the blob, then `deliver_first` (local delivery into mailboxes), then
        a queue entry (envelope + per-recipient state) only if work is left — a recipient not
        yet delivered, or a success report owed. A message whose every recipient got its copy
        needs no queue entry: the mailbox copies are already as durable as the queue would be.
        """
        message.blob_size = content.size

        def write(db: Database, blob_id: int) -> T:
            message.blob_id = blob_id
            result = deliver_first(db, message)
            if message.needs_queue_entry():
                db.enqueue(message)
            return result

        return await self.store_content(content, message.id, write)

    async def store_content(
        self, content: ContentBuffer, name: str, then: Callable[[Database, int], T]
    ) -> T:
        """Store `content` as a new blob and run `then(db, blob_id)` in the same group commit.

        A large content's file is fsynced and moved into place first, so the commit that
        references it is never ahead of its bytes.
        """
        data = content.in_memory()
        sync_dirs: list[Path] = []
        relative: str | None = None
        if data is None:
            relative = f"{name[:2]}/{name}"
            final = self.store.blob_dir / relative
            await asyncio.to_thread(_seal_and_place, content, final)
            sync_dirs += [final.parent, self.store.blob_dir]

        def write(db: Database) -> T:
            return then(db, db.insert_blob(content.size, data, relative))

        try:
            return await self.store.write(write, sync_dirs)
        except BaseException:
            if relative is not None:
                (self.store.blob_dir / relative).unlink(missing_ok=True)
            raise


def _seal_and_place(content: ContentBuffer, final: Path) -> None:
    content.seal()
    final.parent.mkdir(parents=True, exist_ok=True)
    source = content.path
    assert source is not None
    os.replace(source, final)
