"""Storage contract, queue leases (issue 16 §2): what every backend guarantees nodes sharing a
queue.

A claim records the node and the end of its lease with the attempt; a leased recipient is due
to no node, not even after its next attempt, until the lease ends, then to any node (its holder
died: RFC 5321 §6.1, at least once); the outcome ends the lease; renewing moves its end; and a
node that starts again ends its own leases, making what it held due at once with the schedule
kept. Run for every backend in conftest.BACKENDS (SQLite keeps the same columns, one node).
"""

from __future__ import annotations

from postroom.model.queue import RecipientState
from postroom.storage.api import Store

from .conftest import read, write
from .test_contract_queue import ARRIVAL, LEASE, claim, queued


def lease_of(store: Store, message_id: str) -> list[tuple[str | None, float | None]]:
    message = read(store, lambda tx: tx.queue.load(message_id))
    assert message is not None
    return [(r.lease_node, r.lease_until) for r in message.recipients]


def test_a_claim_records_the_node_and_the_lease_end(store: Store) -> None:
    write(store, lambda tx: queued(tx, "L1", "a@one.test", "b@two.test"))
    assert lease_of(store, "L1") == [(None, None), (None, None)]
    claims = claim(store, ARRIVAL, "node-a")
    assert sorted(claims) == ["one.test", "two.test"]
    assert lease_of(store, "L1") == [("node-a", ARRIVAL + LEASE)] * 2
    (entry,) = read(store, lambda tx: tx.queue.entries())
    assert [(r.lease and (r.lease.node, r.lease.until)) for r in entry.recipients] == [
        ("node-a", ARRIVAL + LEASE)
    ] * 2
    assert read(store, lambda tx: tx.queue.next_due()) == ARRIVAL + LEASE


def test_a_leased_recipient_is_not_claimed_by_another_node_until_the_lease_ends(
    store: Store,
) -> None:
    write(store, lambda tx: queued(tx, "L2", "a@one.test"))
    assert claim(store, ARRIVAL, "node-a")
    assert claim(store, ARRIVAL + 1, "node-b") == {}
    assert claim(store, ARRIVAL + LEASE - 1, "node-b") == {}
    # A manual retry does not take it from the node delivering it either.
    assert write(store, lambda tx: tx.queue.retry("L2", ARRIVAL + 2)) == 1
    assert claim(store, ARRIVAL + 3, "node-b") == {}
    assert lease_of(store, "L2") == [("node-a", ARRIVAL + LEASE)]


def test_an_ended_lease_makes_the_recipient_due_to_any_node(store: Store) -> None:
    write(store, lambda tx: queued(tx, "L3", "a@one.test"))
    (first,) = claim(store, ARRIVAL, "node-a")["one.test"]
    assert first.recipients[0].attempts == 1
    # node-a died: no outcome. The lease ends before the next attempt (an hour on).
    later = ARRIVAL + LEASE + 1
    (second,) = claim(store, later, "node-b")["one.test"]
    assert second.message.id == "L3"
    assert second.recipients[0].attempts == 2
    assert lease_of(store, "L3") == [("node-b", later + LEASE)]
    # The attempt replaced the one lost: the schedule stays where that one put it.
    (rcpt,) = second.recipients
    write(store, lambda tx: tx.queue.record_attempt(rcpt, RecipientState.DEFERRED, "451", later))
    assert read(store, lambda tx: tx.queue.next_due()) == ARRIVAL + 3600.0


def test_the_outcome_ends_the_lease(store: Store) -> None:
    write(store, lambda tx: queued(tx, "L4", "a@one.test", "b@one.test"))
    (taken,) = claim(store, ARRIVAL, "node-a")["one.test"]
    a, b = taken.recipients
    write(store, lambda tx: tx.queue.record_attempt(a, RecipientState.DEFERRED, "451", ARRIVAL))
    write(store, lambda tx: tx.queue.record_attempt(b, RecipientState.FAILED, "550", ARRIVAL))
    assert lease_of(store, "L4") == [(None, None), (None, None)]
    # Due again at its next attempt (not the lease's end), to any node.
    assert read(store, lambda tx: tx.queue.next_due()) == ARRIVAL + 3600.0
    assert claim(store, ARRIVAL + LEASE + 1, "node-b") == {}
    (again,) = claim(store, ARRIVAL + 3600.0, "node-b")["one.test"]
    assert [r.address for r in again.recipients] == ["a@one.test"]
    (a,) = again.recipients
    write(store, lambda tx: tx.queue.record_attempt(a, RecipientState.DELIVERED, "250", ARRIVAL))
    assert lease_of(store, "L4") == [(None, None), (None, None)]


def test_renewing_moves_only_the_nodes_own_leases(store: Store) -> None:
    write(store, lambda tx: queued(tx, "L5", "a@one.test"))
    write(store, lambda tx: queued(tx, "L6", "b@two.test"))
    write(store, lambda tx: tx.queue.hold("L6"))
    claim(store, ARRIVAL, "node-a")
    write(store, lambda tx: tx.queue.release("L6", ARRIVAL + 1))
    claim(store, ARRIVAL + 1, "node-b")
    assert write(store, lambda tx: tx.queue.renew_leases("node-a", ARRIVAL + 5000)) == 1
    assert lease_of(store, "L5") == [("node-a", ARRIVAL + 5000)]
    assert lease_of(store, "L6") == [("node-b", ARRIVAL + 1 + LEASE)]
    # node-b's lease has ended, node-a's (renewed) has not.
    assert sorted(claim(store, ARRIVAL + LEASE + 10, "node-c")) == ["two.test"]


def test_a_node_that_starts_again_releases_its_own_leases(store: Store) -> None:
    write(store, lambda tx: queued(tx, "L7", "a@one.test", "b@one.test"))
    (taken,) = claim(store, ARRIVAL, "node-a")["one.test"]
    write(store, lambda tx: queued(tx, "L8", "c@two.test"))
    assert sorted(claim(store, ARRIVAL, "node-b")) == ["two.test"]
    restart = ARRIVAL + 60
    assert write(store, lambda tx: tx.queue.release_leases("node-a", restart)) == 2
    assert lease_of(store, "L7") == [(None, None), (None, None)]
    assert lease_of(store, "L8") == [("node-b", ARRIVAL + LEASE)]
    assert write(store, lambda tx: tx.queue.release_leases("node-a", restart)) == 0
    # Due at once (not at the lease's end) to any node; the schedule kept (an early attempt).
    assert read(store, lambda tx: tx.queue.next_due()) == restart
    (again,) = claim(store, restart, "node-a")["one.test"]
    assert [(r.address, r.attempts) for r in again.recipients] == [
        ("a@one.test", 2),
        ("b@one.test", 2),
    ]
    for rcpt in again.recipients:
        write(
            store,
            lambda tx, rcpt=rcpt: tx.queue.record_attempt(
                rcpt, RecipientState.DEFERRED, "451", restart
            ),
        )
    assert taken.message.id == "L7"
    message = read(store, lambda tx: tx.queue.load("L7"))
    assert message is not None
    assert {r.next_attempt for r in message.recipients} == {ARRIVAL + 3600.0}
