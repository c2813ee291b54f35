"""IMAP SEARCH, SORT and THREAD (RFC 3501 §6.4.4, RFC 4731 ESEARCH, RFC 5256): the store is
scanned in batches on the reader thread, each message matched against the search key with
what it needs (flags and dates from the session's view, headers or the whole message only
when the key asks for them).
"""

from __future__ import annotations

from dataclasses import dataclass

from postroom.proto.imap import encode
from postroom.proto.imap import grammar_commands as cmd
from postroom.proto.imap.grammar_search import SearchKey
from postroom.proto.imap.search import (
    SearchMessage,
    header_needle,
    matches,
    needs_content,
    uses_modseq,
)
from postroom.proto.imap.selected import SelectedMailbox
from postroom.proto.imap.sort import SortAddress, SortCriterion, SortKey, SortKeys, sort_messages
from postroom.proto.imap.structure import MailAddress
from postroom.proto.imap.thread import ThreadAlgorithm, format_threads, thread_messages
from postroom.services.imap.messages import FETCH_BATCH, number_set, selected_mailbox
from postroom.services.imap.session import ImapSession, Refusal
from postroom.storage.api import Tx
from postroom.storage.records import FetchRow
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
    found = [row for _, row in await _matching(session, selected, command.key)]
    if command.uid:
        numbers = [row.uid for row in found]
    else:
        numbers = [seq for row in found if (seq := selected.seq_of(row.uid)) is not None]
    # RFC 7162 §3.1.5: a search by MODSEQ reports the highest MODSEQ of what it found.
    modseqs = dict(zip(numbers, (row.modseq for row in found), strict=True))
    highest = max(modseqs.values(), default=None) if with_modseq else None
    if command.returns is not None:
        session.send(_esearch(tag, command, numbers, modseqs if with_modseq else None))
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
    session: ImapSession, selected: SelectedMailbox, key: SearchKey, *, summary: bool = False
) -> list[tuple[int, FetchRow]]:
    """(sequence number, stored row) of every message `key` matches.

    The matching runs on the store's reader thread next to the reads, so a long SEARCH TEXT
    does not hold up the event loop (and the other sessions) while it decodes messages.
    """
    found: list[tuple[int, FetchRow]] = []
    store = session.ctx.store
    uids = list(selected.uids)
    # Without bodies to read, rows are small (or filtered out by the store): fewer round trips.
    size = FETCH_BATCH if needs_content(key) is True else SEARCH_BATCH
    for start in range(0, len(uids), size):
        batch = uids[start : start + size]
        numbers = range(start + 1, start + 1 + len(batch))
        scan = _Scan(
            mailbox_id=selected.mailbox_id,
            known=dict(
                zip(batch, zip(numbers, selected.flags_in(batch), strict=True), strict=True)
            ),
            key=key,
            summary=summary,
            exists=selected.exists,
            max_uid=selected.max_uid,
        )
        found += await store.read(scan.run)
    return found


@dataclass(frozen=True)
class _Scan:
    """One batch of a search, run on the reader thread: read the rows, keep the matches."""

    mailbox_id: int
    known: dict[int, tuple[int, tuple[str, ...]]]  # UID → (sequence number, flags)
    key: SearchKey
    summary: bool
    exists: int
    max_uid: int

    def run(self, tx: Tx) -> list[tuple[int, FetchRow]]:
        rows = tx.messages.fetch_rows(
            self.mailbox_id,
            list(self.known),
            summary=self.summary,
            content=needs_content(self.key),
            must_contain=header_needle(self.key),
        )
        hits = []
        for row in rows:
            seq, flags = self.known[row.uid]
            message = SearchMessage(
                seq=seq,
                uid=row.uid,
                flags=flags,
                internal_date=row.internal_date,
                size=row.size,
                modseq=row.modseq,
                content=row.content,
            )
            if matches(self.key, message, exists=self.exists, max_uid=self.max_uid):
                hits.append((seq, row))
        return hits


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
    found = await _matching(session, selected, command.key, summary=True)
    return selected, [_sort_keys(seq, row) for seq, row in found]


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
