"""IMAP work answered before the store has written it (a real store, a session driven command
by command): a flag change's answer does not wait for the writer, the next command that reads
does, and a change that cannot be written is told back to the client; an APPEND's summaries,
written behind its answer, are already what the next commands see. FETCH of flags alone is
answered from the session's view, without reading the store, and a long answer of flags goes
out in pieces while it is made."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from imap_sessions import ALICE, Wire, alice_in_inbox, run_line

from postroom.services.imap import messages
from postroom.services.imap import session as session_module
from postroom.services.imap.session import ImapSession
from postroom.services.mailbox_events import MailboxEvents
from postroom.storage.api import Store, Tx
from postroom.storage.records import FlagWrite
from postroom.storage.sqlite import store as store_module
from postroom.storage.sqlite.connection import SqliteTx
from postroom.storage.sqlite.messages import SqliteMessages
from postroom.storage.sqlite.store import SqliteStore


def _sql(tx: Tx) -> SqliteTx:
    """These tests run on the SQLite store and look into it."""
    return cast(SqliteTx, tx)


def test_answered_at_once_and_read_back_by_the_next_command(store: Store) -> None:
    events = MailboxEvents()
    store.on_mailbox_change = events.publish

    async def scenario() -> tuple[bytes, bool, bytes]:
        wire = Wire()
        session = await alice_in_inbox(store, wire, events)
        # The writer is kept busy until the STORE has been answered.
        started, release = threading.Event(), threading.Event()

        def hold(tx: Tx) -> None:
            started.set()
            release.wait(30)

        busy = asyncio.ensure_future(store.write(hold, durable=False))
        assert await asyncio.to_thread(started.wait, 30)
        wire.out = b""
        await asyncio.wait_for(run_line(session, "c STORE 1 +FLAGS (\\Seen)"), 10)
        answered, writer_still_busy = wire.out, not busy.done()
        release.set()
        wire.out = b""
        await run_line(session, "d STATUS INBOX (UNSEEN)")
        await busy
        return answered, writer_still_busy, wire.out

    answered, writer_still_busy, status = asyncio.run(scenario())
    assert b"* 1 FETCH (FLAGS (\\Seen \\Recent))" in answered and b"c OK" in answered
    assert writer_still_busy  # answered without waiting for the writer
    assert b"* STATUS INBOX (UNSEEN 1)" in status  # read after the change was written


def test_a_change_the_store_refuses_is_told_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> bytes:
        wire = Wire()
        session = await alice_in_inbox(store, wire)

        def broken(*args: object, **kwargs: object) -> FlagWrite:
            raise OSError("disk gone")

        monkeypatch.setattr(SqliteMessages, "write_flag_change", broken)
        await run_line(session, "c STORE 2 +FLAGS (\\Flagged)")
        await run_line(session, "d NOOP")
        return wire.out

    out = asyncio.run(scenario())
    told = out[out.index(b"c OK") :]
    assert b"* 2 FETCH (FLAGS (\\Flagged \\Recent))" in out  # answered first
    assert b"* 2 FETCH (FLAGS (\\Recent))" in told  # then told it did not happen


class BrokenWire(Wire):
    """A connection whose writes fail from some point on (the client has gone)."""

    broken = False

    async def write(self, data: bytes) -> None:
        if self.broken:
            raise ConnectionResetError("client gone")
        await super().write(data)


@pytest.fixture
def store_held_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """An open store, with sessions' answered flag changes written only when flushed."""
    monkeypatch.setattr(session_module, "DEFERRED_WRITE_DELAY", 60.0)
    store = SqliteStore(tmp_path)
    store.open()
    try:
        yield store
    finally:
        store.close()


def test_the_session_s_flag_changes_of_one_kind_are_one_write_in_order(
    store_held_back: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_held_back

    async def scenario() -> tuple[list[dict[int, tuple[str, ...]]], bytes, list[str]]:
        wire = Wire()
        session = await alice_in_inbox(store, wire)
        writes: list[dict[int, tuple[str, ...]]] = []
        write = SqliteMessages.write_flag_change

        def watch(
            messages: SqliteMessages,
            mailbox_id: int,
            before: dict[int, tuple[str, ...]],
            *args: object,
        ) -> FlagWrite:
            writes.append(dict(before))
            return write(messages, mailbox_id, before, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(SqliteMessages, "write_flag_change", watch)
        await run_line(session, "c STORE 1 +FLAGS (\\Flagged)")
        await run_line(session, "d STORE 2 +FLAGS (\\Flagged)")
        await run_line(session, "e STORE 1 -FLAGS (\\Flagged)")  # another kind: the first goes
        wire.out = b""
        await run_line(session, "f FETCH 1:2 (FLAGS)")  # FETCH answers from the view
        await run_line(session, "g STATUS INBOX (MESSAGES)")  # a read: the second goes first
        flags = await store.read(
            lambda tx: [
                r[0]
                for r in _sql(tx).conn.execute("SELECT flags FROM mailbox_messages ORDER BY uid")
            ]
        )
        return writes, wire.out, flags

    writes, out, flags = asyncio.run(scenario())
    assert [sorted(w) for w in writes] == [[1, 2], [1]]
    assert writes[1][1] == ("\\Flagged",)  # what message 1 had after the first write
    assert (
        b"* 1 FETCH (FLAGS (\\Recent))" in out and b"* 2 FETCH (FLAGS (\\Flagged \\Recent))" in out
    )
    assert flags == ["", "\\Flagged"]


def test_another_session_reads_a_change_held_back_for_its_batch(store_held_back: Store) -> None:
    store = store_held_back

    async def scenario() -> tuple[bytes, bytes]:
        wire, other_wire = Wire(), Wire()
        session = await alice_in_inbox(store, wire)
        other = ImapSession(session.ctx, other_wire, tls_active=True)
        await run_line(other, f"a LOGIN {ALICE} pw")
        await run_line(session, "c STORE 1 +FLAGS (\\Flagged)")
        await run_line(session, "d FETCH 2 BODY[TEXT]")  # sets \\Seen: held back too
        other_wire.out = b""
        await run_line(other, "b STATUS INBOX (UNSEEN)")
        status = other_wire.out
        other_wire.out = b""
        await run_line(other, "c EXAMINE INBOX")
        await run_line(other, "d FETCH 1:2 (FLAGS)")
        return status, other_wire.out

    status, fetched = asyncio.run(scenario())
    assert b"* STATUS INBOX (UNSEEN 1)" in status
    assert b"* 1 FETCH (FLAGS (\\Flagged))" in fetched
    assert b"* 2 FETCH (FLAGS (\\Seen))" in fetched


def test_a_fetch_of_flags_is_answered_from_the_view_without_reading_the_store(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[object] = []
    read = store.read

    async def counted(fn: Callable[[Tx], object]) -> object:
        reads.append(fn)
        return await read(fn)

    async def scenario() -> list[bytes]:
        wire = Wire()
        session = await alice_in_inbox(store, wire)
        await run_line(session, "c STORE 2 +FLAGS (\\Flagged)")
        monkeypatch.setattr(store, "read", counted)
        answers = []
        for line in ("d FETCH 1:* FLAGS", "e UID FETCH 2 FLAGS", "f FETCH 2 (FLAGS UID)"):
            wire.out = b""
            await run_line(session, line)
            answers.append(wire.out)
        session.close()
        return answers

    answers = asyncio.run(scenario())
    assert answers == [
        b"* 1 FETCH (FLAGS (\\Recent))\r\n* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
        b"d OK Fetch completed.\r\n",
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))\r\ne OK Fetch completed.\r\n",
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2)\r\nf OK Fetch completed.\r\n",
    ]
    assert reads == []


def test_a_fetch_of_flags_of_a_message_expunged_elsewhere_reads_the_store(store: Store) -> None:
    events = MailboxEvents()
    store.on_mailbox_change = events.publish

    async def scenario() -> tuple[bytes, bytes]:
        wire, other_wire = Wire(), Wire()
        session = await alice_in_inbox(store, wire, events)
        other = ImapSession(session.ctx, other_wire, tls_active=True)
        await run_line(other, f"a LOGIN {ALICE} pw")
        await run_line(other, "b SELECT INBOX")
        await run_line(other, "c STORE 1 +FLAGS (\\Deleted)")
        await run_line(other, "d EXPUNGE")
        wire.out = b""
        await run_line(session, "c FETCH 1:* FLAGS")  # RFC 3501 §7.4.1: no EXPUNGE during FETCH
        fetched = wire.out
        wire.out = b""
        await run_line(session, "d NOOP")
        return fetched, wire.out

    fetched, after = asyncio.run(scenario())
    assert fetched == (
        b"* 2 FETCH (FLAGS (\\Recent))\r\nc NO [EXPUNGEISSUED] Some messages were expunged\r\n"
    )
    assert after == b"* 1 EXPUNGE\r\nd OK NOOP completed.\r\n"


def test_a_long_flags_answer_goes_out_in_pieces_as_it_is_made(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "ANSWER_CHUNK", 1)  # two messages: two pieces

    async def scenario() -> list[bytes]:
        wire = Wire()
        session = await alice_in_inbox(store, wire)
        writes: list[bytes] = []
        write = wire.write

        async def kept(data: bytes) -> None:
            writes.append(data)
            await write(data)

        wire.write = kept  # type: ignore[method-assign]
        await run_line(session, "c STORE 1:2 +FLAGS (\\Flagged)")
        await run_line(session, "d FETCH 1:2 FLAGS")
        session.close()
        return writes

    writes = asyncio.run(scenario())
    flagged = b"FLAGS (\\Flagged \\Recent))\r\n"
    assert writes == [
        b"* 1 FETCH (" + flagged,
        b"* 2 FETCH (" + flagged + b"c OK Store completed.\r\n",
        b"* 1 FETCH (" + flagged,
        b"* 2 FETCH (" + flagged + b"d OK Fetch completed.\r\n",
    ]


def test_the_write_goes_to_the_store_after_the_answer_even_if_sending_fails(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> tuple[list[int], str]:
        wire = BrokenWire()
        session = await alice_in_inbox(store, wire)
        answered_before_write: list[int] = []
        submit = store.submit_early

        def watch(*args: object, **kwargs: object) -> object:
            answered_before_write.append(wire.out.count(b"OK Store completed"))
            return submit(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "submit_early", watch)
        await run_line(session, "c STORE 1 +FLAGS ($First)")
        wire.broken = True
        with pytest.raises(ConnectionResetError):
            await run_line(session, "d STORE 2 +FLAGS ($Second)")
        session.close()
        await session.settle_pending()
        flags = await store.read(
            lambda tx: [r[0] for r in _sql(tx).conn.execute("SELECT flags FROM mailbox_messages")]
        )
        return answered_before_write, " ".join(sorted(flags))

    answered_before_write, flags = asyncio.run(scenario())
    # The first write went to the store with the next STORE (another kind), after its own
    # answer; the second at close, though its answer could not be sent.
    assert answered_before_write == [1, 1]
    assert flags == "$First $Second"  # the second is written though its answer was not sent


def test_the_next_commands_see_an_appended_message_whose_summary_is_not_written_yet(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "DERIVED_IDLE", 60.0)  # summaries wait for an idle writer
    message = (
        "From: Ann <ann@example.test>\r\nSubject: Zebra crossing\r\n"
        "Message-ID: <z@example.test>\r\n\r\nStripes.\r\n"
    )

    async def scenario() -> tuple[bytes, int]:
        wire = Wire()
        session = await alice_in_inbox(store, wire)
        await run_line(session, f"c APPEND INBOX {{{len(message)}+}}\r\n{message}")
        wire.out = b""
        await run_line(session, "d UID FETCH 3 (ENVELOPE)")
        await run_line(session, "e UID SEARCH HEADER Subject zebra")
        await run_line(session, "f UID SORT (SUBJECT) UTF-8 ALL")
        stored = await store.read(
            lambda tx: int(
                _sql(tx).conn.execute("SELECT count(*) FROM blob_summaries").fetchone()[0]
            )
        )
        return wire.out, stored

    out, stored = asyncio.run(scenario())
    # None written: mail entering a mailbox gets none, and the ones these readers made are kept
    # only once the writer is idle (here: after a minute).
    assert stored == 0
    assert b'ENVELOPE (NIL "Zebra crossing" (("Ann" NIL "ann" "example.test"))' in out
    assert b"* SEARCH 3\r\n" in out
    assert b"* SORT 1 2 3\r\n" in out  # (no subject) sorts before "zebra crossing"
