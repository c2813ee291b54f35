"""Wake the IMAP sessions that have a mailbox open when a committed change touched it.

The store calls `publish` on the event loop after each group commit with the mailboxes that
changed (new mail, flags, expunges). A session only learns *that* something changed; it asks the
store *what* (by MODSEQ), so a missed wake-up costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class MailboxEvents:
    def __init__(self) -> None:
        self._watchers: defaultdict[int, set[asyncio.Event]] = defaultdict(set)

    def watch(self, mailbox_id: int) -> asyncio.Event:
        event = asyncio.Event()
        self._watchers[mailbox_id].add(event)
        return event

    def unwatch(self, mailbox_id: int, event: asyncio.Event) -> None:
        watchers = self._watchers.get(mailbox_id)
        if watchers is not None:
            watchers.discard(event)
            if not watchers:
                del self._watchers[mailbox_id]

    def publish(self, mailbox_ids: frozenset[int]) -> None:
        for mailbox_id in mailbox_ids:
            for event in self._watchers.get(mailbox_id, ()):
                event.set()
