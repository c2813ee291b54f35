"""Several nodes on one database hear each other: PostgreSQL LISTEN/NOTIFY.

Two channels. On MAILBOXES the store's writer announces, inside the transaction of a group
commit that changed mailboxes (so only committed changes are heard: NOTIFY is delivered at
COMMIT, and never after a ROLLBACK), each mailbox id with its HIGHESTMODSEQ, `-` for a mailbox
that is gone. On SIGNALS a node, or a CLI command, announces what `storage/signals.py` stamps:
accounts, queue, limits, blocks or DKIM keys changed (a node announces a change
only after the transaction that made it committed).

Every payload starts with the sender's origin (a random token per process) so a node skips what
it sent itself: its writer has already told its own sessions, and its own marks have already
touched its stamp files. A payload is kept under PAYLOAD_MAX bytes (PostgreSQL refuses one of
8000 or more): the changes of a large commit are split into several.

`Listener` is one thread per serving node with a connection of its own: LISTEN on both
channels, then psycopg's `notifies()` a short while at a time, sending the node's own signals
between; when the database goes away it reconnects with backoff, and since whatever was
announced meanwhile is lost, it then tells the node to look at everything again (`on_missed`).
Announcing a change twice is harmless: sessions only learn *that* a mailbox changed and read
what changed since the MODSEQ they know (services/mailbox_events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from postroom.storage.api import Signal
from postroom.storage.signals import FileSignals

log = logging.getLogger("postroom.store")

MAILBOXES = "postroom_mailboxes"
SIGNALS = "postroom_signals"
PAYLOAD_MAX = 7900  # bytes; PostgreSQL's limit is 8000 (its default build)
POLL = 0.25  # seconds between looks at the node's own signals to send, and at stop
BACKOFF_MAX = 5.0  # seconds between attempts to reconnect
SIGNAL_NAMES: tuple[Signal, ...] = ("accounts", "queue", "limits", "blocks", "dkim")

Changes = dict[int, int | None]


def new_origin() -> str:
    """A token naming this process in what it announces."""
    return secrets.token_hex(8)


def encode_changes(origin: str, changes: Changes) -> list[str]:
    """Payloads announcing `changes` (mailbox id → HIGHESTMODSEQ, None: gone), each shorter
    than PAYLOAD_MAX bytes: `origin id:modseq id:modseq ...`."""
    payloads: list[str] = []
    items: list[str] = []
    size = len(origin)
    for mailbox, modseq in sorted(changes.items()):
        item = f"{mailbox}:{'-' if modseq is None else modseq}"
        if items and size + 1 + len(item) >= PAYLOAD_MAX:
            payloads.append(" ".join([origin, *items]))
            items, size = [], len(origin)
        items.append(item)
        size += 1 + len(item)
    if items:
        payloads.append(" ".join([origin, *items]))
    return payloads


def decode_changes(payload: str) -> tuple[str, Changes]:
    """(origin, changes) from a payload of `encode_changes`; ValueError when it is not one."""
    origin, *items = payload.split(" ")
    if not origin or not items:
        raise ValueError(f"not a mailbox announcement: {payload[:80]!r}")
    changes: Changes = {}
    for item in items:
        mailbox, sep, modseq = item.partition(":")
        if not sep:
            raise ValueError(f"not a mailbox announcement: {item[:80]!r}")
        changes[int(mailbox)] = None if modseq == "-" else int(modseq)
    return origin, changes


def encode_signal(origin: str, what: Signal) -> str:
    return f"{origin} {what}"


def decode_signal(payload: str) -> tuple[str, Signal]:
    """(origin, signal); ValueError when the payload is not a signal's."""
    origin, _, what = payload.partition(" ")
    for name in SIGNAL_NAMES:
        if what == name and origin:
            return origin, name
    raise ValueError(f"not a signal: {payload[:80]!r}")


def announce_changes(conn: psycopg.Connection[Any], origin: str, changes: Changes) -> None:
    """NOTIFY `changes` on MAILBOXES (in the caller's transaction)."""
    for payload in encode_changes(origin, changes):
        conn.execute("SELECT pg_notify(%s, %s)", (MAILBOXES, payload))


def announce_signal(conn: psycopg.Connection[Any], origin: str, what: Signal) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (SIGNALS, encode_signal(origin, what)))


class PgSignals:
    """The stamp files of `FileSignals`, and the same signals heard from other nodes: a
    version moves when either does. `send` announces a mark to the other nodes."""

    def __init__(self, data_dir: Path, origin: str, send: Callable[[Signal], None]) -> None:
        self.origin = origin
        self._files = FileSignals(data_dir)
        self._send = send
        self._heard: dict[Signal, int] = dict.fromkeys(SIGNAL_NAMES, 0)

    def mark(self, what: Signal) -> None:
        self._send(what)
        self._files.mark(what)

    def announce(self, what: Signal) -> None:
        """Tell the other nodes only: this process knows already."""
        self._send(what)

    def heard(self, what: Signal) -> None:
        """Another node (or a CLI command) marked `what` (called by the listener's thread)."""
        self._heard[what] += 1

    def version(self, what: Signal) -> int:
        return self._files.version(what) + self._heard[what]


class Listener:
    """The node's listening connection, on a thread of its own (see the module's docstring)."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        where: str,
        signals: PgSignals,
        loop: asyncio.AbstractEventLoop,
        on_changes: Callable[[], Callable[[Changes], None] | None],
        on_missed: Callable[[], Callable[[], None] | None],
    ) -> None:
        self._connect = connect
        self._where = where
        self._signals = signals
        self._loop = loop
        self._on_changes = on_changes
        self._on_missed = on_missed
        self._outgoing: queue.SimpleQueue[Signal] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-listen", daemon=True)
        self.connected = threading.Event()  # set while listening (the tests wait for it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def send(self, what: Signal) -> None:
        """Announce a signal of this node's (sent by the listener's thread, soon)."""
        self._outgoing.put(what)

    def _run(self) -> None:
        pause = 0.0
        first = True
        while not self._stop.wait(pause):
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {MAILBOXES}")
                    conn.execute(f"LISTEN {SIGNALS}")
                    self.connected.set()
                    if not first:  # announcements made while we were away are lost
                        log.info("listening to %s again", self._where)
                        self._call(self._on_missed())
                        for what in SIGNAL_NAMES:
                            self._signals.heard(what)
                    first, pause = False, 0.0
                    self._listen(conn)
            except psycopg.Error as error:
                self.connected.clear()
                pause = min(max(pause * 2, 0.5), BACKOFF_MAX)
                log.warning(
                    "not listening to %s (%s); trying again in %g s", self._where, error, pause
                )
                first = False

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            self._send_pending(conn)
            for note in conn.notifies(timeout=POLL):
                self._heard(note.channel, note.payload)

    def _send_pending(self, conn: psycopg.Connection[Any]) -> None:
        """The node's own signals; one the database did not take waits for the next try."""
        with contextlib.suppress(queue.Empty):
            while True:
                what = self._outgoing.get_nowait()
                try:
                    announce_signal(conn, self._signals.origin, what)
                except psycopg.Error:
                    self._outgoing.put(what)
                    raise

    def _heard(self, channel: str, payload: str) -> None:
        try:
            if channel == SIGNALS:
                origin, what = decode_signal(payload)
                if origin != self._signals.origin:
                    self._signals.heard(what)
                return
            origin, changes = decode_changes(payload)
        except ValueError as error:
            log.warning("ignored a notification on %s: %s", channel, error)
            return
        if origin != self._signals.origin:
            callback = self._on_changes()
            if callback is not None:
                self._call(callback, changes)

    def _call(self, callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(callback, *args)
