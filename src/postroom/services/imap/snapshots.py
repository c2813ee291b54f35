"""Shared copies of big mailboxes' message lists, so a SELECT reads only what changed.

SELECT needs every message's UID, flags and MODSEQ. For a mailbox of thousands of messages,
reading them all costs far more than the rest of the command, while most SELECTs find the
mailbox nearly as it was last time (a client reconnecting, another folder visited and back).
So the last full list of each big mailbox is kept, tagged with the UIDVALIDITY and
HIGHESTMODSEQ it was read at, and the next SELECT asks the store only for messages whose
MODSEQ is newer and UIDs expunged since (the same question a selected session asks to catch
up, RFC 7162 §3.1, §3.2.10). The copies are never modified, only replaced; sessions copy what
they will change. Small mailboxes are not kept (reading them is cheap) and the total is bounded.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from postroom.proto.imap.selected import MessageColumns
from postroom.storage.api import Tx
from postroom.storage.records import MailboxInfo

MIN_MESSAGES = 1000  # smaller mailboxes are read whole each time
MAX_MESSAGES = 500_000  # over all kept copies (about 40 MiB)


@dataclass(frozen=True, slots=True)
class Snapshot:
    uidvalidity: int
    highestmodseq: int
    messages: MessageColumns


class MailboxSnapshots:
    """Kept copies by mailbox id, least recently used dropped first. `get` is safe from the
    store's threads; `keep` runs on the event loop."""

    def __init__(self, max_messages: int = MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._kept: collections.OrderedDict[int, Snapshot] = collections.OrderedDict()
        self._total = 0

    def get(self, mailbox_id: int) -> Snapshot | None:
        return self._kept.get(mailbox_id)

    def keep(self, mailbox_id: int, snapshot: Snapshot) -> None:
        old = self._kept.pop(mailbox_id, None)
        if old is not None:
            self._total -= len(old.messages.uids)
        size = len(snapshot.messages.uids)
        if size < MIN_MESSAGES or size > self.max_messages:
            return
        self._kept[mailbox_id] = snapshot
        self._total += size
        while self._total > self.max_messages:
            _, dropped = self._kept.popitem(last=False)
            self._total -= len(dropped.messages.uids)


def load_messages(tx: Tx, snapshots: MailboxSnapshots, info: MailboxInfo) -> MessageColumns:
    """The mailbox's messages now: the kept copy brought up to date, or a full read."""
    kept = snapshots.get(info.id)
    if (
        kept is None
        or kept.uidvalidity != info.uidvalidity
        or kept.highestmodseq > info.highestmodseq
    ):
        return tx.messages.columns(info.id)
    since = kept.highestmodseq
    return kept.messages.updated(
        tx.messages.states(info.id, since), tx.messages.vanished_since(info.id, since)
    )
