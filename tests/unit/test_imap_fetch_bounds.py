"""A FETCH cannot make a session's memory grow with what it asks for: an item asked for twice is
answered once, a message's answer goes out piece by piece (never built whole), and contents are
read from the store a few octets at a time (messages.CONTENT_BUDGET). A real store, a session
driven command by command, a wire that counts instead of keeping."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest
from imap_sessions import ALICE, Wire, alice_in_inbox, run_line

from postroom.services.imap import messages
from postroom.storage.api import Store, Tx

MIB = 1024 * 1024


class CountingWire(Wire):
    """Keeps the replies' text, counts the octets of literals, and the largest single write."""

    def __init__(self) -> None:
        super().__init__()
        self.octets = 0
        self.largest_write = 0

    async def write(self, data: bytes) -> None:
        self.octets += len(data)
        self.largest_write = max(self.largest_write, len(data))
        self.out += re.sub(rb"x{64,}", b"", data)  # the filler itself is not kept


def big_message(size: int) -> bytes:
    head = b"Subject: big\r\n\r\n"
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


async def append_big(store: Store, count: int, size: int) -> None:
    def job(tx: Tx) -> None:
        user = tx.accounts.get_user(ALICE)
        assert user is not None
        inbox = tx.mailboxes.require(user.id, "INBOX").id
        for _ in range(count):
            blob = tx.blobs.add(big_message(size))
            tx.messages.append(inbox, blob, size=size, internal_date=1.7e9)

    await store.write(job)


def test_an_item_asked_for_many_times_is_answered_once(store: Store) -> None:
    async def scenario() -> CountingWire:
        wire = CountingWire()
        session = await alice_in_inbox(store, wire)
        await append_big(store, 1, MIB)
        await run_line(session, "c NOOP")
        wire.out, wire.octets, wire.largest_write = b"", 0, 0
        await run_line(session, "d FETCH 3 (" + " ".join(["BODY.PEEK[]"] * 200) + ")")
        return wire

    wire = asyncio.run(scenario())
    assert wire.out.count(b"BODY[] {%d}" % MIB) == 1
    assert wire.out.endswith(b"d OK Fetch completed.\r\n")
    assert wire.octets < 1.1 * MIB


def test_a_long_answer_goes_out_in_pieces(store: Store) -> None:
    async def scenario() -> CountingWire:
        wire = CountingWire()
        session = await alice_in_inbox(store, wire)
        await append_big(store, 1, MIB)
        await run_line(session, "c NOOP")
        wire.out, wire.octets, wire.largest_write = b"", 0, 0
        parts = " ".join(f"BODY.PEEK[]<{n}.{MIB}>" for n in range(40))
        await run_line(session, f"d FETCH 3 ({parts})")
        return wire

    wire = asyncio.run(scenario())
    assert wire.out.count(b"BODY[]<") == 40 and wire.out.endswith(b"d OK Fetch completed.\r\n")
    assert wire.octets > 39 * MIB  # all of it was sent...
    assert wire.largest_write < 2 * MIB  # ...in pieces of about one item


def test_contents_are_read_a_budget_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "CONTENT_BUDGET", 2 * MIB)
    reads: list[object] = []

    async def scenario() -> CountingWire:
        wire = CountingWire()
        session = await alice_in_inbox(store, wire)
        await append_big(store, 5, MIB)
        await run_line(session, "c NOOP")
        read = store.read

        async def counted(fn: Callable[[Tx], object]) -> object:
            reads.append(fn)
            return await read(fn)

        monkeypatch.setattr(store, "read", counted)
        wire.out = b""
        await run_line(session, "d FETCH 1:* (UID BODY.PEEK[])")
        return wire

    wire = asyncio.run(scenario())
    assert [int(n) for n in re.findall(rb"UID (\d+)", wire.out)] == [1, 2, 3, 4, 5, 6, 7]
    assert wire.out.endswith(b"d OK Fetch completed.\r\n")
    assert len(reads) == 3  # the two small ones with one big one, then the big ones two by two
