"""Storage contract, the abuse defences' state: greylisting triplets and networks (latest value
wins, pruned by age), blocks (in force until their end, cleared by client or account) and
sending counts, all kept across a restart."""

from __future__ import annotations

from postroom.storage.api import Store
from postroom.storage.records import Block, SendingCount

from .conftest import Backend, read, write


def test_greylist_state_is_replaced_pruned_and_kept(backend: Backend, store: Store) -> None:
    write(
        store,
        lambda tx: tx.abuse.save_greylist(
            [("a|s|r", 100.0), ("b|s|r", 200.0)], [("192.0.2.0/24", 150.0)]
        ),
    )
    write(store, lambda tx: tx.abuse.save_greylist([("a|s|r", 300.0)], [], forget=["b|s|r"]))
    assert read(store, lambda tx: tx.abuse.greylist_triplets()) == [("a|s|r", 300.0)]
    write(store, lambda tx: tx.abuse.save_greylist([], [("2001:db8::/64", 50.0)]))
    store.close()
    reopened = backend.server()
    try:
        assert read(reopened, lambda tx: tx.abuse.greylist_networks()) == [
            ("192.0.2.0/24", 150.0),
            ("2001:db8::/64", 50.0),
        ]
        assert write(reopened, lambda tx: tx.abuse.prune_greylist(301.0, 100.0)) == 2
        assert read(reopened, lambda tx: tx.abuse.greylist_triplets()) == []
        assert read(reopened, lambda tx: tx.abuse.greylist_networks()) == [("192.0.2.0/24", 150.0)]
    finally:
        reopened.close()


def test_blocks_end_and_are_cleared_by_client_or_account(backend: Backend, store: Store) -> None:
    ip_block = Block("login", "192.0.2.7", "", 1000.0, "30 failures")
    pair = Block("login", "192.0.2.7", "alice@example.test", 500.0, "10 failures")
    net = Block("guessing", "198.51.100.0/24", "", 2000.0, "5 sessions")
    for block in (ip_block, pair, net):
        write(store, lambda tx, block=block: tx.abuse.add_block(block))
    assert read(store, lambda tx: tx.abuse.blocks(0.0)) == [net, ip_block, pair]
    assert read(store, lambda tx: tx.abuse.blocks(600.0)) == [net, ip_block]
    longer = Block("login", "192.0.2.7", "", 3000.0, "again")
    write(store, lambda tx: tx.abuse.add_block(longer))  # the same key: replaced
    store.close()
    reopened = backend.server()
    try:
        assert read(reopened, lambda tx: tx.abuse.blocks(600.0)) == [net, longer]
        assert write(reopened, lambda tx: tx.abuse.clear_blocks(account="alice@example.test")) == 1
        assert write(reopened, lambda tx: tx.abuse.prune_blocks(2500.0)) == 1  # the network's
        assert write(reopened, lambda tx: tx.abuse.clear_blocks(client="192.0.2.7")) == 1
        assert read(reopened, lambda tx: tx.abuse.blocks(0.0)) == []
        write(reopened, lambda tx: tx.abuse.add_block(net))
        assert write(reopened, lambda tx: tx.abuse.clear_blocks()) == 1
    finally:
        reopened.close()


def test_sending_counts_are_replaced_and_cleared(backend: Backend, store: Store) -> None:
    alice = SendingCount("alice@example.test", 100.0, 3, 7)
    bob = SendingCount("bob@example.test", 200.0, 1, 1)
    write(store, lambda tx: tx.abuse.save_sending_counts([bob, alice]))
    alice2 = SendingCount("alice@example.test", 100.0, 4, 9)
    write(store, lambda tx: tx.abuse.save_sending_counts([alice2]))
    store.close()
    reopened = backend.server()
    try:
        assert read(reopened, lambda tx: tx.abuse.sending_counts()) == [alice2, bob]
        assert write(reopened, lambda tx: tx.abuse.clear_sending_counts("bob@example.test")) == 1
        assert read(reopened, lambda tx: tx.abuse.sending_counts()) == [alice2]
        assert write(reopened, lambda tx: tx.abuse.clear_sending_counts()) == 1
        assert read(reopened, lambda tx: tx.abuse.sending_counts()) == []
    finally:
        reopened.close()


def test_sending_deltas_add_up_within_a_window_and_restart_it_after(
    backend: Backend, store: Store
) -> None:
    """What nodes sharing a store add (services/limits.py): deltas added to a current count,
    made the count when none is kept or its window is over; one count read back by account."""
    assert read(store, lambda tx: tx.abuse.sending_count("alice@example.test")) is None
    first = [SendingCount("alice@example.test", 100.0, 2, 5)]
    assert write(store, lambda tx: tx.abuse.add_sending_counts(first, 50.0)) == first
    more = [
        SendingCount("bob@example.test", 120.0, 1, 1),
        SendingCount("alice@example.test", 110.0, 1, 2),
    ]
    assert write(store, lambda tx: tx.abuse.add_sending_counts(more, 50.0)) == [
        SendingCount("alice@example.test", 100.0, 3, 7),  # added; the window kept
        SendingCount("bob@example.test", 120.0, 1, 1),
    ]
    later = [SendingCount("alice@example.test", 4000.0, 1, 1)]
    assert write(store, lambda tx: tx.abuse.add_sending_counts(later, 400.0)) == later
    assert read(store, lambda tx: tx.abuse.sending_count("alice@example.test")) == later[0]


def test_greylist_lookup_of_one_triplet_and_network(backend: Backend, store: Store) -> None:
    write(store, lambda tx: tx.abuse.save_greylist([("n|s|r", 100.0)], [("n", 150.0)]))
    assert read(store, lambda tx: tx.abuse.greylist_lookup("n|s|r", "n")) == (100.0, 150.0)
    assert read(store, lambda tx: tx.abuse.greylist_lookup("n|s|x", "n")) == (None, 150.0)
    assert read(store, lambda tx: tx.abuse.greylist_lookup("m|s|r", "m")) == (None, None)
