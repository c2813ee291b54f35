"""Wake the IMAP sessions that have a mailbox open when a committed change touched it.

The store calls `publish` on the event loop after each group commit with the mailboxes that
changed (new mail, flags, expunges) and their HIGHESTMODSEQ. A session only learns *that*
something changed, and whether anything is newer than what it knows (its own STORE is not news);
it asks the store *what* (by MODSEQ), so a missed wake-up costs latency, never correctness.
With several nodes on one PostgreSQL database, the other nodes' changes arrive here too
(storage/postgresql/notify.py), in any order with this node's own and sometimes twice: what is
known of a mailbox only goes up, and hearing a change twice costs at most one more read.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class MailboxEvents:
    def __init__(self) -> None:
        self._watchers: defaultdict[int, set[asyncio.Event]] = defaultdict(set)
        self._latest: dict[int, int] = {}  # mailbox → newest HIGHESTMODSEQ published

    def newer_than(self, mailbox_id: int, modseq: int) -> bool:
        """Whether a change after `modseq` was published (unknown mailboxes: assume so)."""
        return self._latest.get(mailbox_id, modseq + 1) > modseq

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

    def publish(self, changes: dict[int, int | None]) -> None:
        for mailbox_id, modseq in changes.items():
            # A mailbox that is gone (None) counts as changed for whoever has it open.
            latest = (1 << 62) if modseq is None else modseq
            self._latest[mailbox_id] = max(latest, self._latest.get(mailbox_id, 0))
            for event in self._watchers.get(mailbox_id, ()):
                event.set()

    def wake_all(self) -> None:
        """Changes may have gone unannounced: every session looks at its mailbox again."""
        self._latest.clear()  # unknown mailboxes count as changed (newer_than)
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()
