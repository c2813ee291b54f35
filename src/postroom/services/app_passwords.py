"""App passwords: named, random passwords a user makes on `/account/` for mail clients.

Each is 120 random bits shown once, as six groups of four characters from an alphabet
without look-alikes, and kept only as an argon2 hash, like a password. An app password
logs in wherever a plain password does over SASL PLAIN or LOGIN — IMAP, POP3, SMTP AUTH,
ManageSieve (`Authenticator.check_password`) — but never to the web pages, and not with
SCRAM, whose stored keys are derived from the main password only. Revoking one ends its
use at the next login (the login cache checks its hash is still kept); a session already
open stays open. At most `MAX_PER_USER` per user,
so a failed login costs at most that many more argon2 checks.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from postroom.services import accounts
from postroom.storage.api import Store, Tx

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no i, l, o, 0, 1
GROUPS, GROUP = 6, 4  # 24 characters of 31: about 118 bits
MAX_PER_USER = 10
MAX_NAME = 64


class AppPasswordError(ValueError):
    """Why an app password cannot be made or revoked (shown to the user)."""


@dataclass(frozen=True)
class AppPassword:
    name: str
    created: float

    @property
    def made(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.created))


def generate() -> str:
    """A new random app password, like `abcd-efgh-…`."""
    chars = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP))
    return "-".join(chars[i : i + GROUP] for i in range(0, len(chars), GROUP))


def _user_id(tx: Tx, address: str) -> int:
    user = tx.accounts.get_user(address)
    if user is None:
        raise AppPasswordError("The account is gone.")
    return user.id


def listing(tx: Tx, address: str) -> list[AppPassword]:
    return [AppPassword(n, c) for n, c in tx.web.app_passwords(_user_id(tx, address))]


async def create(store: Store, address: str, name: str) -> str:
    """Make an app password called `name`; the password, to be shown once."""
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise AppPasswordError(f"A name is 1 to {MAX_NAME} printable characters.")
    password = generate()
    hashed = (await asyncio.to_thread(accounts.hash_password, password))[0]

    def add(tx: Tx) -> None:
        uid = _user_id(tx, address)
        if len(tx.web.app_passwords(uid)) >= MAX_PER_USER:
            raise AppPasswordError(f"You have {MAX_PER_USER} app passwords; revoke one first.")
        if not tx.web.add_app_password(uid, name, hashed, time.time()):
            raise AppPasswordError(f"You have an app password called {name} already.")

    await store.write(add)
    return password


async def revoke(store: Store, address: str, name: str) -> None:
    def delete(tx: Tx) -> None:
        if not tx.web.delete_app_password(_user_id(tx, address), name):
            raise AppPasswordError(f"There is no app password called {name}.")

    await store.write(delete)
