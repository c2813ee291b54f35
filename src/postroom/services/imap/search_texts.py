"""What HEADER searches compare, kept between searches: per mailbox and header field, each
message's search texts (its values decoded and case-folded, addresses also in normal form).

Dovecot keeps the header fields clients search in its cache file; this is the in-memory
equivalent, made on a field's first search in a mailbox, so later searches of that field read
no message at all. A message's texts never change: RFC 3501 §2.3.1.1 keeps a UID on the same
message for as long as the mailbox's UIDVALIDITY holds, so tables are keyed by mailbox id,
UIDVALIDITY and field, and never go stale (an expunged message's entry is only dead weight,
gone with its table). The whole is bounded by an estimate of its memory: the least recently
searched tables go first, and a table that cannot fit is not kept at all. Filled on the store's
reader thread, where the searches run, and changed there only; the event loop looks up a few
messages' texts too (`kept`), so that a search narrowed to them needs no store round trip: a
lock guards the changes and those lookups.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence

from postroom.proto.imap.search import SearchMessage
from postroom.storage.api import Tx

LIMIT_BYTES = 32 * 1024 * 1024
ENTRY_BYTES = 120  # a dict slot, a tuple, an int: what an entry costs besides its strings
TEXT_BYTES = 50  # a str object's own size

Texts = dict[int, tuple[str, ...]]  # UID → search texts


class SearchTexts:
    """Search texts by (mailbox id, UIDVALIDITY, field), least recently searched dropped."""

    def __init__(self, limit: int = LIMIT_BYTES) -> None:
        self.limit = limit
        self._tables: collections.OrderedDict[tuple[int, int, str], Texts] = (
            collections.OrderedDict()
        )
        self._sizes: dict[tuple[int, int, str], int] = {}
        self._total = 0
        self._lock = threading.Lock()

    def kept(self, mailbox: tuple[int, int], field: str, uids: Sequence[int]) -> Texts | None:
        """The kept texts of `uids`, or None unless every one is kept (nothing is read)."""
        with self._lock:
            table = self._tables.get((*mailbox, field))
            if table is None:
                return None
            try:
                return {uid: table[uid] for uid in uids}
            except KeyError:
                return None

    def texts(
        self,
        tx: Tx,
        mailbox: tuple[int, int],
        field: str,
        uids: Sequence[int],
    ) -> Texts:
        """The texts of field `field` (lower case) of the messages `uids` of `mailbox` (id,
        UIDVALIDITY) still in the store; those not kept yet are read (header blocks only)."""
        key = (*mailbox, field)
        with self._lock:  # only this thread changes the tables; `kept` reads them meanwhile
            table = self._tables.pop(key, None)
            if table is None:
                table, self._sizes[key] = {}, 0
            self._tables[key] = table  # now the most recently searched
        missing = [uid for uid in uids if uid not in table]
        if not missing:
            return table
        read: Texts = {}
        added = 0
        for row in tx.messages.fetch_rows(mailbox[0], missing, summary=False, content="header"):
            message = SearchMessage(row.uid, row.uid, (), 0.0, 0, 0, content=row.content)
            texts = read[row.uid] = message.search_texts(field)
            added += ENTRY_BYTES + sum(TEXT_BYTES + len(text) for text in texts)
        with self._lock:
            self._make_room(key, added)
            if self._sizes[key] + added > self.limit:
                self._drop(key)
                return {**table, **read}
            table.update(read)
            self._sizes[key] += added
            self._total += added
        return table

    def _make_room(self, keep: tuple[int, int, str], added: int) -> None:
        """Drop the least recently searched tables (never `keep`) until `added` more fits."""
        while self._total + added > self.limit and len(self._tables) > 1:
            oldest = next(iter(self._tables))
            if oldest == keep:
                break
            self._drop(oldest)

    def _drop(self, key: tuple[int, int, str]) -> None:
        self._tables.pop(key, None)
        self._total -= self._sizes.pop(key, 0)
