"""Password and SCRAM credential checks shared by SMTP AUTH, IMAP and POP3.

An unknown user costs the same argon2 verification as a known one, so response times do not
tell who exists. Proxy authorization (an authzid other than the authcid) is not offered.

Passwords that verified are remembered for `cache_ttl` seconds, so a client that opens several
connections, or reconnects, pays for argon2 once (Dovecot's auth_cache keeps the lookup but
verifies the hash again; PingDirectory's password cache skips it, as here). What is kept is an
HMAC of the password under a key made at start-up and never stored, beside the hash it was
checked against, so a changed password (or a deleted user) is never let in from the cache;
an app password (services/app_passwords.py, tried after the password) is remembered the same
way, by its hash, which must still be one of the user's: a revoked one is never let in.
Failures are never remembered: every wrong password costs a full argon2 verification.

SMTP, IMAP and POP3 ask the store through `answer` (a credential store that fails is a
temporary failure for the client, never a crash) and report failed logins through
`login_failed`, one line in one format for every service, which the fail2ban filter shipped in
contrib/fail2ban matches:

    login failed service=imap client=192.0.2.7 user=<alice@example.test> method=PLAIN
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from postroom.proto.sasl import CheckPassword, ScramCredentials
from postroom.proto.sasl.exchange import UNAVAILABLE, Need, StoreAnswer
from postroom.services import accounts
from postroom.storage.api import Store
from postroom.storage.records import UserRecord, normalize_address

if TYPE_CHECKING:
    from postroom.services.antispam import Defences

CACHE_ENTRIES = 10_000  # users remembered at most; the least recently used go first

log = logging.getLogger("postroom.auth")


def login_failed(service: str, client: str, user: str, method: str) -> None:
    """Log a failed login (wrong user or password) in the one stable format. The user name is
    the client's: without spaces, line breaks or ">" it cannot fake a second line or field."""
    log.warning(
        "login failed service=%s client=%s user=<%s> method=%s",
        service,
        client,
        _shown(user),
        method,
    )


def _shown(user: str) -> str:
    return "".join(
        c if c.isprintable() and not c.isspace() and c != ">" else "?" for c in user[:256]
    )


@dataclass(frozen=True, slots=True)
class _Verified:
    password_hash: str  # what the password was checked against
    digest: bytes  # HMAC-SHA256 of the password under the process's key
    until: float  # time.monotonic() after which argon2 decides again
    app: bool = False  # password_hash is an app password's (never taken by the web pages)


class Authenticator:
    def __init__(self, store: Store, cache_ttl: float = 0.0) -> None:
        self.store = store
        self.cache_ttl = cache_ttl
        self._dummy_hash = ""
        self._key = os.urandom(32)
        self._verified: collections.OrderedDict[int, _Verified] = collections.OrderedDict()
        # Login throttling (services/limits.py): blocks checked before a password is, failures
        # counted and answered more slowly. None: no throttling.
        self.defences: Defences | None = None

    async def _dummy(self) -> str:
        """A real argon2 hash to verify against for unknown users (made once, off the loop)."""
        if not self._dummy_hash:
            hashed = await asyncio.to_thread(accounts.hash_password, "postroom-timing-equaliser")
            self._dummy_hash = hashed[0]
        return self._dummy_hash

    async def answer(
        self, need: Need, client: str = "", *, app_passwords: bool = True
    ) -> StoreAnswer:
        """A SASL exchange's question to the store; UNAVAILABLE when the store failed, or
        when logins from `client` (for that user) are blocked for guessing: a temporary
        failure (454 4.7.0, NO [UNAVAILABLE], -ERR [SYS/TEMP]) before any password check.
        `app_passwords=False` (the web pages): only the main password is taken."""
        defences = self.defences
        if defences is not None and client:
            block = await defences.login_blocked(client, need.authcid)
            if block is not None:
                log.warning(
                    "login refused client=%s user=<%s> blocked until=%d (%s)",
                    client,
                    _shown(need.authcid),
                    round(block.until),
                    block.reason,
                )
                return UNAVAILABLE
        try:
            if isinstance(need, CheckPassword):
                verdict = await self.check_password(
                    need.authcid, need.authzid, need.password, app_passwords=app_passwords
                )
                if verdict and defences is not None and client:
                    defences.logins.succeeded(client, need.authcid)
                return verdict
            return await self.credentials(need.authcid, need.authzid)
        except Exception as error:  # the store's failure, not the client's: a 4xx, one line
            log.error("credential store failed: %s: %s", type(error).__name__, error)
            return UNAVAILABLE

    async def failed(self, service: str, client: str, user: str, method: str) -> None:
        """A failed login: logged (`login_failed`), counted, and answered after the delay
        the count calls for (services/limits.py; none for the first few)."""
        login_failed(service, client, user, method)
        if self.defences is not None:
            delay = self.defences.logins.failed(client, user)
            if delay > 0:
                await asyncio.sleep(delay)

    async def check_password(
        self, authcid: str, authzid: str, password: str, *, app_passwords: bool = True
    ) -> bool:
        if authzid and normalize_address(authzid) != normalize_address(authcid):
            return False
        user = await self.store.read(lambda tx: tx.accounts.get_user(authcid))
        if user is None:
            await asyncio.to_thread(accounts.verify_password, await self._dummy(), password)
            return False
        secret = password.encode("utf-8", "surrogatepass")
        digest = hmac.new(self._key, secret, hashlib.sha256).digest()
        if await self._remembered(user, digest, app_passwords):
            return True
        verified = await asyncio.to_thread(accounts.verify_password, user.password_hash, password)
        checked, app = user.password_hash, False
        if not verified and app_passwords:
            found = await self._app_password(user, password)
            if found is None:
                return False
            checked, app, verified = found, True, True
        if verified and self.cache_ttl > 0:
            until = time.monotonic() + self.cache_ttl
            self._verified[user.id] = _Verified(checked, digest, until, app)
            self._verified.move_to_end(user.id)
            while len(self._verified) > CACHE_ENTRIES:
                self._verified.popitem(last=False)
        return verified

    async def _app_password(self, user: UserRecord, password: str) -> str | None:
        """The hash of the user's app password (services/app_passwords.py) that `password`
        is, or None."""
        hashes = await self.store.read(lambda tx: tx.web.app_password_hashes(user.id))
        for hashed in hashes:
            if await asyncio.to_thread(accounts.verify_password, hashed, password):
                return hashed
        return None

    async def _remembered(self, user: UserRecord, digest: bytes, app_passwords: bool) -> bool:
        entry = self._verified.get(user.id)
        if entry is None or (entry.app and not app_passwords):
            return False
        if entry.app:  # still one of the user's app passwords (not revoked)?
            hashes = await self.store.read(lambda tx: tx.web.app_password_hashes(user.id))
            current = entry.password_hash in hashes
        else:
            current = entry.password_hash == user.password_hash
        if entry.until < time.monotonic() or not current:
            del self._verified[user.id]
            return False
        if not hmac.compare_digest(entry.digest, digest):
            return False  # another password: argon2 decides (a typo does not forget the entry)
        self._verified.move_to_end(user.id)
        return True

    async def credentials(self, authcid: str, authzid: str) -> ScramCredentials | None:
        if authzid and normalize_address(authzid) != normalize_address(authcid):
            return None
        user = await self.store.read(lambda tx: tx.accounts.get_user(authcid))
        return accounts.scram_credentials(user.scram) if user else None
