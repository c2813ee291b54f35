"""Mail per hour for the web admin's dashboard: the last 24 hours counted from the delivery
history, with the hours that are over counted once.

Counting reads every message that may have had an event in the 24 hours: those that arrived
up to `[queue] give_up_after` before them (a message queued for days can still fail now),
about 0.35 s of the store's reader thread per 50,000 messages. An hour that is over does not
change, so `ActivityCache` keeps the counts of the settled hours (and their newest failures)
and each page view reads only what can still move:

- the hours settle `GRACE` after they end: an event is stamped with its time before its
  transaction commits (after DNS checks, milters, a queued group commit), so an hour is taken
  as over once nothing stamped in it can still be on its way;
- when the settled boundary moves (once an hour, at the first view after it) the cache reads
  the whole window once, and notes the messages that may still change after the boundary:
  those in the queue, and those that arrived or have an event after it (a message that left
  the queue gets no more deliveries or failures);
- a page view then reads the messages that arrived from `GRACE` before the boundary on (a key
  range: the last hour or so of mail) and the noted ones by key, and counts what happened
  since the boundary.

So the figures are exactly those of a full read (the test compares them) as long as no
transaction commits `GRACE` after the time it stamped, at a fraction of the cost. The cache
is the server's, one per web context; reads run on the store's reader thread, the lock keeps
it whole if there were more.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from postroom.storage.api import Tx
from postroom.storage.records import HistoryEvent, HourActivity

HOUR = 3600
HOURS = 24  # hours of mail the dashboard counts, this one included
RECENT_FAILURES = 20  # failed recipients the dashboard lists
GRACE = 600.0  # seconds after an hour ends before its counts are kept


@dataclass(frozen=True)
class Settled:
    """The counts of the hours of the window before `boundary`, kept until it moves."""

    boundary: int  # the start of the first hour not settled
    give_up_after: float  # the [queue] setting the window was read with
    hours: dict[int, HourActivity]
    failures: tuple[HistoryEvent, ...]  # newest first
    open: frozenset[str]  # queue IDs that may still change at or after `boundary`


@dataclass(frozen=True)
class HourlyActivity:
    """The dashboard's figures: an entry for each of the last `HOURS` hours, oldest first, and
    the newest failed recipients in them, newest first."""

    hours: list[HourActivity]
    failures: tuple[HistoryEvent, ...]


def first_hour(now: float) -> int:
    """The start of the oldest hour the dashboard shows at `now`."""
    return (int(now) // HOUR - HOURS + 1) * HOUR


def read_all(tx: Tx, now: float, give_up_after: float) -> HourlyActivity:
    """The figures from one read of the whole window, without the cache."""
    first = first_hour(now)
    found = tx.history.activity(first, first - give_up_after, RECENT_FAILURES)
    return _figures(first, {hour.hour: hour for hour in found.hours}, found.failures)


class ActivityCache:
    """The settled hours' counts, kept between page views (see the module's header)."""

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        self.refreshes = 0  # whole-window reads so far
        self._settled: Settled | None = None
        self._lock = threading.Lock()

    def read(self, tx: Tx, now: float, give_up_after: float) -> HourlyActivity:
        """The figures at `now`; run it in a store read."""
        first = first_hour(now)
        boundary = max(first, int(now - self.grace) // HOUR * HOUR)
        with self._lock:
            settled = self._settled
            if (
                settled is None
                or settled.boundary != boundary
                or settled.give_up_after != give_up_after
            ):
                settled = self._settle(tx, first, boundary, give_up_after)
                self._settled = settled
        recent = tx.history.activity(
            boundary, boundary - self.grace, RECENT_FAILURES, also=settled.open
        )
        hours = {hour: counts for hour, counts in settled.hours.items() if hour >= first}
        hours.update((counts.hour, counts) for counts in recent.hours)
        failures = [f for f in settled.failures if f.time >= first] + list(recent.failures)
        failures.sort(key=lambda f: f.time, reverse=True)
        return _figures(first, hours, tuple(failures[:RECENT_FAILURES]))

    def _settle(self, tx: Tx, first: int, boundary: int, give_up_after: float) -> Settled:
        self.refreshes += 1
        found = tx.history.activity(first, first - give_up_after, RECENT_FAILURES, until=boundary)
        queued = {entry.id for entry in tx.queue.entries()}
        return Settled(
            boundary,
            give_up_after,
            {hour.hour: hour for hour in found.hours},
            found.failures,
            frozenset(queued | found.later),
        )


def _figures(
    first: int, known: dict[int, HourActivity], failures: tuple[HistoryEvent, ...]
) -> HourlyActivity:
    hours = [
        known.get(hour, HourActivity(hour, 0, 0, 0, 0))
        for hour in range(first, first + HOURS * HOUR, HOUR)
    ]
    return HourlyActivity(hours, failures)
