"""The spool: the one durable write that accepts a message.

`Spool.accept` makes a message durable: its content becomes a blob (a large one's file synced
and moved into place first, see `Store.write_content`), then, in the same group commit, the
local deliveries, the queue entry and the start of its history are written. Only after that
returns may the server say 250 (RFC 5321 §6.1: a 250 is a promise to deliver or report).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from postroom.model.queue import QueuedMessage, RecipientState
from postroom.storage.api import Store, Tx
from postroom.storage.buffer import ContentBuffer
from postroom.storage.records import HistoryEvent

T = TypeVar("T")


def settled_events(message: QueuedMessage) -> list[HistoryEvent]:
    """The history of the recipients settled while the message was accepted (local copies)."""
    now = time.time()
    return [
        HistoryEvent(message.id, now, rcpt.address, str(rcpt.state), rcpt.last_reply)
        for rcpt in message.recipients
        if rcpt.state is RecipientState.DELIVERED or rcpt.state is RecipientState.FAILED
    ]


class Spool:
    """Queues messages durably through the store's group commit."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def new_buffer(self, name: str) -> ContentBuffer:
        return self.store.new_buffer(name)

    async def accept(
        self,
        message: QueuedMessage,
        content: ContentBuffer,
        deliver_first: Callable[[Tx, QueuedMessage], T],
    ) -> T:
        """Make the message durable; returns what `deliver_first` returned. Sets blob_id.

        In ONE transaction: the blob, then `deliver_first` (local delivery into mailboxes), then
        a queue entry (envelope + per-recipient state) only if work is left — a recipient not
        yet delivered, or a success report owed. A message whose every recipient got its copy
        needs no queue entry: the mailbox copies are already as durable as the queue would be.
        """
        message.blob_size = content.size

        def write(tx: Tx, blob_id: int) -> T:
            message.blob_id = blob_id
            result = deliver_first(tx, message)
            tx.history.arrived(message, settled_events(message))
            if message.needs_queue_entry():
                tx.queue.enqueue(message)
            return result

        return await self.store.write_content(content, write)
