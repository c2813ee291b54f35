"""The dashboard's hourly counts (services/activity.py) on a real store with a chosen clock:
what the cache shows is what a full read of the window shows, as mail arrives, is delivered,
fails and leaves the queue, across an hour's end and its grace; the settled hours are read
once per boundary, again when it moves or [queue] give_up_after changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from postroom.model.queue import Envelope, QueuedMessage, Recipient, RecipientState, new_queue_id
from postroom.proto.smtp.params import MailParams
from postroom.services.activity import GRACE, ActivityCache, HourlyActivity, read_all
from postroom.storage.api import Store, Tx
from postroom.storage.records import HistoryEvent

T = TypeVar("T")
HOUR = 3600
DAY = 86400.0
H0 = 527_778 * HOUR  # an hour's start (1,900,000,800)
GIVE_UP = 5 * DAY
DELIVERED, FAILED = RecipientState.DELIVERED, RecipientState.FAILED


def write(store: Store, fn: Callable[[Tx], T]) -> T:
    return asyncio.run(store.write(fn))


class Mail:
    """Messages written the way the spool and the scheduler write them, at chosen times."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queued: dict[str, QueuedMessage] = {}

    def arrive(self, arrival: float, *, local_now: bool = False) -> str:
        """A message for one remote recipient (queued) or one local one delivered at once."""
        envelope = Envelope("a@example.test", MailParams(), "192.0.2.1", "h", "ESMTP")
        envelope.arrival = arrival
        rcpt = (
            Recipient("bob@example.test", "bob@example.test", 1, state=DELIVERED)
            if local_now
            else Recipient("carol@remote.test", "carol@remote.test", None)
        )
        message = QueuedMessage(new_queue_id(arrival), envelope, b"", 0, 10, [rcpt])

        def job(tx: Tx) -> None:
            message.blob_id = tx.blobs.add(b"Subject: x\r\n\r\nx\r\n")
            settled = [HistoryEvent(message.id, arrival, rcpt.address, "delivered", "250 local")]
            tx.history.arrived(message, settled if local_now else ())
            if not local_now:
                tx.queue.enqueue(message)

        write(self.store, job)
        if not local_now:
            self.queued[message.id] = message
        return message.id

    def attempt(self, message_id: str, moment: float, state: RecipientState) -> None:
        """A remote attempt's outcome; a delivered or failed recipient ends the entry."""
        message = self.queued[message_id]
        [rcpt] = message.recipients

        def job(tx: Tx) -> None:
            event = "delivered" if state is DELIVERED else str(state)
            relay = None if state is FAILED else "mx.remote.test"
            tx.history.record(
                HistoryEvent(message_id, moment, rcpt.address, event, f"{event} reply", relay)
            )
            rcpt.state = state
            tx.queue.update_recipient(rcpt)
            tx.queue.finish_if_done(message_id, (DELIVERED, FAILED))

        write(self.store, job)
        if state in (DELIVERED, FAILED):
            del self.queued[message_id]


def both(store: Store, cache: ActivityCache, now: float) -> tuple[HourlyActivity, HourlyActivity]:
    """The cache's figures and a full read's, from one transaction."""

    def read(tx: Tx) -> tuple[HourlyActivity, HourlyActivity]:
        return cache.read(tx, now, GIVE_UP), read_all(tx, now, GIVE_UP)

    return asyncio.run(store.read(read))


def test_cached_figures_are_a_full_reads_as_mail_comes_and_goes(store: Store) -> None:
    mail, cache = Mail(store), ActivityCache()
    waiting = mail.arrive(H0 - 30 * HOUR)  # before the window, deferred for days
    mail.attempt(waiting, H0 - 29 * HOUR, RecipientState.DEFERRED)
    stuck = mail.arrive(H0 - 40 * HOUR)
    mail.arrive(H0 - 3 * HOUR, local_now=True)
    early = mail.arrive(H0 - 23 * HOUR + 60)
    mail.attempt(early, H0 - 23 * HOUR + 600, FAILED)  # the window's first hour, for now
    bounced = mail.arrive(H0 - 2 * HOUR)
    mail.attempt(bounced, H0 - HOUR + 10, FAILED)
    recent = mail.arrive(H0 + 300)

    def check(now: float, refreshes: int) -> HourlyActivity:
        cached, full = both(store, cache, now)
        assert cached == full
        assert cache.refreshes == refreshes
        return cached

    first = check(H0 + 1200, 1)
    assert sum(h.received for h in first.hours) == 4 and len(first.failures) == 2
    assert sum(h.failed for h in first.hours) == 2
    check(H0 + 1300, 1)  # nothing new: the settled hours are not read again

    # The one deferred from before the window is delivered, the recent one fails, one arrives.
    mail.attempt(waiting, H0 + 1500, DELIVERED)
    mail.attempt(recent, H0 + 1501, FAILED)
    mail.arrive(H0 + 1502, local_now=True)
    now = check(H0 + 1600, 1)
    assert now.hours[-1].received == 2 and now.hours[-1].delivered_remote == 1
    assert [f.message_id for f in now.failures] == [recent, bounced, early]

    # The hour ended; within its grace it is still read each time. The first hour of the window
    # left it (the failure in it with it); an event stamped before the end commits after it.
    check(H0 + HOUR + 30, 1)
    mail.attempt(stuck, H0 + HOUR - 5, DELIVERED)
    late = check(H0 + HOUR + 60, 1)
    assert [f.message_id for f in late.failures] == [recent, bounced]
    assert late.hours[-2].delivered_remote == 2

    # Past the grace the boundary moves: one whole read, then cheap ones again.
    check(H0 + HOUR + GRACE + 1, 2)
    mail.arrive(H0 + HOUR + GRACE + 2, local_now=True)
    check(H0 + HOUR + GRACE + 3, 2)

    # A new [queue] give_up_after reads the window again: mail that arrived a day or more ago
    # is no longer read.
    def shorter(tx: Tx) -> tuple[HourlyActivity, HourlyActivity]:
        now = H0 + HOUR + GRACE + 4
        return cache.read(tx, now, HOUR), read_all(tx, now, HOUR)

    cached, full = asyncio.run(store.read(shorter))
    assert cached == full and cache.refreshes == 3
    assert cached.hours[-2].delivered_remote == 0


def test_settled_hours_are_kept_until_the_boundary_moves(store: Store) -> None:
    """The cache holds the settled hours: history pruned meanwhile still counts in them (a
    full read no longer finds it) until the next boundary's read."""
    mail, cache = Mail(store), ActivityCache()
    mail.arrive(H0 - 5 * HOUR, local_now=True)
    mail.arrive(H0 + 60, local_now=True)
    cached, _ = both(store, cache, H0 + 1200)
    assert sum(h.received for h in cached.hours) == 2
    assert write(store, lambda tx: tx.history.prune(H0 - 4 * HOUR)) == 1
    cached, full = both(store, cache, H0 + 1300)
    assert (sum(h.received for h in cached.hours), sum(h.received for h in full.hours)) == (2, 1)
    assert cache.refreshes == 1
    cached, full = both(store, cache, H0 + HOUR + GRACE)
    assert cached == full and cache.refreshes == 2
