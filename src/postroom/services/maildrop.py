"""POP3 maildrop access: one session per mailbox, listing, reading, the UPDATE-state expunge.

A user's maildrop is their INBOX. RFC 1939 §8 asks for exclusive access while a session is in
the TRANSACTION state: `MailboxLocks` is that lock, one registry per server (made by the
composition root and handed in). Typed results only; the engine owns the wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postroom.proto.pop3.events import MaildropEntry
from postroom.services.authn import Authenticator
from postroom.storage.api import Store, Tx
from postroom.storage.records import INBOX


class MailboxLocks:
    """Which mailboxes are held by a session now (in-process: one server owns the store)."""

    def __init__(self) -> None:
        self._held: set[int] = set()

    def acquire(self, mailbox_id: int) -> bool:
        if mailbox_id in self._held:
            return False
        self._held.add(mailbox_id)
        return True

    def release(self, mailbox_id: int) -> None:
        self._held.discard(mailbox_id)

    def held(self, mailbox_id: int) -> bool:
        return mailbox_id in self._held


@dataclass
class MaildropContext:
    """What every POP3 session shares: the store, credential checks and the lock registry."""

    store: Store
    authenticator: Authenticator
    locks: MailboxLocks = field(default_factory=MailboxLocks)


class MaildropInUse(Exception):
    """Another session holds the user's maildrop (RFC 2449 §8.1.1 [IN-USE])."""


def unique_id(uidvalidity: int, uid: int) -> str:
    """RFC 1939 §7 unique-id: stable across sessions while the mailbox's UIDVALIDITY is."""
    return f"{uidvalidity}.{uid}"


class Maildrop:
    """One POP3 session's access to one user's maildrop; `close()` releases the lock."""

    def __init__(self, ctx: MaildropContext) -> None:
        self.ctx = ctx
        self.mailbox_id: int | None = None

    async def open(self, identity: str) -> list[MaildropEntry]:
        """Lock the user's INBOX and list it; MaildropInUse when another session holds it,
        LookupError when the user or the INBOX is gone."""
        assert self.mailbox_id is None, "maildrop already open"

        def find(tx: Tx) -> int | None:
            user = tx.accounts.get_user(identity)
            inbox = None if user is None else tx.mailboxes.find(user.id, INBOX)
            return None if inbox is None else inbox.id

        mailbox_id = await self.ctx.store.read(find)
        if mailbox_id is None:
            raise LookupError(f"{identity} has no {INBOX}")
        if not self.ctx.locks.acquire(mailbox_id):
            raise MaildropInUse(identity)
        self.mailbox_id = mailbox_id
        try:
            listing = await self.ctx.store.read(lambda tx: tx.messages.listing(mailbox_id))
            if listing is None:
                raise LookupError(f"{identity}: {INBOX} vanished")
        except BaseException:
            self.close()
            raise
        # The entry key the engine hands back for RETR/TOP/DELE is the message's UID.
        return [
            MaildropEntry(message.uid, message.size, unique_id(listing.uidvalidity, message.uid))
            for message in listing.messages
        ]

    async def fetch(self, key: int) -> bytes | None:
        mailbox_id = self.mailbox_id
        assert mailbox_id is not None
        return await self.ctx.store.read(lambda tx: tx.messages.read(mailbox_id, key))

    async def commit(self, keys: tuple[int, ...]) -> None:
        """RFC 1939 §6: remove the messages marked as deleted, durably."""
        mailbox_id = self.mailbox_id
        assert mailbox_id is not None
        await self.ctx.store.write(lambda tx: tx.messages.expunge(mailbox_id, keys))

    def close(self) -> None:
        if self.mailbox_id is not None:
            self.ctx.locks.release(self.mailbox_id)
            self.mailbox_id = None
