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

from collections import defaultdict
from collections.abc import Callable


class MailboxWatch:
    """One session's interest in one mailbox: `changed` once news was published, and `wake`
    called too while the session waits in IDLE. A few attributes, not an asyncio.Event (with
    its deque and futures): an idle session's memory is mostly this kind of thing."""

    __slots__ = ("changed", "mailbox_id", "wake")

    def __init__(self, mailbox_id: int) -> None:
        self.mailbox_id = mailbox_id
        self.changed = False
        self.wake: Callable[[], None] | None = None

    def notify(self) -> None:
        self.changed = True
        if self.wake is not None:
            self.wake()


class MailboxEvents:
    def __init__(self) -> None:
        self._watchers: defaultdict[int, set[MailboxWatch]] = defaultdict(set)
        self._latest: dict[int, int] = {}  # mailbox → newest HIGHESTMODSEQ published

    def newer_than(self, mailbox_id: int, modseq: int) -> bool:
        """Whether a change after `modseq` was published (unknown mailboxes: assume so)."""
        return self._latest.get(mailbox_id, modseq + 1) > modseq

    def watch(self, mailbox_id: int) -> MailboxWatch:
        watch = MailboxWatch(mailbox_id)
        self._watchers[mailbox_id].add(watch)
        return watch

    def unwatch(self, watch: MailboxWatch) -> None:
        watchers = self._watchers.get(watch.mailbox_id)
        if watchers is not None:
            watchers.discard(watch)
            if not watchers:
                del self._watchers[watch.mailbox_id]

    def publish(self, changes: dict[int, int | None]) -> None:
        for mailbox_id, modseq in changes.items():
            # A mailbox that is gone (None) counts as changed for whoever has it open.
            latest = (1 << 62) if modseq is None else modseq
            self._latest[mailbox_id] = max(latest, self._latest.get(mailbox_id, 0))
            for watch in self._watchers.get(mailbox_id, ()):
                watch.notify()

    def wake_all(self) -> None:
        """Changes may have gone unannounced: every session looks at its mailbox again."""
        self._latest.clear()  # unknown mailboxes count as changed (newer_than)
        for watchers in self._watchers.values():
            for watch in watchers:
                watch.notify()
