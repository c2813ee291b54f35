"""Storage contract, DKIM keys: what every backend guarantees the key service.

Keys are kept per (domain, selector) with their private half intact (bytes in, the same bytes
out), listed by domain and age, moved between states with the time of the move, refused when
a selector is taken or a key is missing, and retired keys are removed once their time is up.
The private key never shows in a record's repr, and it survives the server store's restart
as it was written by the CLI's store (the same database either way).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from postroom.storage.api import Store, Tx
from postroom.storage.records import DkimKey, DkimKeyState, StoreError

from .conftest import Backend, read, write

DAY = 86400.0
T0 = 1_800_000_000.0
# Not real keys: the store keeps bytes and text as they are, whatever they hold.
SECRET = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\x00\xff-----END PRIVATE KEY-----\n"


def key(
    domain: str = "example.test",
    selector: str = "pr20270115e",
    algorithm: str = "ed25519",
    *,
    created: float = T0,
    state: DkimKeyState = "active",
    private: bytes = SECRET,
) -> DkimKey:
    return DkimKey(
        domain,
        selector,
        algorithm,
        private,
        f"PUBLIC-{selector}",
        created,
        state,
        created,
    )


def add(*keys: DkimKey) -> Callable[[Tx], None]:
    def fn(tx: Tx) -> None:
        for one in keys:
            tx.dkim_keys.add(one)

    return fn


def test_keys_are_kept_whole_and_listed_by_domain_and_age(store: Store) -> None:
    older = key(selector="pr20270115e", created=T0)
    newer = key(selector="pr20270301r", algorithm="rsa", created=T0 + 40 * DAY)
    other = key("other.test", "pr20270201e", created=T0 + DAY, private=b"other secret")
    write(store, add(newer, other, older))
    assert read(store, lambda tx: tx.dkim_keys.keys("example.test")) == [older, newer]
    assert read(store, lambda tx: tx.dkim_keys.keys()) == [older, newer, other]
    assert read(store, lambda tx: tx.dkim_keys.keys("nothing.test")) == []
    (kept,) = read(store, lambda tx: tx.dkim_keys.keys("other.test"))
    assert kept.private == b"other secret" and kept.public == "PUBLIC-pr20270201e"


def test_a_taken_selector_is_refused_and_the_first_key_kept(store: Store) -> None:
    write(store, add(key()))
    with pytest.raises(StoreError, match="pr20270115e"):
        write(store, add(key(private=b"a second key")))
    # The same selector in another domain is another key.
    write(store, add(key("other.test")))
    (kept,) = read(store, lambda tx: tx.dkim_keys.keys("example.test"))
    assert kept.private == SECRET


def test_states_move_with_their_time_and_unknown_keys_are_refused(store: Store) -> None:
    write(store, add(key(state="announced")))
    write(store, lambda tx: tx.dkim_keys.set_state("example.test", "pr20270115e", "active", T0 + 5))
    (moved,) = read(store, lambda tx: tx.dkim_keys.keys("example.test"))
    assert (moved.state, moved.state_changed, moved.created) == ("active", T0 + 5, T0)
    with pytest.raises(StoreError):
        write(store, lambda tx: tx.dkim_keys.set_state("example.test", "nope", "retired", T0))
    with pytest.raises(StoreError):
        write(
            store,
            lambda tx: tx.dkim_keys.set_state(
                "example.test",
                "pr20270115e",
                "lost",
                T0,  # type: ignore[arg-type]
            ),
        )
    with pytest.raises(StoreError):
        write(store, lambda tx: tx.dkim_keys.delete("example.test", "nope"))
    write(store, lambda tx: tx.dkim_keys.delete("example.test", "pr20270115e"))
    assert read(store, lambda tx: tx.dkim_keys.keys()) == []


def test_retired_keys_go_once_their_time_is_up(store: Store) -> None:
    retired_early = key(selector="old1", state="retired", created=T0)
    retired_late = key(selector="old2", state="retired", created=T0 + 3 * DAY)
    active = key(selector="now1", state="active", created=T0 - 30 * DAY)
    announced = key(selector="next1", state="announced", created=T0 - 30 * DAY)
    write(store, add(retired_early, retired_late, active, announced))
    gone = write(store, lambda tx: tx.dkim_keys.delete_retired(T0 + DAY))
    assert gone == [retired_early]
    left = {k.selector for k in read(store, lambda tx: tx.dkim_keys.keys())}
    assert left == {"old2", "now1", "next1"}  # only retired keys ever go
    assert write(store, lambda tx: tx.dkim_keys.delete_retired(T0 + DAY)) == []


def test_a_failed_write_keeps_no_half_of_a_pair(store: Store) -> None:
    def pair_then_clash(tx: Tx) -> None:
        tx.dkim_keys.add(key(selector="pr20270115r", algorithm="rsa"))
        tx.dkim_keys.add(key())  # taken below

    write(store, add(key()))
    with pytest.raises(StoreError):
        write(store, pair_then_clash)
    assert [k.selector for k in read(store, lambda tx: tx.dkim_keys.keys())] == ["pr20270115e"]


def test_the_private_key_stays_out_of_reprs(store: Store) -> None:
    write(store, add(key(private=b"TOP-SECRET-BYTES")))
    (kept,) = read(store, lambda tx: tx.dkim_keys.keys())
    assert "TOP-SECRET" not in repr(kept) and "TOP-SECRET" not in str(kept)
    assert "pr20270115e" in repr(kept)


def test_keys_the_cli_writes_are_what_the_server_reads(backend: Backend) -> None:
    direct = backend.direct()
    try:
        with direct.transaction() as tx:
            tx.dkim_keys.add(key())
    finally:
        direct.close()
    store = backend.server()
    try:
        assert read(store, lambda tx: tx.dkim_keys.keys()) == [key()]
    finally:
        store.close()
