"""The web admin dashboard's mail per hour: a full read of the window against the cached
settled hours (services/activity.py), on a store holding MESSAGES history rows spread over
six days up to now (~8,000 a day, two events each: deferred, then delivered or failed) with
QUEUED of them still in the queue. Times are store reads on the reader thread, as a page
view makes them.

    python bench/dashboard_activity.py [MESSAGES] [QUEUED]   (default 50000 200)
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from postroom.model.queue import Envelope, QueuedMessage, Recipient, RecipientState, new_queue_id
from postroom.proto.smtp.params import MailParams
from postroom.services.activity import ActivityCache, HourlyActivity, read_all
from postroom.storage.api import Tx
from postroom.storage.backend import direct_store, server_store
from postroom.storage.records import HistoryEvent

DAY = 86400.0
SPAN = 6 * DAY
GIVE_UP = 5 * DAY
BATCH = 5000


def fill(data_dir: Path, messages: int, queued: int, now: float) -> None:
    rng = random.Random(15)
    arrivals = sorted(now - rng.random() * SPAN for _ in range(messages))
    store = direct_store(data_dir)
    try:
        blob = 0
        for start in range(0, messages, BATCH):
            with store.transaction() as tx:
                if not blob:
                    blob = tx.blobs.add(b"Subject: bench\r\n\r\nbench\r\n")
                for index in range(start, min(start + BATCH, messages)):
                    arrival = arrivals[index]
                    rcpt = f"user{index % 500}@remote.example"
                    envelope = Envelope("a@example.test", MailParams(), "192.0.2.1", "h", "ESMTP")
                    envelope.arrival = arrival
                    waiting = index >= messages - queued
                    recipient = Recipient(rcpt, rcpt, None, state=RecipientState.DEFERRED)
                    message = QueuedMessage(
                        new_queue_id(arrival), envelope, b"", 0, 900, [recipient]
                    )
                    message.blob_id = blob
                    tx.history.arrived(message)
                    deferred = min(now, arrival + 60)
                    tx.history.record(
                        HistoryEvent(message.id, deferred, rcpt, "deferred", "451 later", "mx")
                    )
                    if waiting:
                        tx.queue.enqueue(message)
                        continue
                    done = min(now, arrival + 600)
                    event = "failed" if index % 20 == 0 else "delivered"
                    tx.history.record(HistoryEvent(message.id, done, rcpt, event, "250", "mx"))
    finally:
        store.close()


def timed(read: Callable[[], HourlyActivity], times: int) -> tuple[float, HourlyActivity]:
    spent, found = [], None
    for _ in range(times):
        started = time.perf_counter()
        found = read()
        spent.append(time.perf_counter() - started)
    assert found is not None
    return statistics.median(spent), found


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    queued = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    now = time.time()
    with tempfile.TemporaryDirectory() as directory:
        data_dir = Path(directory)
        started = time.perf_counter()
        fill(data_dir, messages, queued, now)
        spent = time.perf_counter() - started
        print(f"{messages} messages ({queued} queued) written in {spent:.1f} s")
        store = server_store(data_dir)
        store.open()
        cache = ActivityCache()

        def read(fn: Callable[[Tx], HourlyActivity]) -> HourlyActivity:
            return asyncio.run(store.read(fn))

        try:
            full, expected = timed(lambda: read(lambda tx: read_all(tx, now, GIVE_UP)), 5)
            first, _ = timed(lambda: read(lambda tx: cache.read(tx, now, GIVE_UP)), 1)
            cached, found = timed(lambda: read(lambda tx: cache.read(tx, now, GIVE_UP)), 20)
        finally:
            store.close()
        assert found == expected, "the cached figures differ from a full read"
        print(f"full read of the window:      {full * 1000:7.1f} ms (median of 5)")
        print(f"first view after an hour:     {first * 1000:7.1f} ms (full read + the recent hour)")
        print(f"other views (settled cached): {cached * 1000:7.1f} ms (median of 20)")


if __name__ == "__main__":
    main()
