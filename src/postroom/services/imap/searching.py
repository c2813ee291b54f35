"""IMAP SEARCH, SORT and THREAD (RFC 3501 §6.4.4, RFC 4731 ESEARCH, RFC 5256).

Keys are evaluated cheapest first (proto/imap/search_plan.py): sequence and UID sets narrow the
messages to look at, the session's view (flags) settles what it can, store rows (dates, sizes,
MODSEQ) settle more, and only the messages still undecided are read, their header block or the
whole message as the key needs, in batches on the store's reader thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from postroom.proto.imap import encode
from postroom.proto.imap import grammar_commands as cmd
from postroom.proto.imap.grammar_search import AllKey, AndKey, NotKey, OrKey, SearchKey
from postroom.proto.imap.search import (
    SearchMessage,
    header_needle,
    matches,
    needs_content,
    uses_modseq,
)
from postroom.proto.imap.search_plan import Cost, by_cost, candidates, cost, decider
from postroom.proto.imap.selected import SelectedMailbox
from postroom.proto.imap.sort import SortAddress, SortCriterion, SortKey, SortKeys, sort_messages
from postroom.proto.imap.structure import MailAddress
from postroom.proto.imap.thread import ThreadAlgorithm, format_threads, thread_messages
from postroom.services.imap.messages import FETCH_BATCH, number_set, selected_mailbox
from postroom.services.imap.session import ImapSession, Refusal
from postroom.storage import imap as store_ops
from postroom.storage.database import Database
from postroom.storage.summary import unpack

SEARCH_BATCH = 1024  # messages per store round trip when no body is read

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

    RFC 3501 §6.4.4: the keys of a search form a set, so the cheapest decide first. The
    matching runs on the store's reader thread next to the reads, so a long SEARCH TEXT does
    not hold up the event loop (and the other sessions) while it decodes messages.
    """
    ordered = by_cost(key)
    uids = selected.uids
    exists, max_uid = selected.exists, selected.max_uid
    seqs: Sequence[int] | None = candidates(ordered, uids)
    if seqs is None:
        seqs = range(1, exists + 1)
    pending = [(seq, uids[seq - 1]) for seq in seqs]
    if selected.any_gone(uid for _, uid in pending):
        # Expunged elsewhere, still numbered for this client (RFC 2180 §4.1): never found.
        pending = [(seq, uid) for seq, uid in pending if not selected.is_expunged(uid)]
    found: list[tuple[int, int]] = []
    if _settles_early(ordered, seqs, exists):
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
    store = session.ctx.store
    content = needs_content(ordered)
    # Dates, sizes and MODSEQs settle what they can before any message is read.
    early = _has_meta_keys(ordered) and cost(ordered) > Cost.META
    rows_first = decider(ordered, Cost.META, exists=exists, max_uid=max_uid) if early else None
    # Without bodies to read, rows are small (or filtered out by the store): fewer round trips.
    size = FETCH_BATCH if content is True else SEARCH_BATCH
    for start in range(0, len(pending), size):
        batch = pending[start : start + size]
        scan = _Scan(
            mailbox_id=selected.mailbox_id,
            known=dict(
                (uid, (seq, flagged))
                for (seq, uid), flagged in zip(
                    batch, selected.flags_in([uid for _, uid in batch]), strict=True
                )
            ),
            blob_dir=store.blob_dir,
            key=ordered,
            rows_first=rows_first,
            exists=exists,
            max_uid=max_uid,
        )
        found += await store.read(scan.run)
    found.sort()
    return found


def _settles_early(key: SearchKey, seqs: Sequence[int], exists: int) -> bool:
    """Whether the session's view is worth asking first: it settles the whole key, or the key
    has flags or sets in it, or the sets narrowed the messages (then it is cheap anyway)."""
    return cost(key) == Cost.VIEW or len(seqs) < exists or _has_view_keys(key)


def _has_view_keys(key: SearchKey) -> bool:
    return _any_leaf(key, lambda leaf: cost(leaf) == Cost.VIEW and not isinstance(leaf, AllKey))


def _has_meta_keys(key: SearchKey) -> bool:
    return _any_leaf(key, lambda leaf: cost(leaf) == Cost.META)


def _any_leaf(key: SearchKey, test: Callable[[SearchKey], bool]) -> bool:
    if isinstance(key, NotKey):
        return _any_leaf(key.key, test)
    if isinstance(key, OrKey):
        return _any_leaf(key.left, test) or _any_leaf(key.right, test)
    if isinstance(key, AndKey):
        return any(_any_leaf(part, test) for part in key.keys)
    return test(key)


async def _rows(
    session: ImapSession,
    selected: SelectedMailbox,
    found: list[tuple[int, int]],
    *,
    summary: bool,
) -> list[tuple[int, store_ops.FetchRow]]:
    """(sequence number, stored row) of found messages still in the store, in order."""
    seq_of = dict((uid, seq) for seq, uid in found)
    uids = [uid for _, uid in found]
    store = session.ctx.store
    rows: list[tuple[int, store_ops.FetchRow]] = []
    for start in range(0, len(uids), SEARCH_BATCH):
        batch = uids[start : start + SEARCH_BATCH]

        def read(db: Database, batch: list[int] = batch) -> list[store_ops.FetchRow]:
            return store_ops.fetch_rows(
                db, selected.mailbox_id, batch, store.blob_dir, summary=summary, content=False
            )

        rows += [(seq_of[row.uid], row) for row in await store.read(read)]
    return rows


@dataclass(frozen=True)
class _Scan:
    """One batch of a search, run on the reader thread: read the rows, keep the matches."""

    mailbox_id: int
    known: dict[int, tuple[int, tuple[str, ...]]]  # UID → (sequence number, flags)
    blob_dir: Path
    key: SearchKey
    rows_first: Callable[[SearchMessage], bool | None] | None  # decides from rows alone
    exists: int
    max_uid: int

    def run(self, db: Database) -> list[tuple[int, int]]:
        hits: list[tuple[int, int]] = []
        uids = list(self.known)
        if self.rows_first is not None:
            rows = store_ops.fetch_rows(
                db, self.mailbox_id, uids, self.blob_dir, summary=False, content=False
            )
            uids = []
            for row in rows:
                answer = self.rows_first(self._message(row))
                if answer is None:
                    uids.append(row.uid)
                elif answer:
                    hits.append((self.known[row.uid][0], row.uid))
            if not uids:
                return hits
        rows = store_ops.fetch_rows(
            db,
            self.mailbox_id,
            uids,
            self.blob_dir,
            summary=False,
            content=needs_content(self.key),
            must_contain=header_needle(self.key),
        )
        for row in rows:
            if matches(self.key, self._message(row), exists=self.exists, max_uid=self.max_uid):
                hits.append((self.known[row.uid][0], row.uid))
        return hits

    def _message(self, row: store_ops.FetchRow) -> SearchMessage:
        seq, flags = self.known[row.uid]
        return SearchMessage(
            seq=seq,
            uid=row.uid,
            flags=flags,
            internal_date=row.internal_date,
            size=row.size,
            modseq=row.modseq,
            content=row.content,
        )


def _sort_keys(seq: int, row: store_ops.FetchRow) -> SortKeys:
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
