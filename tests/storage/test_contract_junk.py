"""Storage contract, junk filter training: per-user token counts and totals, training the same
message twice counts once, a change of mind moves the counts, users never see each other's,
and a deleted user's training goes with them."""

from __future__ import annotations

from postroom.storage.api import Store

from .conftest import Backend, read, write


def test_training_counts_tokens_and_totals_once_per_message(backend: Backend, store: Store) -> None:
    alice = write(store, lambda tx: tx.accounts.add_user("alice@example.test", "h", "s"))
    bob = write(store, lambda tx: tx.accounts.add_user("bob@example.test", "h", "s"))
    assert write(store, lambda tx: tx.junk.train(alice, b"m1", {"cheap", "pills"}, True))
    assert write(store, lambda tx: tx.junk.train(alice, b"m2", {"cheap", "lunch"}, False))
    assert not write(store, lambda tx: tx.junk.train(alice, b"m1", {"cheap", "pills"}, True))
    assert write(store, lambda tx: tx.junk.train(alice, b"m3", {"cheap"}, True))
    counts = read(store, lambda tx: tx.junk.counts(alice, {"cheap", "pills", "lunch", "x"}))
    assert counts == {"cheap": (1, 2), "pills": (0, 1), "lunch": (1, 0)}
    assert read(store, lambda tx: tx.junk.totals(alice)) == (1, 2)
    assert read(store, lambda tx: tx.junk.totals(bob)) == (0, 0)
    assert read(store, lambda tx: tx.junk.counts(bob, {"cheap"})) == {}
    # The user changes their mind about m2: it was spam after all.
    assert write(store, lambda tx: tx.junk.train(alice, b"m2", {"cheap", "lunch"}, True))
    counts = read(store, lambda tx: tx.junk.counts(alice, {"cheap", "lunch"}))
    assert counts == {"cheap": (0, 3), "lunch": (0, 1)}
    assert read(store, lambda tx: tx.junk.totals(alice)) == (0, 3)
    store.close()
    reopened = backend.server()
    try:
        assert read(reopened, lambda tx: tx.junk.totals(alice)) == (0, 3)
        write(reopened, lambda tx: tx.accounts.delete_user("alice@example.test"))
        assert read(reopened, lambda tx: tx.junk.totals(alice)) == (0, 0)
        assert read(reopened, lambda tx: tx.junk.counts(alice, {"cheap"})) == {}
    finally:
        reopened.close()


def test_counts_of_many_tokens_come_back_whole(store: Store) -> None:
    user = write(store, lambda tx: tx.accounts.add_user("carol@example.test", "h", "s"))
    tokens = {f"t{n}" for n in range(1700)}  # more than one statement's worth
    write(store, lambda tx: tx.junk.train(user, b"big", tokens, False))
    counts = read(store, lambda tx: tx.junk.counts(user, tokens | {"absent"}))
    assert counts == {token: (1, 0) for token in tokens}
