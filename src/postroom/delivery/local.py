"""Local delivery: queued messages for local users go into their INBOX.

Each copy references the message's shared blob and carries its own small prefix: the
Return-Path (RFC 5321 §4.4: added at final delivery, the envelope sender; the envelope is then
gone) before the trace headers stamped on arrival. Deliveries are batched: every message queued
since the last batch is delivered in one group-committed transaction. On start, whatever an
earlier run left queued for local users is delivered first, so a crash loses nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass

from postroom.model.queue import QueuedMessage, Recipient, RecipientState
from postroom.queue.reports import Reporter
from postroom.storage.database import Database, unlink_quietly
from postroom.storage.store import Store

log = logging.getLogger("postroom.delivery")

INBOX = "INBOX"


@dataclass(frozen=True, slots=True)
class Delivered:
    message_id: str
    address: str
    uid: int


def return_path(sender: str) -> bytes:
    return f"Return-Path: <{sender}>\r\n".encode()


def deliver_loaded(
    db: Database, message: QueuedMessage, inboxes: dict[int, int | None], reporter: Reporter
) -> tuple[list[Delivered], str | None]:
    """Deliver one message's queued local recipients; returns deliveries and a file to unlink.

    The reports they call for (NOTIFY=SUCCESS, or a copy that could not be made) are queued in
    the same transaction, so a recipient in a final state is always a reported one.
    """
    delivered: list[Delivered] = []
    settled: list[Recipient] = []
    prefix = return_path(message.envelope.sender) + message.prefix
    size = len(prefix) + message.blob_size
    for rcpt in message.recipients:
        if rcpt.user_id is None or rcpt.state is not RecipientState.QUEUED:
            continue
        if rcpt.user_id not in inboxes:
            inboxes[rcpt.user_id] = db.mailbox_id(rcpt.user_id, INBOX)
        mailbox_id = inboxes[rcpt.user_id]
        if mailbox_id is None:
            # The user was deleted after the message was accepted: a failure to report.
            rcpt.state = RecipientState.FAILED
            rcpt.last_reply = "550 5.1.1 mailbox no longer exists"
        else:
            uid = db.append_message(
                mailbox_id, message.blob_id, prefix, size, message.envelope.arrival
            )
            rcpt.state = RecipientState.DELIVERED
            rcpt.last_reply = f"250 2.0.0 delivered to {INBOX} uid {uid}"
            delivered.append(Delivered(message.id, rcpt.address, uid))
        db.update_recipient(rcpt)
        settled.append(rcpt)
    reporter.local_outcomes(db, message, settled, time.time())
    final = (RecipientState.DELIVERED, RecipientState.FAILED)
    return delivered, db.finish_message_if_done(message.id, final)


def deliver_messages(
    db: Database, message_ids: list[str], reporter: Reporter
) -> tuple[list[Delivered], list[str]]:
    """Deliver the local recipients of `message_ids`; returns deliveries and files to unlink."""
    delivered: list[Delivered] = []
    unlink: list[str] = []
    inboxes: dict[int, int | None] = {}
    for message_id in message_ids:
        message = db.load_message(message_id)
        if message is None:
            continue
        done, path = deliver_loaded(db, message, inboxes, reporter)
        delivered += done
        if path:
            unlink.append(path)
    return delivered, unlink


def deliver_before_queuing(
    db: Database, message: QueuedMessage, reporter: Reporter | None = None
) -> list[Delivered]:
    """Deliver local recipients inside the accepting transaction (before any queue entry).

    Runs under a savepoint: if local delivery fails, the recipients stay QUEUED, the message
    gets a queue entry like any other, and the background worker retries it. Success reports
    owed (NOTIFY=SUCCESS) are queued in the same transaction by `reporter`; reports postroom
    generates itself pass none (their recipients never ask for one).
    """
    delivered: list[Delivered] = []
    local = [r for r in message.recipients if r.user_id is not None]
    if not local:
        return delivered
    prefix = return_path(message.envelope.sender) + message.prefix
    size = len(prefix) + message.blob_size
    db.conn.execute("SAVEPOINT local_delivery")
    try:
        for rcpt in local:
            assert rcpt.user_id is not None
            mailbox_id = db.mailbox_id(rcpt.user_id, INBOX)
            if mailbox_id is None:
                continue  # user deleted since RCPT: the worker records the failure
            uid = db.append_message(
                mailbox_id, message.blob_id, prefix, size, message.envelope.arrival
            )
            rcpt.state = RecipientState.DELIVERED
            rcpt.last_reply = f"250 2.0.0 delivered to {INBOX} uid {uid}"
            delivered.append(Delivered(message.id, rcpt.address, uid))
    except Exception:
        db.conn.execute("ROLLBACK TO local_delivery")
        db.conn.execute("RELEASE local_delivery")
        log.exception("immediate delivery of %s failed; queuing it for retry", message.id)
        for rcpt in local:
            rcpt.state = RecipientState.QUEUED
            rcpt.last_reply = ""
        return []
    db.conn.execute("RELEASE local_delivery")
    if reporter is not None:
        settled = [r for r in local if r.state is RecipientState.DELIVERED]
        reporter.local_outcomes(db, message, settled, time.time())
    return delivered


def log_deliveries(delivered: list[Delivered]) -> None:
    for item in delivered:
        log.info(
            "delivered id=%s to=<%s> mailbox=INBOX uid=%d", item.message_id, item.address, item.uid
        )


class LocalDelivery:
    """Background worker delivering queued messages for local users, in batches."""

    def __init__(self, store: Store, reporter: Reporter) -> None:
        self.store = store
        self.reporter = reporter
        self._pending: list[str] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def notify(self, message_id: str) -> None:
        self._pending.append(message_id)
        self._idle.clear()
        self._wakeup.set()

    async def recover(self) -> None:
        """Queue everything a previous run accepted but had not delivered yet."""
        for message_id in await self.store.read(lambda db: db.messages_with_local_work()):
            self.notify(message_id)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                self._idle.set()
                continue
            try:
                delivered, unlink = await self.store.write(
                    functools.partial(deliver_messages, message_ids=batch, reporter=self.reporter)
                )
            except Exception:
                log.exception("local delivery of %d messages failed; will retry", len(batch))
                await asyncio.sleep(1.0)
                self._pending[:0] = batch
                self._wakeup.set()
                continue
            for path in unlink:
                unlink_quietly(self.store.blob_dir / path)
            log_deliveries(delivered)
            if not self._pending:
                self._idle.set()
