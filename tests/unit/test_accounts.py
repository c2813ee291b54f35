"""Password checks: the argon2id path that sizes its threads to the machine agrees with the
argon2 library on every hash, right or wrong password, whatever its parameters."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type

from postroom.services import accounts


@pytest.mark.parametrize("parallelism", [1, 2, 4, 8])
def test_argon2id_check_agrees_with_the_library(parallelism: int) -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=parallelism)
    stored = hasher.hash("correct horse")
    assert accounts._verify_argon2id(stored, "correct horse") is True
    assert accounts._verify_argon2id(stored, "correct horsf") is False
    assert accounts.verify_password(stored, "correct horse")
    assert not accounts.verify_password(stored, "Correct horse")


def test_other_hashes_go_to_the_library() -> None:
    argon2i = PasswordHasher(time_cost=1, memory_cost=8192, type=Type.I).hash("pw")
    assert accounts._verify_argon2id(argon2i, "pw") is None
    assert accounts.verify_password(argon2i, "pw")
    assert not accounts.verify_password(argon2i, "px")


@pytest.mark.parametrize(
    "broken",
    [
        "$argon2id$v=19$m=8192,t=1,p=1$!!!$abc",
        "$argon2id$v=19$m=8192,t=1,p=1",
        "not a hash",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # memory too small
    ],
)
def test_broken_hashes_never_match(broken: str) -> None:
    assert not accounts.verify_password(broken, "pw")


def test_stored_hashes_are_argon2id_with_the_default_parameters() -> None:
    stored, _ = accounts.hash_password("pw")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert accounts._verify_argon2id(stored, "pw") is True
