"""Storage contract, Sieve: scripts per user with at most one active (RFC 5804), the active one
never deleted, renames that keep the mark, and vacation replies and duplicate IDs remembered
until their period ends; users never see each other's."""

from __future__ import annotations

import pytest

from postroom.storage.api import Store
from postroom.storage.records import StoreError

from .conftest import Backend, read, write


def test_scripts_one_active(backend: Backend, store: Store) -> None:
    alice = write(store, lambda tx: tx.accounts.add_user("alice@example.test", "h", "s"))
    bob = write(store, lambda tx: tx.accounts.add_user("bob@example.test", "h", "s"))
    write(store, lambda tx: tx.sieve.put(alice, "main", "keep;", 1.0))
    write(store, lambda tx: tx.sieve.put(alice, "other", "discard;", 2.0))
    assert read(store, lambda tx: tx.sieve.active(alice)) is None
    write(store, lambda tx: tx.sieve.activate(alice, "main"))
    write(store, lambda tx: tx.sieve.put(alice, "main", 'fileinto "x";', 3.0))  # stays active
    assert read(store, lambda tx: tx.sieve.active(alice)) == ("main", 'fileinto "x";')
    write(store, lambda tx: tx.sieve.activate(alice, "other"))
    assert read(store, lambda tx: tx.sieve.scripts(alice)) == [("main", False), ("other", True)]
    with pytest.raises(StoreError):
        write(store, lambda tx: tx.sieve.delete(alice, "other"))  # the active one
    with pytest.raises(StoreError):
        write(store, lambda tx: tx.sieve.activate(alice, "missing"))
    with pytest.raises(StoreError):
        write(store, lambda tx: tx.sieve.rename(alice, "main", "other"))
    write(store, lambda tx: tx.sieve.rename(alice, "other", "renamed"))
    assert read(store, lambda tx: tx.sieve.active(alice)) == ("renamed", "discard;")
    write(store, lambda tx: tx.sieve.delete(alice, "main"))
    write(store, lambda tx: tx.sieve.activate(alice, None))
    assert read(store, lambda tx: tx.sieve.scripts(alice)) == [("renamed", False)]
    assert read(store, lambda tx: tx.sieve.scripts(bob)) == []
    assert read(store, lambda tx: tx.sieve.get(bob, "renamed")) is None
    store.close()
    reopened = backend.server()
    try:
        assert read(reopened, lambda tx: tx.sieve.get(alice, "renamed")) == "discard;"
    finally:
        reopened.close()


def test_replies_and_duplicates_last_their_period(store: Store) -> None:
    user = write(store, lambda tx: tx.accounts.add_user("carol@example.test", "h", "s"))
    other = write(store, lambda tx: tx.accounts.add_user("dave@example.test", "h", "s"))
    write(store, lambda tx: tx.sieve.record_reply(user, "Ann@Example.test", "away", 100.0))
    write(store, lambda tx: tx.sieve.record_seen(user, "<id@x>", 50.0))
    assert read(store, lambda tx: tx.sieve.replied(user, "ann@example.test", "away", 99.0))
    assert not read(store, lambda tx: tx.sieve.replied(user, "ann@example.test", "other", 99.0))
    assert not read(store, lambda tx: tx.sieve.replied(other, "ann@example.test", "away", 99.0))
    assert not read(store, lambda tx: tx.sieve.replied(user, "ann@example.test", "away", 100.0))
    assert read(store, lambda tx: tx.sieve.seen(user, "<id@x>", 49.0))
    assert not read(store, lambda tx: tx.sieve.seen(other, "<id@x>", 49.0))
    assert write(store, lambda tx: tx.sieve.forget_expired(60.0)) == 1
    assert not read(store, lambda tx: tx.sieve.seen(user, "<id@x>", 0.0))
    assert read(store, lambda tx: tx.sieve.replied(user, "ann@example.test", "away", 0.0))
