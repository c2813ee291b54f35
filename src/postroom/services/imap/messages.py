"""IMAP commands on messages: FETCH, STORE, COPY/MOVE, EXPUNGE (RFC 3501 §6.4) and APPEND
(§6.3.11), with UIDPLUS (RFC 4315), MOVE (RFC 6851) and CONDSTORE (RFC 7162) parts; SEARCH,
SORT and THREAD are in searching.py.

Handlers are functions of the session; they turn sequence sets into UIDs against the session's
view, read and write through the store, and write responses with `session.send`.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import functools
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from postroom.proto.imap import encode
from postroom.proto.imap import grammar_commands as cmd
from postroom.proto.imap.grammar_base import SequenceSet
from postroom.proto.imap.grammar_fetch import (
    FetchAttr,
    FetchBinary,
    FetchBinarySize,
    FetchBody,
    FetchItem,
)
from postroom.proto.imap.mime import header_section, parse
from postroom.proto.imap.reader import LiteralData
from postroom.proto.imap.selected import MessageState, OwnChange, SelectedMailbox
from postroom.proto.imap.structure import section_bytes
from postroom.services.imap import limits
from postroom.services.imap.session import FlagBatch, ImapSession, Refusal
from postroom.services.junk_filter import train_message
from postroom.storage.api import Content, FlagMode, Tx
from postroom.storage.buffer import ContentBuffer
from postroom.storage.records import (
    ARCHIVE,
    JUNK,
    TRASH,
    FetchRow,
    FlagWrite,
    MailboxError,
    MailboxNews,
    StoreResult,
    join_flags,
    split_flags,
)
from postroom.storage.summary import summarise_packed, wire_part

SEEN = "\\Seen"
log = logging.getLogger("postroom.imap")

SEEN_WITH_READ = 8  # FETCHes of up to this many messages set \Seen and read in one job
FETCH_BATCH = 256  # messages read from the store per round trip
CONTENT_BUDGET = 8 * 1024 * 1024  # octets of message contents read per round trip (or one)
MAX_TRAINED_AT_ONCE = 200  # messages one COPY/MOVE trains the junk filter with (writer time)
ANSWER_CHUNK = 1024  # messages per piece of a long answer made from the session's view


def number_set(numbers: Iterable[int]) -> bytes:
    return encode.sequence_set(numbers).encode()


def selected_mailbox(session: ImapSession) -> SelectedMailbox:
    assert session.selected is not None
    return session.selected


def resolve_uids(selected: SelectedMailbox, sequence: SequenceSet, *, uid: bool) -> list[int]:
    """The UIDs a set names: by UID (absent ones skipped, RFC 3501 §6.4.8) or by number."""
    uids = selected.uids
    if uid:
        found: list[int] = []
        for low, high in sequence.resolve(selected.max_uid):
            start = bisect.bisect_left(uids, low)
            end = bisect.bisect_right(uids, high)
            found += uids[start:end]
        return found
    spans = sequence.resolve(selected.exists)
    if any(high > selected.exists for _, high in spans) or (not spans and sequence.ranges):
        raise Refusal("Invalid messageset", status="BAD")
    return [uids[seq - 1] for low, high in spans for seq in range(low, high + 1)]


# --- FETCH -------------------------------------------------------------------------------------


class _FetchPlan(NamedTuple):
    """What a FETCH's items ask of the store; made once per distinct item list."""

    items: tuple[FetchItem, ...]  # as answered: UID and MODSEQ added where the RFCs want them
    binary: bool  # BINARY items (refused)
    modseq: bool  # MODSEQ answered: CONDSTORE turns on (RFC 7162 §3.1)
    from_view: bool  # only FLAGS (and UID): the session's view has all of it
    summary: bool  # ENVELOPE, BODY or BODYSTRUCTURE
    content: Content  # the message (or a part of it); "header": only its header is needed
    sets_seen: bool  # RFC 3501 §6.4.5: a non-PEEK body fetch sets \Seen


@functools.lru_cache(maxsize=256)
def _fetch_plan(items: tuple[FetchItem, ...], wants_uid: bool, changedsince: bool) -> _FetchPlan:
    # An item asked for twice is answered once: `FETCH 1 (BODY.PEEK[] BODY.PEEK[] ...)` must not
    # turn one message into an answer hundreds of times its size.
    items = tuple(dict.fromkeys(items))
    names = [i.name for i in items if isinstance(i, FetchAttr)]
    if wants_uid and "UID" not in names:
        items = (_UID, *items)  # RFC 3501 §6.4.8
    if changedsince and "MODSEQ" not in names:
        items = (*items, FetchAttr("MODSEQ"))  # RFC 7162 §3.1.4.1
    named = {i.name for i in items if isinstance(i, FetchAttr)}
    bodies = [i for i in items if isinstance(i, FetchBody)]
    content: Content = bool(named & {"RFC822", "RFC822.HEADER", "RFC822.TEXT"} or bodies)
    if content and not named & {"RFC822", "RFC822.TEXT"} and all(_top_header(b) for b in bodies):
        # The header block stored with the summary: it runs at least to the message's first
        # empty line, where the header section ends, so the answer is the same.
        content = "header"
    return _FetchPlan(
        items,
        binary=any(isinstance(i, FetchBinary | FetchBinarySize) for i in items),
        modseq="MODSEQ" in named,
        from_view="FLAGS" in named and named <= _VIEW_ITEMS and len(named) == len(items),
        summary=bool(named & {"ENVELOPE", "BODY", "BODYSTRUCTURE"}),
        content=content,
        sets_seen=bool(named & {"RFC822", "RFC822.TEXT"}) or any(not b.peek for b in bodies),
    )


def _top_header(body: FetchBody) -> bool:
    """BODY[HEADER] or BODY[HEADER.FIELDS (...)] of the message itself (no part number)."""
    return not body.section.part and body.section.text in _HEADER_SECTIONS


_HEADER_SECTIONS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")


async def fetch(session: ImapSession, tag: str, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Fetch)
    selected = selected_mailbox(session)
    # RFC 3501 §7.4.1: no EXPUNGE while answering FETCH (UID FETCH may have them).
    await session.announce(allow_expunge=command.uid)
    uids = resolve_uids(selected, command.sequence, uid=command.uid)
    # RFC 3501 §6.4.8 for UID FETCH; RFC 7162 §3.2: with QRESYNC, UID in every FETCH.
    wants_uid = command.uid or session.enabled.qresync
    plan = _fetch_plan(command.items, wants_uid, command.changedsince is not None)
    if plan.binary:
        raise Refusal("BINARY is not supported", status="BAD")
    if plan.modseq:
        session.enable_condstore()  # RFC 7162 §3.1: CHANGEDSINCE and MODSEQ enable it
    if command.changedsince is not None:
        if command.vanished:
            await _vanished_earlier(session, selected, command.sequence, command.changedsince)
        uids = [u for u in uids if selected.modseqs.get(u, 0) > command.changedsince]
    items = plan.items
    if plan.from_view and not session.enabled.condstore and not selected.any_gone(uids):
        # Flags and UIDs come from the session's view: nothing to read from the store.
        with_uid, uid_first = _UID in items, items[0] == _UID
        await _send_flag_fetches(session, selected, uids, with_uid=with_uid, uid_first=uid_first)
        session.tagged(tag, "OK", "Fetch completed.")
        return
    seen_changed: set[int] = set()
    encoded: dict[tuple[str, ...], bytes] = {}  # each flag set's "FLAGS (...)", made once
    first_rows: list[FetchRow] | None = None  # the first batch, if read already
    if session.enabled.condstore:
        await session.settle_pending()  # MODSEQs are answered from the store
    if plan.sets_seen and not selected.read_only:
        unseen = [u for u in uids if SEEN not in selected.flags.get(u, ())]
        if unseen and not session.enabled.condstore:
            # The answer shows flags from the session's view: \Seen is set there now and in
            # the store behind it, like a STORE.
            seen_changed = _seen_in_view(session, selected, unseen)
        elif unseen and len(uids) <= SEEN_WITH_READ:
            # One store round trip instead of two: set \Seen and read in the same job.
            seen_changed, first_rows = await _set_seen(
                session, selected, unseen, read=(uids, plan.summary, plan.content)
            )
        elif unseen:
            seen_changed, _ = await _set_seen(session, selected, unseen)
            await session.settle_pending()  # the rows read next carry the new MODSEQs
    missing = False
    start = 0
    while start < len(uids):
        batch = uids[start : start + FETCH_BATCH]
        rows = first_rows
        if rows is None:
            rows = await _read_rows(session, selected, batch, plan.summary, plan.content)
        first_rows = None
        # Reads with message contents stop at CONTENT_BUDGET octets: the rows cover the batch
        # up to the last one (the others of that stretch were expunged meanwhile).
        read = bisect.bisect_right(batch, rows[-1].uid) if rows else len(batch)
        start += read
        if len(rows) < read:
            missing = True
        seqs = selected.seqs_of(r.uid for r in rows)
        if plan.content is not True:
            lines = [
                b"".join(
                    _fetch_response(
                        session, selected, seq, row, items, row.uid in seen_changed, encoded
                    )
                )
                for row, seq in zip(rows, seqs, strict=True)
                if seq is not None
            ]
            await session.send_now(b"".join(lines))
            continue
        # Message contents: each piece goes out as it is made, so memory stays at about one
        # message whatever the item list asks for (RFC 3501 §7.4.2 literals, one after another).
        for row, seq in zip(rows, seqs, strict=True):
            if seq is not None:
                for piece in _fetch_response(
                    session, selected, seq, row, items, row.uid in seen_changed, encoded
                ):
                    await session.send_now(piece)
    if missing:
        # RFC 5530 EXPUNGEISSUED: some messages were expunged by another session meanwhile.
        session.tagged(tag, "NO", "Some messages were expunged", "EXPUNGEISSUED")
        return
    session.tagged(tag, "OK", "Fetch completed.")


async def _vanished_earlier(
    session: ImapSession, selected: SelectedMailbox, sequence: SequenceSet, since: int
) -> None:
    """RFC 7162 §3.2.6: UID FETCH (CHANGEDSINCE m VANISHED) first lists what was expunged."""
    if not session.enabled.qresync:
        raise Refusal("VANISHED needs QRESYNC enabled", status="BAD")
    mailbox_id = selected.mailbox_id
    gone = await session.ctx.store.read(lambda tx: tx.messages.vanished_since(mailbox_id, since))
    top = max(selected.max_uid, max(gone, default=0))
    gone = [u for u in gone if sequence.contains(u, top)]
    if gone:
        session.send(b"* VANISHED (EARLIER) " + number_set(gone) + b"\r\n")


async def _read_rows(
    session: ImapSession,
    selected: SelectedMailbox,
    uids: list[int],
    summary: bool,
    content: Content,
) -> list[FetchRow]:
    """The stored rows of `uids` (at most FETCH_BATCH: one store round trip)."""
    mailbox_id = selected.mailbox_id
    return await session.ctx.store.read(
        lambda tx: tx.messages.fetch_rows(
            mailbox_id, uids, summary=summary, content=content, content_budget=CONTENT_BUDGET
        )
    )


async def _set_seen(
    session: ImapSession,
    selected: SelectedMailbox,
    unseen: list[int],
    read: tuple[list[int], bool, Content] | None = None,
) -> tuple[set[int], list[FetchRow]]:
    """RFC 3501 §6.4.5: a non-PEEK body fetch sets \\Seen. With `read` (UIDs, summary,
    content), the rows of those UIDs are read in the same job, after the change."""
    mailbox_id = selected.mailbox_id

    def job(tx: Tx) -> tuple[StoreResult, list[FetchRow]]:
        result = tx.messages.store_flags(mailbox_id, unseen, "add", (SEEN,))
        if read is None:
            return result, []
        uids, summary, content = read
        rows = tx.messages.fetch_rows(mailbox_id, uids, summary=summary, content=content)
        return result, rows

    # A flag change: answered before its commit is done, as STORE's.
    (result, rows), committed = await session.ctx.store.write_early(job)
    session.note_write(committed)
    for state in result.changed:
        selected.note_own_flags(state)
    return {s.uid for s in result.changed}, rows


def _fetch_response(
    session: ImapSession,
    selected: SelectedMailbox,
    seq: int,
    row: FetchRow,
    items: tuple[FetchItem, ...],
    extra_flags: bool,
    encoded: dict[tuple[str, ...], bytes],
) -> Iterator[bytes | memoryview]:
    """One message's FETCH response in pieces, each made when the one before was taken: a
    literal's data is one piece of its own (a view of the content, not a copy)."""
    yield b"* %d FETCH (" % seq
    raw = row.content or b""
    tree = None
    names: set[str] = set()
    for index, item in enumerate(items):
        space = b" " if index else b""
        if isinstance(item, FetchAttr):
            name = item.name
            names.add(name)
            if name == "UID":
                yield space + b"UID %d" % row.uid
            elif name == "FLAGS":
                yield space + _flags_item(selected.flags_of(row.uid), encoded)
            elif name == "INTERNALDATE":
                when = dt.datetime.fromtimestamp(int(row.internal_date), dt.UTC)
                yield space + b"INTERNALDATE " + encode.internal_date(when)
            elif name == "RFC822.SIZE":
                yield space + b"RFC822.SIZE %d" % row.size
            elif name == "MODSEQ":
                yield space + b"MODSEQ (%d)" % row.modseq
            elif name in _SUMMARY_ITEMS:
                if row.summary is None:
                    raise Refusal("Message summary missing", status="NO")
                prefix, part = _SUMMARY_ITEMS[name]
                yield space + prefix + wire_part(row.summary, part)
            elif name == "RFC822":
                yield space + b"RFC822 {%d}\r\n" % len(raw)
                yield memoryview(raw)
            elif name == "RFC822.HEADER":
                yield space + b"RFC822.HEADER " + encode.literal(header_section(raw))
            elif name == "RFC822.TEXT":
                tree = tree or parse(raw)
                text = section_bytes(raw, tree, (), "TEXT")
                yield space + b"RFC822.TEXT {%d}\r\n" % len(text)
                yield text
        elif isinstance(item, FetchBody):
            section = item.section
            data: bytes | memoryview
            if not section.part and not section.text:
                data = memoryview(raw)  # BODY[]: the whole message, nothing to parse
            elif not section.part and section.text == "HEADER":
                data = header_section(raw)  # no field is read
            else:
                tree = tree or parse(raw)
                data = section_bytes(raw, tree, section.part, section.text or "", section.fields)
            if item.partial is not None:
                origin, count = item.partial
                data = memoryview(data)[origin : origin + count]
            yield space + item.response_name.encode() + b" {%d}\r\n" % len(data)
            yield data
    # RFC 3501 §6.4.5 / RFC 7162 §3.1: a \Seen set by this FETCH is reported with the new
    # flags, and with CONDSTORE enabled with the new MODSEQ, even when FLAGS was asked for.
    if extra_flags:
        if "FLAGS" not in names:
            yield b" " + _flags_item(selected.flags_of(row.uid), encoded)
        if session.enabled.condstore and "MODSEQ" not in names:
            yield b" MODSEQ (%d)" % row.modseq
    yield b")\r\n"


# What FETCH can answer from the session's view alone (without CONDSTORE's MODSEQs).
_VIEW_ITEMS = frozenset({"UID", "FLAGS"})
_UID = FetchAttr("UID")

# ENVELOPE, BODY and BODYSTRUCTURE: the response item's start, and its place in the summary.
_SUMMARY_ITEMS = {
    "ENVELOPE": (b"ENVELOPE ", 0),
    "BODY": (b"BODY ", 1),
    "BODYSTRUCTURE": (b"BODYSTRUCTURE ", 2),
}


async def _store_from_view(
    session: ImapSession,
    tag: str,
    command: cmd.Store,
    selected: SelectedMailbox,
    uids: list[int],
    mode: FlagMode,
    flags: tuple[str, ...],
) -> None:
    """STORE without CONDSTORE: nothing in the answer needs the store, so it is made from the
    session's view at once and the change goes to the store behind it, with the session's
    next ones (in order with every other write; commands that read wait for it)."""
    wanted = set(flags)
    change = selected.change_own_flags(uids, lambda old: _flags_after(old, mode, wanted))
    if change.before:
        _defer_flag_write(session, selected, change, mode, flags)
    if not command.silent:
        await _send_flag_fetches(session, selected, uids, with_uid=command.uid)
    session.tagged(tag, "OK", "Store completed.")


async def _send_flag_fetches(
    session: ImapSession,
    selected: SelectedMailbox,
    uids: list[int],
    *,
    with_uid: bool,
    uid_first: bool = False,
) -> None:
    """`SelectedMailbox.flag_fetches` of `uids`, ANSWER_CHUNK at a time: each piece goes out
    before the next is made, so a long answer is read by the client while it is being made."""
    for start in range(0, len(uids), ANSWER_CHUNK):
        if start:
            await session.flush()
        chunk = uids[start : start + ANSWER_CHUNK]
        session.send(selected.flag_fetches(chunk, with_uid=with_uid, uid_first=uid_first))


def _seen_in_view(session: ImapSession, selected: SelectedMailbox, unseen: list[int]) -> set[int]:
    """\\Seen set by a FETCH without CONDSTORE, in the session's view now; the UIDs changed.
    The store is told with the session's next flag changes (`_defer_flag_write`)."""
    change = selected.change_own_flags(unseen, lambda old: _flags_after(old, "add", {SEEN}))
    if change.before:
        _defer_flag_write(session, selected, change, "add", (SEEN,))
    return set(change.before)


def _defer_flag_write(
    session: ImapSession,
    selected: SelectedMailbox,
    change: OwnChange,
    mode: FlagMode,
    flags: tuple[str, ...],
) -> None:
    """An answered flag change joins the session's waiting one when it is of the same kind
    (mode and flags: the same old → new mapping), else follows it; they go to the store
    together (`ImapSession.defer_write`: within DEFERRED_WRITE_DELAY, or before anything
    else is written or read), so a client's run of STOREs or FETCHes costs one write."""
    batch = session.flag_batch
    if (
        batch is not None
        and batch.selected is selected
        and (batch.mode, batch.flags) == (mode, flags)
    ):
        for uid, old in change.before.items():
            batch.change.before.setdefault(uid, old)  # the flags the store should still have
        batch.change.after.update(change.after)
        return
    gathered = FlagBatch(selected, OwnChange(dict(change.before), dict(change.after)), mode, flags)
    session.defer_write(gathered, lambda: _write_flags(session, gathered))


def _write_flags(session: ImapSession, batch: FlagBatch) -> None:
    """Send answered flag changes to the store. When they are made, the view learns their
    MODSEQ; should that fail, the client is told the flags as they were."""
    selected, change = batch.selected, batch.change
    mailbox_id, mode, flags = selected.mailbox_id, batch.mode, batch.flags
    made, committed = session.ctx.store.submit_early(
        lambda tx: tx.messages.write_flag_change(
            mailbox_id, change.before, change.after, mode, flags
        )
    )
    session.note_write(committed)

    def learn(future: asyncio.Future[FlagWrite]) -> None:
        if future.cancelled() or session.selected is not selected:
            return
        if future.exception() is not None:
            log.error("flag change failed client=%s: %s", session.io.peer, future.exception())
            for uid, old in change.before.items():
                selected.undo_own_flags(uid, old)
            return
        written = future.result()
        selected.confirm_own_flags(written.uids, written.modseq, written.elsewhere)

    made.add_done_callback(learn)


def _flags_after(old: tuple[str, ...], mode: FlagMode, wanted: set[str]) -> tuple[str, ...] | None:
    """RFC 3501 §6.4.6: the flags after FLAGS ("set"), +FLAGS ("add") or -FLAGS ("remove"),
    in the store's order; None when they stay as they are."""
    current = set(old)
    new = wanted if mode == "set" else current | wanted if mode == "add" else current - wanted
    return None if new == current else split_flags(join_flags(new))


def _flags_item(flags: tuple[str, ...], encoded: dict[tuple[str, ...], bytes]) -> bytes:
    item = encoded.get(flags)
    if item is None:
        item = encoded[flags] = b"FLAGS " + encode.flag_list(flags)
    return item


# --- STORE -------------------------------------------------------------------------------------

_FLAG_MODES: dict[str, FlagMode] = {"replace": "set", "add": "add", "remove": "remove"}


async def store(session: ImapSession, tag: str, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Store)
    selected = selected_mailbox(session)
    await session.announce(allow_expunge=command.uid)
    if selected.read_only:
        raise Refusal("Mailbox is read-only", "READ-ONLY")
    uids = resolve_uids(selected, command.sequence, uid=command.uid)
    flags = tuple(f for f in command.flags if f != "\\Recent")
    mode = _FLAG_MODES[command.mode]
    if mode != "remove":
        limits.check_keywords(selected.keywords, flags)
    if command.unchangedsince is not None:
        session.enable_condstore()
    condstore = session.enabled.condstore
    if not condstore:
        await _store_from_view(session, tag, command, selected, uids, mode, flags)
        return
    # With CONDSTORE the answer carries the MODSEQs the store gives out. Flags: a crash may
    # lose the last changes, never mail (as Dovecot); answered before the commit is done.
    session.flush_deferred()  # writes keep their order
    mailbox_id, unchanged_since = selected.mailbox_id, command.unchangedsince
    result, committed = await session.ctx.store.write_early(
        lambda tx: tx.messages.store_flags(mailbox_id, uids, mode, flags, unchanged_since)
    )
    session.note_write(committed)
    for state in result.changed:
        selected.note_own_flags(state)
    if command.silent:
        # RFC 7162 §3.1.3: .SILENT still reports the new MODSEQ of what changed.
        reported = result.changed if condstore else []
    else:
        reported = sorted([*result.changed, *result.unchanged])
    with_uid = command.uid or session.enabled.qresync  # RFC 7162 §3.2: UID in every FETCH
    encoded: dict[tuple[str, ...], bytes] = {}  # a flag set's "FLAGS (...)", made once
    lines: list[bytes] = []
    for state, seq in zip(reported, selected.seqs_of(s.uid for s in reported), strict=True):
        if seq is None:
            continue
        items = []
        if not command.silent:
            flags_now = selected.flags_of(state.uid)
            item = encoded.get(flags_now)
            if item is None:
                item = encoded[flags_now] = b"FLAGS " + encode.flag_list(flags_now)
            items.append(item)
        if with_uid:
            items.append(b"UID %d" % state.uid)
        if condstore:
            items.append(b"MODSEQ (%d)" % state.modseq)
        lines.append(b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n")
    session.send(b"".join(lines))
    if result.modified:
        numbers = (
            result.modified
            if command.uid
            else [seq for u in result.modified if (seq := selected.seq_of(u)) is not None]
        )
        session.tagged(
            tag, "OK", "Conditional STORE failed", "MODIFIED " + number_set(numbers).decode()
        )
        return
    session.tagged(tag, "OK", "Store completed.")


# --- COPY / MOVE / EXPUNGE ---------------------------------------------------------------------


def junk_training(
    source: int, target: int, junk: int | None, is_move: bool, target_name: str
) -> bool | None:
    """What a COPY or MOVE teaches the user's junk filter: spam (True) for mail put into Junk,
    ham (False) for mail moved out of it to anywhere but Trash, or filed into Archive (as Mox
    trains its not-junk mailboxes), else nothing (None)."""
    if junk is None or source == target:
        return None
    if target == junk:
        return True
    if target_name == ARCHIVE or (source == junk and is_move and target_name != TRASH):
        return False
    return None


async def copy(session: ImapSession, tag: str, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Copy | cmd.Move)
    selected = selected_mailbox(session)
    is_move = isinstance(command, cmd.Move)
    await session.announce(allow_expunge=command.uid)
    if is_move and selected.read_only:
        raise Refusal("Mailbox is read-only", "READ-ONLY")
    uids = resolve_uids(selected, command.sequence, uid=command.uid)
    target_name = session.decode_name(command.mailbox)
    user_id = session.uid
    source = selected.mailbox_id
    junk = session.ctx.junk
    hostname = session.ctx.hostname

    def write(tx: Tx) -> tuple[int, list[tuple[int, int]], int, bool | None]:
        target = tx.mailboxes.find(user_id, target_name)
        if target is None:
            # RFC 3501 §6.4.7: TRYCREATE when the target does not exist.
            raise MailboxError("TRYCREATE", "Mailbox doesn't exist: " + target_name)
        pairs = tx.messages.copy(source, uids, target.id)
        if is_move:
            tx.messages.expunge(source, [p[0] for p in pairs])
        spam = None
        if junk is not None and pairs:
            junk_id = tx.mailboxes.id_of(user_id, JUNK)
            spam = junk_training(source, target.id, junk_id, is_move, target.name)
        return target.uidvalidity, pairs, target.id, spam

    def train(tx: Tx, result: tuple[int, list[tuple[int, int]], int, bool | None]) -> None:
        _, pairs, target, spam = result
        if spam is None or junk is None:
            return
        for _, new_uid in pairs[:MAX_TRAINED_AT_ONCE]:
            copy = tx.messages.read(target, new_uid)
            if copy is not None:
                train_message(tx, user_id, copy, spam=spam, hostname=hostname)
        junk.forget(user_id)

    uidvalidity, pairs, _, spam = await session.ctx.store.write(write, then=train)
    if spam is not None:
        log.info(
            "junk filter trained user=%s as=%s messages=%d",
            session.username,
            "spam" if spam else "ham",
            min(len(pairs), MAX_TRAINED_AT_ONCE),
        )
    code = None
    if pairs:
        code = (
            f"COPYUID {uidvalidity} {number_set(p[0] for p in pairs).decode()} "
            f"{number_set(p[1] for p in pairs).decode()}"
        )
    if not is_move:
        session.tagged(tag, "OK", "Copy completed.", code)
        return
    if code:
        # RFC 6851 §4.3: COPYUID in an untagged OK before the expunges.
        session.send(f"* OK [{code}] Moved UIDs.\r\n".encode())
    selected.note_gone(p[0] for p in pairs)
    await session.announce(allow_expunge=True)
    session.tagged(tag, "OK", "Move completed.")


async def expunge_command(session: ImapSession, tag: str, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Expunge)
    selected = selected_mailbox(session)
    if selected.read_only:
        raise Refusal("Mailbox is read-only", "READ-ONLY")
    within = None
    if command.uids is not None:
        within = resolve_uids(selected, command.uids, uid=True)
    mailbox_id = selected.mailbox_id

    def write(tx: Tx) -> list[int]:
        return tx.messages.expunge(mailbox_id, tx.messages.deleted_uids(mailbox_id, within))

    gone = await session.ctx.store.write(write)
    selected.note_gone(gone)
    await session.announce(allow_expunge=True, force=True)
    session.tagged(tag, "OK", "Expunge completed.")


# --- APPEND ------------------------------------------------------------------------------------


async def append(session: ImapSession, tag: str, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Append)
    name = session.decode_name(command.mailbox)
    streamed = list(session.streamed)
    session.streamed.clear()
    if all(isinstance(m.data, LiteralData) for m in command.messages):
        uidvalidity, uids = await _append_in_memory(session, name, command.messages)
    else:
        user_id = session.uid
        info = await session.ctx.store.read(lambda tx: tx.mailboxes.find(user_id, name))
        if info is None:
            raise Refusal("Mailbox doesn't exist: " + name, "TRYCREATE")
        # Streamed (large) messages go one by one, each in its own commit.
        uidvalidity, uids = info.uidvalidity, []
        try:
            for message in command.messages:
                if isinstance(message.data, LiteralData):
                    buffer = session.ctx.store.new_buffer(f"append-{id(session)}-{len(uids)}")
                    buffer.write(message.data.data)
                else:
                    if not streamed:
                        raise Refusal("Literal data missing", status="BAD")
                    buffer = streamed.pop(0)
                uids.append(await _append_one(session, info.id, buffer, message))
        finally:
            for buffer in streamed:  # those after a message that failed
                buffer.discard()
        if session.selected is not None and session.selected.mailbox_id == info.id:
            await session.announce(allow_expunge=False, force=True)
    code = f"APPENDUID {uidvalidity} {number_set(uids).decode()}"
    session.tagged(tag, "OK", "Append completed.", code)


class _Appended(NamedTuple):
    uidvalidity: int
    uids: list[int]
    news: MailboxNews | None  # of the selected mailbox
    blob_ids: list[int]


async def _append_in_memory(
    session: ImapSession, name: str, messages: Sequence[cmd.AppendMessage]
) -> tuple[int, list[int]]:
    """RFC 3502 §6.3.11: all the messages of one APPEND are added in one transaction, or none.

    One store round trip: the mailbox is looked up, the messages added, and, when it is the
    selected mailbox, what changed in it read back (with the new \\Recent). Their summaries
    (ENVELOPE, BODYSTRUCTURE, the header block) are made by the store's writer once it has
    nothing else to do (Store.write's `then`): off the answer's path, and out of the sync's
    way; readers that need one sooner make it themselves.
    """
    prepared: list[tuple[bytes, tuple[str, ...], float]] = []
    for message in messages:
        assert isinstance(message.data, LiteralData)
        if not message.data.data:
            raise Refusal("Can't save an empty message", status="NO")
        when = message.internal_date.timestamp() if message.internal_date else time.time()
        flags = tuple(f for f in message.flags if f != "\\Recent")
        prepared.append((message.data.data, flags, when))
    user_id, selected = session.uid, session.selected

    def write(tx: Tx) -> _Appended:
        info = tx.mailboxes.find(user_id, name)
        if info is None:
            raise MailboxError("TRYCREATE", "Mailbox doesn't exist: " + name)
        wanted = limits.keywords_of(f for _, flags, _ in prepared for f in flags)
        if wanted:
            limits.check_keywords(tx.messages.keywords(info.id), wanted)
        uids, blob_ids = [], []
        for data, flags, when in prepared:
            blob_id = tx.blobs.add(data)
            blob_ids.append(blob_id)
            uids.append(
                tx.messages.append(
                    info.id,
                    blob_id,
                    size=len(data),
                    internal_date=when,
                    flags=flags,
                )
            )
        news = None
        if selected is not None and selected.mailbox_id == info.id:
            after = None if selected.read_only else selected.max_uid
            news = tx.messages.news(info.id, selected.known_modseq, after)
        return _Appended(info.uidvalidity, uids, news, blob_ids)

    def summarise(tx: Tx, appended: _Appended) -> None:
        for blob_id in appended.blob_ids:
            tx.summaries.make(blob_id)

    appended = await session.ctx.store.write(write, then=summarise)
    news = appended.news
    if news is not None and selected is session.selected and selected is not None:
        selected.take_changes(news.changed, news.vanished, news.highestmodseq, news.recent_from)
        await session.announce(allow_expunge=False)
    return appended.uidvalidity, appended.uids


async def _append_one(
    session: ImapSession, mailbox_id: int, buffer: ContentBuffer, message: cmd.AppendMessage
) -> int:
    if buffer.size == 0:
        buffer.discard()
        raise Refusal("Can't save an empty message", status="NO")
    data = buffer.in_memory()
    # Large messages (on file) are summarised by the store when they enter the mailbox.
    summary = None if data is None else await asyncio.to_thread(summarise_packed, data)
    when = message.internal_date.timestamp() if message.internal_date else time.time()
    flags = tuple(f for f in message.flags if f != "\\Recent")
    size = buffer.size

    def then(tx: Tx, blob_id: int) -> int:
        if limits.keywords_of(flags):
            limits.check_keywords(tx.messages.keywords(mailbox_id), flags)
        if summary is not None:
            tx.summaries.put(blob_id, summary)
        return tx.messages.append(mailbox_id, blob_id, size=size, internal_date=when, flags=flags)

    return await session.ctx.store.write_content(buffer, then)


__all__ = [
    "MessageState",
    "append",
    "copy",
    "expunge_command",
    "fetch",
    "number_set",
    "resolve_uids",
    "selected_mailbox",
    "store",
]
