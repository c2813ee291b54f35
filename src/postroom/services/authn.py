"""Password and SCRAM credential checks shared by SMTP AUTH, IMAP and POP3.

An unknown user costs the same argon2 verification as a known one, so response times do not
tell who exists. Proxy authorization (an authzid other than the authcid) is not offered.
"""

from __future__ import annotations

import asyncio

from postroom.proto.sasl import ScramCredentials
from postroom.services import accounts
from postroom.storage.database import normalize_address
from postroom.storage.store import Store


class Authenticator:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._dummy_hash = ""

    async def _dummy(self) -> str:
        """A real argon2 hash to verify against for unknown users (made once, off the loop)."""
        if not self._dummy_hash:
            hashed = await asyncio.to_thread(accounts.hash_password, "postroom-timing-equaliser")
            self._dummy_hash = hashed[0]
        return self._dummy_hash

    async def check_password(self, authcid: str, authzid: str, password: str) -> bool:
        if authzid and normalize_address(authzid) != normalize_address(authcid):
            return False
        user = await self.store.read(lambda db: db.get_user(authcid))
        if user is None:
            await asyncio.to_thread(accounts.verify_password, await self._dummy(), password)
            return False
        return await asyncio.to_thread(accounts.verify_password, user.password_hash, password)

    async def credentials(self, authcid: str, authzid: str) -> ScramCredentials | None:
        if authzid and normalize_address(authzid) != normalize_address(authcid):
            return None
        user = await self.store.read(lambda db: db.get_user(authcid))
        return accounts.scram_credentials(user.scram) if user else None
