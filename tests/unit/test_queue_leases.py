"""The scheduler's queue leases (queue/scheduler.py, issue 16 §2) on a real store: a round
leases what it claims under the node's name, renews the leases while its deliveries run (a
round may outlast one lease), and the recorded outcome ends them; a node starting again ends
those a crash left under its name, so they are due at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from postroom.model.queue import (
    Envelope,
    QueuedMessage,
    Recipient,
    RecipientOutcome,
    new_queue_id,
)
from postroom.proto.smtp.params import MailParams
from postroom.queue import scheduler as scheduler_module
from postroom.queue.backoff import RetryPolicy
from postroom.queue.reports import Reporter
from postroom.queue.scheduler import LEASE_SECONDS, Scheduler
from postroom.storage.api import Store, Tx
from postroom.storage.records import ClaimedMessage, Lease

NOW = 1_900_000_000.0
NODE = "mx1-abc123"
WAIT = 10.0  # seconds for a renewal to be seen


def enqueue(tx: Tx, message_id: str) -> None:
    envelope = Envelope("a@example.test", MailParams(), "192.0.2.1", "h", "ESMTP", arrival=NOW)
    message = QueuedMessage(
        message_id, envelope, b"", 0, 10, [Recipient("b@remote.test", "b@remote.test", None)]
    )
    message.blob_id = tx.blobs.add(b"Subject: x\r\n\r\nx\r\n")
    tx.history.arrived(message)
    tx.queue.enqueue(message)


def delivered(address: str) -> RecipientOutcome:
    return RecipientOutcome(address, "delivered", "250 ok", "2.0.0", "mx")


def lease_of(tx: Tx, message_id: str) -> tuple[str | None, float | None]:
    message = tx.queue.load(message_id)
    assert message is not None
    [rcpt] = message.recipients
    return rcpt.lease_node, rcpt.lease_until


def test_a_round_renews_its_leases_and_the_outcome_ends_them(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "RENEW_EVERY", 0.05)
    clock = [NOW]
    message_id = new_queue_id(NOW)
    during: list[tuple[str | None, float | None]] = []

    async def deliver(
        domain: str, claimed: Sequence[ClaimedMessage], contents: Sequence[bytes]
    ) -> list[list[RecipientOutcome]]:
        during.append(await store.read(lambda tx: lease_of(tx, message_id)))
        clock[0] = NOW + 3 * LEASE_SECONDS  # a long round: longer than one lease
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while (renewed := await store.read(lambda tx: lease_of(tx, message_id))) == during[0]:
            assert loop.time() < deadline, "the lease was not renewed"
            await asyncio.sleep(0.01)
        during.append(renewed)
        return [[delivered(r.address) for r in item.recipients] for item in claimed]

    scheduler = Scheduler(
        store,
        deliver,
        policy=RetryPolicy(),
        reporter=Reporter("mx.example.test", ("example.test",), lambda tx, message: None),
        concurrency=1,
        node=NODE,
        clock=lambda: clock[0],
    )

    async def scenario() -> None:
        await store.write(lambda tx: enqueue(tx, message_id))
        await scheduler._cycle()

    asyncio.run(scenario())
    assert during == [
        (NODE, NOW + LEASE_SECONDS),  # taken with the claim, before the peer was contacted
        (NODE, NOW + 4 * LEASE_SECONDS),  # renewed while the round ran
    ]
    history = asyncio.run(store.read(lambda tx: tx.history.trace(message_id)))
    assert history is not None and [e.event for e in history.events] == ["delivered"]
    assert asyncio.run(store.read(lambda tx: tx.queue.load(message_id))) is None


def test_a_node_starting_again_ends_the_leases_left_under_its_name(store: Store) -> None:
    ours, theirs = new_queue_id(NOW), new_queue_id(NOW + 1)

    def crashed(tx: Tx) -> None:
        enqueue(tx, ours)
        tx.queue.claim_due(NOW, lambda arrival, n: NOW + 3600, lease=Lease(NODE, NOW + 600))
        enqueue(tx, theirs)
        tx.queue.claim_due(NOW, lambda arrival, n: NOW + 3600, lease=Lease("other", NOW + 600))

    asyncio.run(store.write(crashed))
    scheduler = Scheduler(
        store,
        None,  # type: ignore[arg-type]
        policy=RetryPolicy(),
        reporter=None,  # type: ignore[arg-type]
        concurrency=1,
        node=NODE,
        clock=lambda: NOW + 60,
    )
    assert asyncio.run(scheduler.release_own_leases()) == 1
    assert asyncio.run(store.read(lambda tx: lease_of(tx, ours))) == (None, None)
    assert asyncio.run(store.read(lambda tx: lease_of(tx, theirs))) == ("other", NOW + 600)
    assert asyncio.run(store.read(lambda tx: tx.queue.next_due())) == NOW + 60  # due at once
