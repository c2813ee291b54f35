"""Several PostgreSQL stores on one database hear each other (storage/postgresql/notify.py),
against a real server (tests/storage/postgres_server.py): a commit that changed a mailbox on
one store reaches the other's `on_mailbox_change` with its HIGHESTMODSEQ (and its own store's
only once, from its writer); a rolled-back change is never announced; a CLI command's signal
(PgDirect) and a serving store's move every store's `signals.version`; and a listener that
lost its connection to a restarted PostgreSQL says so (`on_missed`) and hears again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from postroom.storage.postgresql.connection import PgTx
from postroom.storage.postgresql.store import PgDirect, PgStore

from .postgres_server import PASSWORD, PostgresServer

HEARD_WITHIN = 2.0  # seconds (the issue asks for one; a loaded test machine gets some slack)

Changes = dict[int, int | None]


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    database = postgres_server.new_database()
    try:
        yield postgres_server.dsn(database)
    finally:
        postgres_server.drop_database(database)


class Node:
    """A serving store (opened on the running loop, so it listens) and what it heard."""

    def __init__(self, dsn: str, data_dir: Path) -> None:
        self.store = PgStore(dsn, data_dir, password=PASSWORD)
        self.heard: list[Changes] = []
        self.missed = 0
        self.store.on_mailbox_change = self.heard.append
        self.store.on_missed = self._missed

    def _missed(self) -> None:
        self.missed += 1

    async def open(self) -> None:
        self.store.open()
        listener = self.store.listener
        assert listener is not None
        assert await asyncio.to_thread(listener.connected.wait, 30)

    def modseqs(self, mailbox: int) -> list[int | None]:
        return [changes[mailbox] for changes in self.heard if mailbox in changes]


async def eventually(condition: Callable[[], object], what: str, timeout: float) -> float:
    """Seconds until `condition` holds (the loop runs meanwhile); fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def _inbox(tx: PgTx) -> int:
    user = tx.accounts.add_user("notify@example.test", "h", "s")
    return tx.mailboxes.require(user, "INBOX").id


def _appender(inbox: int) -> Callable[[PgTx], int]:
    def append(tx: PgTx) -> int:
        blob = tx.blobs.add(b"Subject: n\r\n\r\nbody\r\n")
        tx.messages.append(inbox, blob, size=20, internal_date=1.0)
        highest = tx.conn.execute("SELECT highestmodseq FROM mailboxes WHERE id = %s", (inbox,))
        row = highest.fetchone()
        assert row is not None
        return int(row[0])

    return append


def run_nodes(dsn: str, tmp_path: Path, body: Callable[[Node, Node], Awaitable[None]]) -> None:
    async def main() -> None:
        a, b = Node(dsn, tmp_path / "a"), Node(dsn, tmp_path / "b")
        try:
            await a.open()
            await b.open()
            await body(a, b)
        finally:
            a.store.close()
            b.store.close()

    asyncio.run(main())


def test_a_commit_on_one_node_reaches_the_other_once(dsn: str, tmp_path: Path) -> None:
    async def body(a: Node, b: Node) -> None:
        inbox = await a.store.write(_inbox)
        modseq = await a.store.write(_appender(inbox))
        took = await eventually(
            lambda: modseq in b.modseqs(inbox), "node B hears of A's append", HEARD_WITHIN
        )
        assert took < HEARD_WITHIN
        later = await b.store.write(_appender(inbox))  # B's commit: A hears of it
        await eventually(lambda: later in a.modseqs(inbox), "node A hears of B's", HEARD_WITHIN)
        # A told its own sessions from its writer, and skipped its own NOTIFY: once each.
        assert a.modseqs(inbox) == [modseq, later]
        assert b.modseqs(inbox) == [modseq, later]

    run_nodes(dsn, tmp_path, body)


def test_a_rolled_back_change_is_not_announced(dsn: str, tmp_path: Path) -> None:
    async def body(a: Node, b: Node) -> None:
        inbox = await a.store.write(_inbox)
        append = _appender(inbox)
        first = await a.store.write(append)
        await eventually(lambda: b.modseqs(inbox) == [first], "B hears the first", HEARD_WITHIN)
        before = len(b.heard)

        def fails(tx: PgTx) -> None:
            append(tx)
            raise RuntimeError("undo")

        with pytest.raises(RuntimeError):
            await a.store.write(fails)
        done = await a.store.write(append)  # a later commit: announced, and after the first
        await eventually(lambda: done in b.modseqs(inbox), "B hears the next", HEARD_WITHIN)
        assert [c for c in b.heard[before:] if inbox in c] == [{inbox: done}]

    run_nodes(dsn, tmp_path, body)


def test_signals_reach_every_node(dsn: str, tmp_path: Path) -> None:
    async def body(a: Node, b: Node) -> None:
        before = (a.store.signals.version("accounts"), b.store.signals.version("accounts"))
        (tmp_path / "cli").mkdir()
        cli = PgDirect(dsn, tmp_path / "cli", password=PASSWORD)  # its own data_dir
        try:
            cli.signals.mark("accounts")
        finally:
            cli.close()
        await eventually(
            lambda: (
                a.store.signals.version("accounts") != before[0]
                and b.store.signals.version("accounts") != before[1]
            ),
            "both nodes hear the CLI's accounts signal",
            HEARD_WITHIN,
        )
        queue_a = a.store.signals.version("queue")
        b.store.signals.mark("queue")  # B's own: its stamp file, and a NOTIFY for A
        await eventually(
            lambda: a.store.signals.version("queue") != queue_a, "A hears B's", HEARD_WITHIN
        )
        # `announce`: the other nodes only (a block B made; B knows of it already).
        blocks = (a.store.signals.version("blocks"), b.store.signals.version("blocks"))
        b.store.signals.announce("blocks")
        await eventually(
            lambda: a.store.signals.version("blocks") != blocks[0], "A hears it", HEARD_WITHIN
        )
        assert b.store.signals.version("blocks") == blocks[1]

    run_nodes(dsn, tmp_path, body)


def test_the_listener_outlives_a_restart_of_postgresql(tmp_path: Path) -> None:
    server = PostgresServer()  # its own: this one is restarted
    try:
        server.start()
        dsn = server.dsn(server.new_database())

        async def body(a: Node, b: Node) -> None:
            inbox = await a.store.write(_inbox)
            await a.store.write(_appender(inbox))
            await eventually(lambda: b.modseqs(inbox), "B hears before", HEARD_WITHIN)
            await asyncio.to_thread(server.halt)
            await asyncio.to_thread(server.resume)
            await eventually(lambda: b.missed == 1, "B's listener reconnects", 30)
            deadline = time.monotonic() + 30
            while True:  # the writer's pool finds its connections broken, then new ones
                try:
                    modseq = await a.store.write(_appender(inbox))
                    break
                except Exception:
                    assert time.monotonic() < deadline, "A cannot write after the restart"
                    await asyncio.sleep(0.1)
            await eventually(lambda: modseq in b.modseqs(inbox), "B hears after", HEARD_WITHIN)

        run_nodes(dsn, tmp_path, body)
    finally:
        server.stop()
