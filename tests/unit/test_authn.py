"""The Authenticator's memory of verified passwords: argon2 is skipped only for the very password
that verified against the very hash the user still has, within the TTL; failures are never
remembered; unknown users still cost a verification."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.services import accounts, app_passwords, authn
from postroom.services.authn import Authenticator
from postroom.storage.api import Store
from postroom.storage.backend import server_store

ALICE = "alice@example.test"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = server_store(tmp_path)
    store.open()
    hashed, scram = accounts.hash_password("right horse")
    asyncio.run(store.write(lambda tx: tx.accounts.add_user(ALICE, hashed, scram)))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords argon2 was asked about, in order."""
    asked: list[str] = []
    real = accounts.verify_password

    def counted(password_hash: str, password: str) -> bool:
        asked.append(password)
        return real(password_hash, password)

    monkeypatch.setattr(accounts, "verify_password", counted)
    return asked


def _checks(authenticator: Authenticator, *attempts: tuple[str, str]) -> list[bool]:
    async def run() -> list[bool]:
        return [await authenticator.check_password(u, "", p) for u, p in attempts]

    return asyncio.run(run())


def test_a_verified_password_is_not_verified_again(store: Store, verifications: list[str]) -> None:
    authenticator = Authenticator(store, cache_ttl=3600)
    results = _checks(
        authenticator,
        (ALICE, "right horse"),
        (ALICE, "right horse"),
        ("ALICE@example.test", "right horse"),
        (ALICE, "wrong horse"),
        (ALICE, "wrong horse"),
        (ALICE, "right horse"),
    )
    assert results == [True, True, True, False, False, True]
    # Once for the right password; every wrong attempt costs a full verification.
    assert verifications == ["right horse", "wrong horse", "wrong horse"]


def test_without_a_ttl_every_login_is_verified(store: Store, verifications: list[str]) -> None:
    authenticator = Authenticator(store, cache_ttl=0)
    assert _checks(authenticator, (ALICE, "right horse"), (ALICE, "right horse")) == [True, True]
    assert verifications == ["right horse", "right horse"]


def test_the_memory_expires(
    store: Store, verifications: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(authn.time, "monotonic", lambda: clock[0])
    authenticator = Authenticator(store, cache_ttl=60)
    assert _checks(authenticator, (ALICE, "right horse")) == [True]
    clock[0] += 59
    assert _checks(authenticator, (ALICE, "right horse")) == [True]
    clock[0] += 2
    assert _checks(authenticator, (ALICE, "right horse")) == [True]
    assert verifications == ["right horse", "right horse"]


def test_a_changed_password_or_a_deleted_user_is_not_let_in_from_memory(
    store: Store, verifications: list[str]
) -> None:
    authenticator = Authenticator(store, cache_ttl=3600)
    assert _checks(authenticator, (ALICE, "right horse")) == [True]
    hashed, scram = accounts.hash_password("new stable")
    asyncio.run(store.write(lambda tx: tx.accounts.set_password(ALICE, hashed, scram)))
    assert _checks(authenticator, (ALICE, "right horse"), (ALICE, "new stable")) == [False, True]
    asyncio.run(store.write(lambda tx: tx.accounts.delete_user(ALICE)))
    assert _checks(authenticator, (ALICE, "new stable")) == [False]
    # The deleted user's attempt was verified too (against the stand-in hash).
    assert verifications == ["right horse", "right horse", "new stable", "new stable"]


def test_the_least_recently_used_are_forgotten_first(
    store: Store, verifications: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authn, "CACHE_ENTRIES", 1)
    bob = "bob@example.test"
    hashed, scram = accounts.hash_password("bob's pony")
    asyncio.run(store.write(lambda tx: tx.accounts.add_user(bob, hashed, scram)))
    authenticator = Authenticator(store, cache_ttl=3600)
    attempts = ((ALICE, "right horse"), (bob, "bob's pony"), (ALICE, "right horse"))
    assert _checks(authenticator, *attempts) == [True, True, True]
    assert verifications == ["right horse", "bob's pony", "right horse"]


def test_app_passwords_are_tried_after_the_password_and_remembered_until_revoked(
    store: Store, verifications: list[str]
) -> None:
    made = asyncio.run(app_passwords.create(store, ALICE, "phone"))
    authenticator = Authenticator(store, cache_ttl=3600)
    assert _checks(authenticator, (ALICE, made), (ALICE, made)) == [True, True]
    assert verifications == [made, made]  # the password's hash, then the app's; then none
    verifications.clear()

    async def web_check() -> bool:
        return await authenticator.check_password(ALICE, "", made, app_passwords=False)

    assert asyncio.run(web_check()) is False  # not from the cache, not from the app's hash
    assert verifications == [made]
    verifications.clear()
    assert _checks(authenticator, (ALICE, made)) == [True]
    assert verifications == []  # still remembered: the web check left the entry alone
    asyncio.run(app_passwords.revoke(store, ALICE, "phone"))
    verifications.clear()
    assert _checks(authenticator, (ALICE, made)) == [False]
    assert verifications == [made]  # revoked: the cache forgot it; only the password is left
