"""Login throttling, sending limits, recipient guessing and greylisting as pure logic with a
stepped clock (services/limits.py, services/greylist.py); their state goes to a real store."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.services.greylist import Greylist
from postroom.services.limits import (
    ADDRESS_FACTOR,
    GUESSES_BEFORE_TARPIT,
    GUESSING_SESSIONS,
    Blocks,
    GuessingTracker,
    LoginThrottle,
    SendingLimits,
    WriteBehind,
    client_network,
    login_client,
)
from postroom.storage.backend import server_store
from postroom.storage.records import Block, SendingCount, StorageFailure


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[WriteBehind]:
    store = server_store(tmp_path / "data")
    store.open()
    try:
        yield WriteBehind(store)
    finally:
        store.close()


def test_networks() -> None:
    assert client_network("192.0.2.77") == "192.0.2.0/24"
    assert client_network("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
    assert login_client("192.0.2.77") == "192.0.2.77"
    assert login_client("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"


def test_failures_slow_down_then_block_the_pair_not_other_addresses(keeper: WriteBehind) -> None:
    clock = Clock()
    throttle = LoginThrottle(10, 900.0, Blocks(keeper, clock), clock)
    delays = [throttle.failed("192.0.2.7", "Alice@example.test") for _ in range(9)]
    assert delays[:2] == [0.0, 0.0]
    assert delays[2] > 0 and all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) <= 5.0
    assert throttle.blocked("192.0.2.7", "alice@example.test") is None
    throttle.failed("192.0.2.7", "alice@example.test")  # the 10th
    block = throttle.blocked("192.0.2.7", "alice@example.test")
    assert block is not None and block.until == clock.now + 900.0
    # Another account from there, and that account from elsewhere, are not blocked.
    assert throttle.blocked("192.0.2.7", "bob@example.test") is None
    assert throttle.blocked("198.51.100.1", "alice@example.test") is None
    clock.now += 901.0
    assert throttle.blocked("192.0.2.7", "alice@example.test") is None


def test_an_address_guessing_many_accounts_is_blocked(keeper: WriteBehind) -> None:
    clock = Clock()
    throttle = LoginThrottle(4, 60.0, Blocks(keeper, clock), clock)
    for n in range(4 * ADDRESS_FACTOR):
        assert throttle.blocked("192.0.2.9", f"u{n}@x") is None
        throttle.failed("192.0.2.9", f"u{n}@x")
    assert throttle.blocked("192.0.2.9", "anyone@x") is not None
    assert throttle.blocked("192.0.2.10", "anyone@x") is None


def test_success_forgives_the_pair_and_old_failures_expire(keeper: WriteBehind) -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 60.0, Blocks(keeper, clock), clock)
    throttle.failed("192.0.2.7", "a@x")
    throttle.failed("192.0.2.7", "a@x")
    throttle.succeeded("192.0.2.7", "a@x")
    throttle.failed("192.0.2.7", "a@x")
    assert throttle.blocked("192.0.2.7", "a@x") is None
    clock.now += 61
    throttle.failed("192.0.2.7", "a@x")
    throttle.failed("192.0.2.7", "a@x")
    assert throttle.blocked("192.0.2.7", "a@x") is None  # the one before expired


def test_sending_limits_per_hour(keeper: WriteBehind) -> None:
    clock = Clock()
    limits = SendingLimits(2, 3, keeper, clock)
    assert limits.message("alice@x") is None
    assert limits.message("ALICE@x") is None
    refusal = limits.message("alice@x")
    assert refusal is not None and (refusal.code, refusal.enhanced) == (451, "4.7.0")
    assert limits.message("bob@x") is None
    assert [limits.recipient("bob@x") for _ in range(4)][3] is not None
    clock.now += 3600
    assert limits.message("alice@x") is None
    assert [(c.account, c.messages) for c in limits.counts()] == [("alice@x", 1)]


def test_recipient_guessing_tarpit_and_network_block(keeper: WriteBehind) -> None:
    clock = Clock()
    blocks = Blocks(keeper, clock)
    guessing = GuessingTracker(blocks, clock)
    delays = [guessing.unknown("192.0.2.7", n) for n in range(1, 8)]
    assert delays[:GUESSES_BEFORE_TARPIT] == [0.0] * GUESSES_BEFORE_TARPIT
    assert delays[GUESSES_BEFORE_TARPIT] == 1.0 and max(delays) == 8.0
    for session in range(GUESSING_SESSIONS - 1):
        assert guessing.blocked("192.0.2.8") is None
        for n in range(1, GUESSES_BEFORE_TARPIT + 1):
            guessing.unknown(f"192.0.2.{session + 8}", n)
    assert guessing.blocked("192.0.2.200") is not None  # the /24
    assert guessing.blocked("198.51.100.1") is None


def test_greylisting_then_the_network_passes(keeper: WriteBehind) -> None:
    clock = Clock()
    greylist = Greylist(300.0, keeper, clock)
    first = greylist.check("192.0.2.7", "s@remote", "alice@x")
    assert first is not None and first.code == 451 and "300 seconds" in first.text
    clock.now += 100
    early = greylist.check("192.0.2.7", "s@remote", "alice@x")
    assert early is not None and "200 seconds" in early.text
    clock.now += 200
    assert greylist.check("192.0.2.8", "s@remote", "alice@x") is None  # same /24
    # The network is remembered: other senders and recipients pass at once.
    assert greylist.check("192.0.2.9", "other@remote", "bob@x") is None
    assert greylist.check("198.51.100.1", "s@remote", "alice@x") is not None
    clock.now += 36 * 86400
    assert greylist.check("192.0.2.7", "s@remote", "alice@x") is not None


def test_state_written_behind_and_loaded(keeper: WriteBehind, tmp_path: Path) -> None:
    clock = Clock()
    blocks = Blocks(keeper, clock)
    greylist = Greylist(300.0, keeper, clock)
    limits = SendingLimits(5, 5, keeper, clock)
    blocks.add(Block("login", "192.0.2.7", "", clock.now + 60, "test"))
    greylist.check("192.0.2.7", "s@remote", "alice@x")
    limits.message("alice@x")
    asyncio.run(keeper.flush())
    store = keeper.store
    found = asyncio.run(
        store.read(
            lambda tx: (
                tx.abuse.blocks(clock.now),
                tx.abuse.greylist_triplets(),
                tx.abuse.sending_counts(),
            )
        )
    )
    assert [b.client for b in found[0]] == ["192.0.2.7"]
    assert [k for k, _ in found[1]] == ["192.0.2.0/24|s@remote|alice@x"]
    assert [(c.account, c.messages) for c in found[2]] == [("alice@x", 1)]
    again = Greylist(300.0, keeper, clock)
    again.load(found[1], [])
    clock.now += 301
    assert again.check("192.0.2.7", "s@remote", "alice@x") is None


def test_two_nodes_add_their_sending_counts_in_the_store(keeper: WriteBehind) -> None:
    """Nodes sharing a store (two keepers on one store here): each writes what it counted
    as a delta, reads the sum back before a MAIL, and the limit holds for both together."""
    clock = Clock()
    other = WriteBehind(keeper.store, shared=True)
    a = SendingLimits(3, 100, keeper, clock)
    b = SendingLimits(3, 100, other, clock)

    def stored(account: str) -> SendingCount | None:
        return asyncio.run(keeper.store.read(lambda tx: tx.abuse.sending_count(account)))

    assert a.message("alice@x") is None and a.message("alice@x") is None
    asyncio.run(keeper.flush())
    b.adopt("alice@x", stored("alice@x"))
    assert b.message("ALICE@x") is None  # the third
    assert b.message("alice@x") is not None  # 2 on A + 1 on B: the limit
    assert a.message("alice@x") is None  # A has not heard yet: the bound, one flush behind
    asyncio.run(other.flush())
    asyncio.run(keeper.flush())
    count = stored("alice@x")
    assert count is not None and count.messages == 4  # every node's messages, added up
    a.adopt("alice@x", count)
    assert a.message("alice@x") is not None
    clock.now += 3600  # a new window: the delta becomes the count
    b.adopt("alice@x", stored("alice@x"))
    assert b.message("alice@x") is None
    asyncio.run(other.flush())
    count = stored("alice@x")
    assert count is not None and (count.messages, count.window_start) == (1, clock.now)


def test_a_greylisted_triplet_is_read_through_by_another_node(keeper: WriteBehind) -> None:
    clock = Clock()
    other = WriteBehind(keeper.store, shared=True)
    a = Greylist(300.0, keeper, clock)
    b = Greylist(300.0, other, clock)
    triplet = ("192.0.2.7", "s@remote", "alice@x")

    def read_through(node: Greylist, what: tuple[str, str, str] = triplet) -> None:
        ask = node.lookup(*what)
        if ask is not None:
            key, network = ask
            found = asyncio.run(
                keeper.store.read(lambda tx: tx.abuse.greylist_lookup(key, network))
            )
            node.adopt(key, network, *found)

    assert a.check(*triplet) is not None
    asyncio.run(keeper.flush())
    clock.now += 100
    read_through(b)
    early = b.check(*triplet)
    assert early is not None and "200 seconds" in early.text  # A's first sighting counts
    clock.now += 200
    read_through(b)
    assert b.check(*triplet) is None  # the retry passes on the other node
    asyncio.run(other.flush())
    assert a.lookup("192.0.2.9", "x@remote", "bob@x") is not None  # A has not passed it
    read_through(a, ("192.0.2.9", "x@remote", "bob@x"))
    assert a.lookup("192.0.2.9", "x@remote", "bob@x") is None  # the network passed on B
    assert a.check("192.0.2.9", "x@remote", "bob@x") is None


def test_blocks_merged_from_the_store_keep_those_not_written_yet(keeper: WriteBehind) -> None:
    clock = Clock()
    blocks = Blocks(keeper, clock)
    mine = Block("login", "192.0.2.7", "", clock.now + 60, "here")
    theirs = Block("login", "192.0.2.8", "a@x", clock.now + 60, "there")
    blocks.add(mine)
    blocks.merge([theirs])
    assert blocks.get("login", "192.0.2.7") == mine
    assert blocks.get("login", "192.0.2.8", "a@x") == theirs
    asyncio.run(keeper.flush())
    blocks.merge([])  # written: the store's view (a `limits clear`) wins
    assert blocks.get("login", "192.0.2.7") is None


def test_changes_made_while_writing_are_written_after(keeper: WriteBehind) -> None:
    clock = Clock()
    keeper.delay = 0.01
    limits = SendingLimits(100, 100, keeper, clock)

    async def run() -> None:
        limits.message("alice@x")
        while keeper._task is None:  # the write under way
            await asyncio.sleep(0.001)
        limits.message("alice@x")  # during the write
        await keeper._task
        for _ in range(500):
            count = await keeper.store.read(lambda tx: tx.abuse.sending_count("alice@x"))
            if count is not None and count.messages == 2:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the second message was never written")

    asyncio.run(run())


def test_a_block_is_announced_once_written_and_not_when_the_write_failed(
    keeper: WriteBehind, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    heard: list[str] = []
    monkeypatch.setattr(keeper.store.signals, "announce", heard.append)
    blocks = Blocks(keeper, clock)
    limits = SendingLimits(5, 5, keeper, clock)
    limits.message("alice@x")
    asyncio.run(keeper.flush())
    assert heard == []  # counts are read through, not announced
    blocks.add(Block("login", "192.0.2.7", "", clock.now + 60, "test"))
    asyncio.run(keeper.flush())
    assert heard == ["blocks"]

    async def failing(*args: object, **kwargs: object) -> None:
        raise StorageFailure("the disk is gone")

    monkeypatch.setattr(keeper.store, "write", failing)
    blocks.add(Block("login", "192.0.2.8", "", clock.now + 60, "test"))
    limits.message("alice@x")
    asyncio.run(keeper.flush())
    assert heard == ["blocks"]
    monkeypatch.undo()
    monkeypatch.setattr(keeper.store.signals, "announce", heard.append)
    asyncio.run(keeper.flush())  # what was not written is kept for the next write
    count = asyncio.run(keeper.store.read(lambda tx: tx.abuse.sending_count("alice@x")))
    assert count is not None and count.messages == 2
    stored = asyncio.run(keeper.store.read(lambda tx: tx.abuse.blocks(clock.now)))
    assert [b.client for b in stored] == ["192.0.2.7", "192.0.2.8"]
    assert heard == ["blocks", "blocks"]
