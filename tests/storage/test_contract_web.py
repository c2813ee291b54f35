"""Contract: the web admin's sessions and API tokens (`Tx.web`) and the admin flag, on every
backend — found by their hash only, ended per user, pruned by age, gone with their user."""

from __future__ import annotations

from postroom.services import accounts
from postroom.storage.api import Store, Tx

from .conftest import read, write

HASHED = ("hash", "scram")


def add(store: Store, address: str, *, admin: bool = False) -> int:
    return write(store, lambda tx: accounts.add_user(tx, address, HASHED, admin=admin))


def test_admin_flag_is_kept_and_listed(store: Store) -> None:
    add(store, "alice@example.test", admin=True)
    add(store, "bob@example.test")
    listed = read(store, accounts.users)
    assert [(u.address, u.admin) for u in listed] == [
        ("alice@example.test", True),
        ("bob@example.test", False),
    ]
    write(store, lambda tx: accounts.set_admin(tx, "bob@example.test", True))
    bob = read(store, lambda tx: tx.accounts.get_user("bob@example.test"))
    assert bob is not None and bob.admin


def test_sessions_by_hash_touched_ended_and_pruned(store: Store) -> None:
    alice = add(store, "alice@example.test", admin=True)
    bob = add(store, "bob@example.test")

    def begin(tx: Tx) -> None:
        for id_hash, user, created in (
            (b"a1", alice, 100.0),
            (b"a2", alice, 200.0),
            (b"b1", bob, 300.0),
        ):
            tx.web.add_session(id_hash, user, "csrf-" + id_hash.decode(), created)

    write(store, begin)
    session = read(store, lambda tx: tx.web.session(b"a1"))
    assert session is not None
    assert (session.user.address, session.user.admin, session.csrf) == (
        "alice@example.test",
        True,
        "csrf-a1",
    )
    assert read(store, lambda tx: tx.web.session(b"nope")) is None
    write(store, lambda tx: tx.web.touch_session(b"a1", 150.0))
    touched = read(store, lambda tx: tx.web.session(b"a1"))
    assert touched is not None and (touched.created, touched.last_seen) == (100.0, 150.0)
    # A password change ends the user's other sessions, and no one else's.
    write(store, lambda tx: accounts.set_password(tx, "alice@example.test", HASHED, b"a2"))
    assert read(store, lambda tx: tx.web.session(b"a1")) is None
    assert read(store, lambda tx: tx.web.session(b"a2")) is not None
    assert read(store, lambda tx: tx.web.session(b"b1")) is not None
    # Pruned by last use or by start.
    assert write(store, lambda tx: tx.web.prune_sessions(250.0, 0.0)) == 1  # a2, idle
    assert write(store, lambda tx: tx.web.prune_sessions(0.0, 301.0)) == 1  # b1, old
    assert read(store, lambda tx: tx.web.session(b"b1")) is None


def test_tokens_name_their_user_and_go_with_them(store: Store) -> None:
    add(store, "alice@example.test", admin=True)
    token = write(store, lambda tx: accounts.new_token(tx, "alice@example.test", "script"))
    assert token.startswith("pr_") and len(token) >= 40
    hashed = accounts.secret_hash(token)
    user = read(store, lambda tx: tx.web.token_user(hashed))
    assert user is not None and user.address == "alice@example.test" and user.admin
    assert read(store, lambda tx: tx.web.token_user(accounts.secret_hash(token + "x"))) is None
    write(store, lambda tx: tx.web.add_session(b"s", user.id, "c", 1.0))
    write(store, lambda tx: accounts.delete_user(tx, "alice@example.test"))
    assert read(store, lambda tx: tx.web.token_user(hashed)) is None
    assert read(store, lambda tx: tx.web.session(b"s")) is None
