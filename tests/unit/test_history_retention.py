"""Delivery history is forgotten after [queue] keep_history, by the scheduler, in slices."""

from __future__ import annotations

import asyncio

import pytest

from postroom.model.queue import Envelope, QueuedMessage, new_queue_id
from postroom.proto.smtp.params import MailParams
from postroom.queue import scheduler as scheduler_module
from postroom.queue.backoff import RetryPolicy
from postroom.queue.reports import Reporter
from postroom.queue.scheduler import Scheduler
from postroom.storage.api import Store, Tx
from postroom.storage.records import HistoryEvent

DAY = 86400.0
NOW = 1_900_000_000.0
OLD = [new_queue_id(NOW - 31 * DAY + index) for index in range(5)]
RECENT = new_queue_id(NOW - 29 * DAY)


def arrived(tx: Tx, message_id: str, arrival: float) -> None:
    envelope = Envelope("a@example.test", MailParams(), "192.0.2.1", "h", "ESMTP", arrival=arrival)
    tx.history.arrived(QueuedMessage(message_id, envelope, b"", 0, 10, []))
    tx.history.record(HistoryEvent(message_id, arrival + 1, "b@remote.test", "delivered", "250"))


def test_history_older_than_keep_history_is_pruned(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "PRUNE_SLICE", 2)  # several slices

    async def nothing(*args: object) -> list[list[object]]:
        return []

    reporter = Reporter("mx.example.test", ("example.test",), lambda tx, message: None)
    scheduler = Scheduler(
        store,
        nothing,
        policy=RetryPolicy(),
        reporter=reporter,
        concurrency=1,
        node="n1",
        keep_history=30 * DAY,
        clock=lambda: NOW,
    )

    async def scenario() -> tuple[int, list[bool]]:
        def setup(tx: Tx) -> None:
            for index in range(5):
                arrived(tx, OLD[index], NOW - 31 * DAY)
            arrived(tx, RECENT, NOW - 29 * DAY)

        await store.write(setup)
        pruned = await scheduler.prune_history(NOW)
        kept = await store.read(
            lambda tx: [tx.history.trace(i) is not None for i in (OLD[0], OLD[4], RECENT)]
        )
        return pruned, kept

    pruned, kept = asyncio.run(scenario())
    assert (pruned, kept) == (5, [False, False, True])
