"""IMAP SEARCH, SORT and THREAD (RFC 3501 §6.4.4, RFC 4731 ESEARCH, RFC 5256).

Keys are evaluated cheapest first (proto/imap/search_plan.py): sequence and UID sets narrow the
messages to look at, the session's view (flags) settles what it can, store rows (dates, sizes,
MODSEQ) settle more, then the header fields' search texts (kept between searches, `SearchTexts`)
or the store's subject index, and only the messages still undecided are read, their header
block or the whole message as the key needs, in batches on the store's reader thread. A few
messages whose texts are all kept are decided on the event loop, without a store round trip.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from postroom.proto.imap import encode
from postroom.proto.imap import grammar_commands as cmd
from postroom.proto.imap.grammar_search import HeaderKey, SearchKey
from postroom.proto.imap.search import (
    SearchMessage,
    header_hits,
    header_needle,
    matches,
    needs_content,
    uses_modseq,
)
from postroom.proto.imap.search_plan import (
    Cost,
    Decider,
    Shape,
    by_cost,
    decider,
    narrow,
    shape,
)
from postroom.proto.imap.selected import SelectedMailbox
from postroom.proto.imap.sort import SortAddress, SortCriterion, SortKey, SortKeys, sort_messages
from postroom.proto.imap.structure import MailAddress
from postroom.proto.imap.thread import ThreadAlgorithm, format_threads, thread_messages
from postroom.services.imap.messages import FETCH_BATCH, number_set, selected_mailbox
from postroom.services.imap.search_texts import SearchTexts, Texts
from postroom.services.imap.session import ImapSession, Refusal
from postroom.storage.api import Tx
from postroom.storage.records import FetchRow
from postroom.storage.summary import unpack

SEARCH_BATCH = 1024  # messages per store round trip when no body is read
LOOP_DECIDES = 100  # at most so many messages are decided on the event loop from kept texts

# --- SEARCH ------------------------------------------------------------------------------------


async def search(session: ImapSession, tag: str, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Search)
    selected = selected_mailbox(session)
    await session.announce(allow_expunge=command.uid)
    _check_charset(command.charset)
    with_modseq = uses_modseq(command.key)
    if with_modseq:
        session.enable_condstore()
    found = await _matching(session, selected, command.key)
    modseqs: dict[int, int] | None = None
    if with_modseq:
        # RFC 7162 §3.1.5: a search by MODSEQ reports the highest MODSEQ of what it found.
        rows = await _rows(session, selected, found, summary=False)
        found = [(seq, row.uid) for seq, row in rows]
        modseqs = {(row.uid if command.uid else seq): row.modseq for seq, row in rows}
    numbers = [uid for _, uid in found] if command.uid else [seq for seq, _ in found]
    highest = max(modseqs.values(), default=None) if modseqs is not None else None
    if command.returns is not None:
        session.send(_esearch(tag, command, numbers, modseqs))
    else:
        modseq = b" (MODSEQ %d)" % highest if highest is not None else b""
        session.send(b"* SEARCH" + b"".join(b" %d" % n for n in numbers) + modseq + b"\r\n")
    session.tagged(tag, "OK", "Search completed.")


def _esearch(
    tag: str,
    command: cmd.Search | cmd.Sort,
    numbers: list[int],
    modseqs: dict[int, int] | None = None,
) -> bytes:
    """RFC 4731 §3.1 ESEARCH response (RFC 5267 §3.2 for SORT: ALL keeps the sort order)."""
    assert command.returns is not None
    options = command.returns.options or frozenset({"ALL"})
    out = b'* ESEARCH (TAG "' + tag.encode() + b'")'
    if command.uid:
        out += b" UID"
    if numbers:
        if "MIN" in options:
            out += b" MIN %d" % min(numbers)
        if "MAX" in options:
            out += b" MAX %d" % max(numbers)
        if "ALL" in options:
            # RFC 5267 §3.2: ESORT's ALL keeps the sort order.
            if isinstance(command, cmd.Sort):
                out += b" ALL " + encode.ordered_sequence_set(numbers).encode()
            else:
                out += b" ALL " + number_set(numbers)
    if "COUNT" in options:
        out += b" COUNT %d" % len(numbers)
    if modseqs is not None and numbers:
        # RFC 7162 §3.1.5: with only MIN/MAX, the MODSEQ of the messages those return.
        returned = (
            [n for n, o in ((min(numbers), "MIN"), (max(numbers), "MAX")) if o in options]
            if options <= {"MIN", "MAX"}
            else numbers
        )
        out += b" MODSEQ %d" % max(modseqs[n] for n in returned)
    return out + b"\r\n"


async def _matching(
    session: ImapSession, selected: SelectedMailbox, key: SearchKey
) -> list[tuple[int, int]]:
    """(sequence number, UID) of every message `key` matches, in order.

    RFC 3501 §6.4.4: the keys of a search form a set, so the cheapest decide first. What
    needs the store runs on its reader thread next to the reads, so a long SEARCH TEXT does
    not hold up the event loop (and the other sessions) while it decodes messages.
    """
    uids = selected.uids
    exists, max_uid = selected.exists, selected.max_uid
    # The sets of the AND narrow the messages and leave the key; the rest is tested.
    seqs, ordered = narrow(by_cost(key), uids)
    made_of = shape(ordered)
    pending = [(seq, uids[seq - 1]) for seq in (range(1, exists + 1) if seqs is None else seqs)]
    if selected.any_gone(uid for _, uid in pending):
        # Expunged elsewhere, still numbered for this client (RFC 2180 §4.1): never found.
        pending = [(seq, uid) for seq, uid in pending if not selected.is_expunged(uid)]
    found: list[tuple[int, int]] = []
    if made_of.cost == Cost.VIEW or Cost.VIEW in made_of.costs:
        # The view settles the whole key, or has flags or sets to test.
        decide = decider(ordered, Cost.VIEW, exists=exists, max_uid=max_uid)
        flags = selected.flags_in([uid for _, uid in pending])
        undecided = []
        for (seq, uid), flagged in zip(pending, flags, strict=True):
            answer = decide(SearchMessage(seq, uid, flagged, 0.0, 0, 0))
            if answer is None:
                undecided.append((seq, uid))
            elif answer:
                found.append((seq, uid))
        pending = undecided
    if not pending:
        return found
    texts = session.ctx.search_texts
    settled = _from_kept_texts(texts, selected, ordered, made_of, pending)
    if settled is not None:
        return sorted(found + settled)
    store = session.ctx.store
    narrowed = len(pending) < exists
    plan = _Plan.make(selected, ordered, made_of, texts, narrowed=narrowed)
    # Without bodies to read, rows are small (or filtered out by the store): fewer round trips.
    size = FETCH_BATCH if needs_content(ordered) is True else SEARCH_BATCH
    for start in range(0, len(pending), size):
        batch = pending[start : start + size]
        flags = selected.flags_in([uid for _, uid in batch])
        known = {uid: (seq, flagged) for (seq, uid), flagged in zip(batch, flags, strict=True)}
        found += await store.read(functools.partial(plan.run, known=known))
    found.sort()
    return found


def _from_kept_texts(
    texts: SearchTexts,
    selected: SelectedMailbox,
    key: SearchKey,
    made_of: Shape,
    pending: list[tuple[int, int]],
) -> list[tuple[int, int]] | None:
    """The matches among a few messages, decided on the event loop when the key needs no more
    than the session's view and header texts already kept; None when the store must help."""
    fields = made_of.fields
    if not fields or len(pending) > LOOP_DECIDES or made_of.cost > Cost.FIELDS:
        return None
    if Cost.META in made_of.costs:
        return None
    uids = [uid for _, uid in pending]
    mailbox = (selected.mailbox_id, selected.uidvalidity)
    kept = {name: texts.kept(mailbox, name, uids) for name in fields}
    tables = {name: table for name, table in kept.items() if table is not None}
    if len(tables) < len(kept):
        return None
    if isinstance(key, HeaderKey):
        hits = set(header_hits(key, tables[key.field.lower()], uids))
        return [(seq, uid) for seq, uid in pending if uid in hits]
    exists, max_uid = selected.exists, selected.max_uid
    found = []
    for (seq, uid), flags in zip(pending, selected.flags_in(uids), strict=True):
        searched = {name: table[uid] for name, table in tables.items()}
        message = SearchMessage(seq, uid, flags, 0.0, 0, 0, searched=searched)
        if matches(key, message, exists=exists, max_uid=max_uid):
            found.append((seq, uid))
    return found


async def _rows(
    session: ImapSession,
    selected: SelectedMailbox,
    found: list[tuple[int, int]],
    *,
    summary: bool,
) -> list[tuple[int, FetchRow]]:
    """(sequence number, stored row) of found messages still in the store, in order."""
    seq_of = dict((uid, seq) for seq, uid in found)
    uids = [uid for _, uid in found]
    store = session.ctx.store
    rows: list[tuple[int, FetchRow]] = []
    for start in range(0, len(uids), SEARCH_BATCH):
        batch = uids[start : start + SEARCH_BATCH]

        def read(tx: Tx, batch: list[int] = batch) -> list[FetchRow]:
            return tx.messages.fetch_rows(
                selected.mailbox_id, batch, summary=summary, content=False
            )

        rows += [(seq_of[row.uid], row) for row in await store.read(read)]
    return rows


@dataclass(frozen=True)
class _Plan:
    """How the messages of one search are read and decided, batch by batch on the reader
    thread: store rows first when dates, sizes or MODSEQs can settle messages; then the search
    texts of the header fields the key names (kept between searches in `SearchTexts`) unless
    a required Subject over the whole mailbox narrows better through the store's subject
    index; then what is still undecided is read, header block or whole message."""

    mailbox: tuple[int, int]  # id, UIDVALIDITY
    key: SearchKey
    exists: int
    max_uid: int
    rows_first: Decider | None  # decides from store rows alone
    fields: frozenset[str]  # header fields whose search texts decide next
    fields_first: Decider | None
    texts: SearchTexts
    needle: tuple[str, str] | None  # what the store may filter the read rows with

    @classmethod
    def make(
        cls,
        selected: SelectedMailbox,
        key: SearchKey,
        made_of: Shape,
        texts: SearchTexts,
        *,
        narrowed: bool,
    ) -> _Plan:
        """The plan for `key`; `narrowed`: the cheap keys left only part of the mailbox, whose
        texts are worth keeping (the subject index is for searches of the whole of it)."""
        exists, max_uid = selected.exists, selected.max_uid
        needle = header_needle(key)
        early = Cost.META in made_of.costs and made_of.cost > Cost.META
        by_index = needle is not None and needle[0] == "subject" and not narrowed
        fields = frozenset() if by_index else made_of.fields
        return cls(
            mailbox=(selected.mailbox_id, selected.uidvalidity),
            key=key,
            exists=exists,
            max_uid=max_uid,
            rows_first=decider(key, Cost.META, exists=exists, max_uid=max_uid) if early else None,
            fields=fields,
            fields_first=(
                decider(key, Cost.FIELDS, exists=exists, max_uid=max_uid) if fields else None
            ),
            texts=texts,
            needle=needle,
        )

    def run(
        self, tx: Tx, *, known: dict[int, tuple[int, tuple[str, ...]]]
    ) -> list[tuple[int, int]]:
        """(sequence number, UID) of the matches among `known` (UID → sequence number, flags)."""
        hits: list[tuple[int, int]] = []
        uids = list(known)
        rows: dict[int, FetchRow] = {}
        if self.rows_first is not None:
            for row in tx.messages.fetch_rows(self.mailbox[0], uids, summary=False, content=False):
                rows[row.uid] = row
            uids = self._decide(self.rows_first, known, list(rows), rows, {}, hits)
        if self.fields_first is not None and uids:
            texts = {name: self.texts.texts(tx, self.mailbox, name, uids) for name in self.fields}
            if isinstance(self.key, HeaderKey):
                # The common search, one header test: settled in one pass over the texts.
                matched = header_hits(self.key, texts[self.key.field.lower()], uids)
                return hits + [(known[uid][0], uid) for uid in matched]
            present = [uid for uid in uids if all(uid in table for table in texts.values())]
            uids = self._decide(self.fields_first, known, present, rows, texts, hits)
        if not uids:
            return hits
        for row in tx.messages.fetch_rows(
            self.mailbox[0],
            uids,
            summary=False,
            content=needs_content(self.key),
            must_contain=self.needle,
        ):
            seq, flags = known[row.uid]
            message = SearchMessage(
                seq, row.uid, flags, row.internal_date, row.size, row.modseq, row.content
            )
            if matches(self.key, message, exists=self.exists, max_uid=self.max_uid):
                hits.append((seq, row.uid))
        return hits

    @staticmethod
    def _decide(
        decide: Decider,
        known: dict[int, tuple[int, tuple[str, ...]]],
        uids: list[int],
        rows: dict[int, FetchRow],
        texts: dict[str, Texts],
        hits: list[tuple[int, int]],
    ) -> list[int]:
        """Add what `decide` settles of `uids` as a match to `hits`; return the undecided."""
        undecided = []
        for uid in uids:
            seq, flags = known[uid]
            row = rows.get(uid)
            message = SearchMessage(
                seq,
                uid,
                flags,
                row.internal_date if row else 0.0,
                row.size if row else 0,
                row.modseq if row else 0,
                searched={name: table[uid] for name, table in texts.items()},
            )
            answer = decide(message)
            if answer is None:
                undecided.append(uid)
            elif answer:
                hits.append((seq, uid))
        return undecided


def _sort_keys(seq: int, row: FetchRow) -> SortKeys:
    summary = unpack(row.summary) if row.summary is not None else None

    def first(addresses: tuple[MailAddress, ...] | None) -> SortAddress | None:
        if not addresses:
            return None
        address = addresses[0]
        return SortAddress(address.mailbox, address.host, address.name)

    if summary is None:
        return SortKeys(seq, row.uid, row.internal_date, None, row.size)
    return SortKeys(
        seq,
        row.uid,
        row.internal_date,
        None if summary.date is None else float(summary.date),
        row.size,
        summary.subject or "",
        first(summary.from_),
        first(summary.to),
        first(summary.cc),
        summary.message_id,
        summary.in_reply_to,
        summary.references,
    )


async def _matching_sort_keys(
    session: ImapSession, command: cmd.Sort | cmd.Thread
) -> tuple[SelectedMailbox, list[SortKeys]]:
    """What SORT and THREAD start with: news told, the charset checked, and the sort keys of
    the messages the search key matches."""
    selected = selected_mailbox(session)
    await session.announce(allow_expunge=command.uid)
    _check_charset(command.charset)
    found = await _matching(session, selected, command.key)
    rows = await _rows(session, selected, found, summary=True)
    return selected, [_sort_keys(seq, row) for seq, row in rows]


async def sort(session: ImapSession, tag: str, command: cmd.Command) -> None:
    """RFC 5256 §3 SORT (and RFC 5957 DISPLAYFROM/DISPLAYTO)."""
    assert isinstance(command, cmd.Sort)
    selected, keys = await _matching_sort_keys(session, command)
    criteria = [SortCriterion(SortKey(c.key), c.reverse) for c in command.criteria]
    order = sort_messages(keys, criteria)
    numbers = [selected.uid_at(seq) for seq in order] if command.uid else order
    if command.returns is not None:
        session.send(_esearch(tag, command, numbers))  # RFC 5267 §3.2 ESORT
    else:
        session.send(b"* SORT" + b"".join(b" %d" % n for n in numbers) + b"\r\n")
    session.tagged(tag, "OK", "Sort completed.")


async def thread(session: ImapSession, tag: str, command: cmd.Command) -> None:
    """RFC 5256 §2 THREAD=ORDEREDSUBJECT and THREAD=REFERENCES."""
    assert isinstance(command, cmd.Thread)
    _, keys = await _matching_sort_keys(session, command)
    threads = thread_messages(keys, ThreadAlgorithm(command.algorithm))
    text = format_threads(threads, use_uid=command.uid)
    session.send(b"* THREAD " + text.encode() + b"\r\n" if text else b"* THREAD\r\n")
    session.tagged(tag, "OK", "Thread completed.")


def _check_charset(charset: str | None) -> None:
    if charset is not None and charset.upper() not in ("UTF-8", "US-ASCII"):
        raise Refusal("Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
