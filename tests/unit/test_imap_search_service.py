"""SEARCH through the whole service (narrowing, the session's view, store rows, kept header
texts, the store's subject index) finds what the naive evaluation of each key finds, the first
time and again once the header texts are kept, and also when they cannot be kept."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from imap_sessions import ALICE, Wire, alice_in_inbox, run_line

from postroom.proto.imap.grammar import parse_command
from postroom.proto.imap.grammar_commands import Search
from postroom.proto.imap.reader import CommandLine, CommandReader, NeedContinuation
from postroom.proto.imap.search import SearchMessage, matches
from postroom.services.imap.messages import selected_mailbox
from postroom.services.imap.search_texts import SearchTexts
from postroom.storage.api import Store, Tx

SENDERS = (
    b"From: Ann Golf <ann@example.test>",
    b'From: "Bob (report)" <bob @ example.test>',
    b"From: =?utf-8?q?Gr=C3=BC=C3=9Fe_Ann?= <gruss@example.test>",
    b"From: carol@example.test,\r\n dave@example.test",
)


def _message(i: int) -> bytes:
    subject = f"Report {i} golf" if i % 4 else f"=?utf-8?q?R=C3=A9port_{i}?="
    head = [
        b"Subject: " + subject.encode(),
        SENDERS[i % len(SENDERS)],
        b"Message-ID: <m.%d@example.test>" % i,
    ]
    if i % 3 == 0:
        head.append(b"X-Tag: alpha\r\n beta %d" % i)
    body = b"quokkas were here\r\n" if i % 5 == 0 else b"nothing to see\r\n"
    return b"\r\n".join(head) + b"\r\n\r\n" + body


QUERIES = (
    "ALL",
    'HEADER Subject "report 12"',
    "HEADER Subject report 7",
    "CHARSET UTF-8 SUBJECT {7}\r\nréport",
    'SUBJECT "report 99999"',
    "FROM ann",
    "FROM example.test",
    "CHARSET UTF-8 FROM {7}\r\ngrüsse",
    "FROM bob@example.test",
    'HEADER Message-ID "m.3@"',
    "HEADER X-Tag beta",
    'HEADER X-Tag ""',
    "NOT HEADER X-Tag alpha",
    "OR FROM carol SUBJECT golf",
    "UNSEEN FROM ann",
    "FLAGGED OR HEADER X-Tag 9 BODY quokkas",
    "2:7 NOT FLAGGED",
    "UID 3:5 SUBJECT golf",
    "LARGER 100 SMALLER 130 FROM example",
    "TEXT quokkas FROM ann",
    "NOT (SEEN OR SUBJECT golf LARGER 120)",
)


async def _setup(store: Store) -> tuple[Wire, object]:
    wire = Wire()
    session = await alice_in_inbox(store, wire)

    def add(tx: Tx) -> None:
        user = tx.accounts.get_user(ALICE)
        assert user is not None
        inbox = tx.mailboxes.require(user.id, "INBOX").id
        for i in range(1, 25):
            data = _message(i)
            blob = tx.blobs.add(data)
            tx.messages.append(inbox, blob, size=len(data), internal_date=1_700_000_000.0 + i)

    await store.write(add)
    await run_line(session, "c NOOP")
    await run_line(session, "d STORE 3:9 +FLAGS (\\Seen)")
    await run_line(session, "e STORE 5,8,20 +FLAGS (\\Flagged)")
    return wire, session


async def _naive(store: Store, session: object, query: str) -> list[int]:
    selected = selected_mailbox(session)  # type: ignore[arg-type]
    reader = CommandReader()
    reader.feed(f"x UID SEARCH {query}\r\n".encode())
    event = reader.next_event()
    while isinstance(event, NeedContinuation):
        reader.accept_literal()
        event = reader.next_event()
    assert isinstance(event, CommandLine)
    request = parse_command(event)
    assert isinstance(request.command, Search)
    key = request.command.key
    rows = await store.read(
        lambda tx: tx.messages.fetch_rows(
            selected.mailbox_id, selected.uids, summary=False, content=True
        )
    )
    found = []
    for seq, row in enumerate(rows, start=1):
        message = SearchMessage(
            seq,
            row.uid,
            selected.flags_of(row.uid),
            row.internal_date,
            row.size,
            row.modseq,
            row.content,
        )
        if matches(key, message, exists=selected.exists, max_uid=selected.max_uid):
            found.append(row.uid)
    return found


async def _search(wire: Wire, session: object, query: str) -> list[int]:
    wire.out = b""
    await run_line(session, f"s UID SEARCH {query}")  # type: ignore[arg-type]
    match = re.search(rb"\* SEARCH([ 0-9]*)\r\n", wire.out)
    assert match is not None, wire.out
    return [int(n) for n in match.group(1).split()]


@pytest.mark.parametrize("limit", [SearchTexts().limit, 0])
def test_search_finds_what_the_naive_evaluation_finds(store: Store, limit: int) -> None:
    async def scenario() -> None:
        wire, session = await _setup(store)
        session.ctx.search_texts = SearchTexts(limit)  # type: ignore[attr-defined]
        for _ in range(2):  # the second time, from the kept texts (unless limit is 0)
            for query in QUERIES:
                assert await _search(wire, session, query) == await _naive(store, session, query)

    asyncio.run(scenario())


def test_kept_texts_are_bounded_least_recently_searched_first(store: Store) -> None:
    async def scenario() -> None:
        _, session = await _setup(store)
        selected = selected_mailbox(session)  # type: ignore[arg-type]
        mailbox = (selected.mailbox_id, selected.uidvalidity)
        texts = SearchTexts()

        async def read(field: str) -> dict[int, tuple[str, ...]]:
            return await store.read(lambda tx: texts.texts(tx, mailbox, field, selected.uids))

        assert (await read("subject"))[selected.uids[3]] == ("report 2 golf",)
        one_table = texts._total
        texts.limit = 2 * one_table + one_table // 2
        await read("from")
        await read("subject")  # used again: now the most recent
        await read("message-id")  # over the bound: "from" goes
        assert set(texts._tables) == {(*mailbox, "subject"), (*mailbox, "message-id")}
        texts.limit = one_table // 2
        kept_before = dict(texts._tables)
        assert (await read("x-tag"))[selected.uids[4]] == ("alpha beta 3",)  # not kept
        assert (*mailbox, "x-tag") not in texts._tables
        assert texts._total <= one_table * 2 and set(texts._tables) <= set(kept_before)

    asyncio.run(scenario())


def test_a_narrowed_search_of_kept_texts_needs_no_store_round_trip(store: Store) -> None:
    async def scenario() -> None:
        wire, session = await _setup(store)
        reads = 0
        read = store.read

        async def counted(fn: Any) -> Any:
            nonlocal reads
            reads += 1
            return await read(fn)

        store.read = counted  # type: ignore[method-assign]
        first = await _search(wire, session, "HEADER Subject report 7")
        assert reads == 1  # the texts of message 7 are read, and kept
        assert await _search(wire, session, "HEADER Subject report 7") == first
        assert reads == 1

    asyncio.run(scenario())
