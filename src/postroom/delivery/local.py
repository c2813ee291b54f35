"""Local delivery: queued messages for local users go into their INBOX (their Junk mailbox when
the inbound checks said so, INBOX if they have none).

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

from postroom.delivery import sieve
from postroom.model.queue import QueuedMessage, Recipient, RecipientState
from postroom.queue.reports import Reporter
from postroom.storage.api import Store, Tx
from postroom.storage.records import INBOX, JUNK, HistoryEvent, StorageFailure

log = logging.getLogger("postroom.delivery")


@dataclass(frozen=True, slots=True)
class Delivered:
    message_id: str
    address: str
    uid: int
    mailbox: str = INBOX


def return_path(sender: str) -> bytes:
    return f"Return-Path: <{sender}>\r\n".encode()


def spam_headers(rcpt: Recipient) -> bytes:
    """The junk filter's verdict for this copy (services/junk_filter.py), none when the
    recipient's filter did not judge it."""
    if not rcpt.spam_score:
        return b""
    verdict = "Yes" if rcpt.junk else "No"
    return (
        f"X-Spam-Score: {rcpt.spam_score}\r\n"
        f"X-Spam-Status: {verdict}, score={rcpt.spam_score} tests=BAYES\r\n"
    ).encode()


def target_mailbox(tx: Tx, user_id: int, junk: bool) -> tuple[int, str] | None:
    """The mailbox a local copy goes to, with its name; None when the user is gone."""
    if junk:
        found = tx.mailboxes.id_of(user_id, JUNK)
        if found is not None:
            return found, JUNK
    inbox = tx.mailboxes.id_of(user_id, INBOX)
    return None if inbox is None else (inbox, INBOX)


def deliver_loaded(
    tx: Tx,
    message: QueuedMessage,
    inboxes: dict[tuple[int, bool], tuple[int, str] | None],
    reporter: Reporter,
) -> list[Delivered]:
    """Deliver one message's queued local recipients; returns the deliveries.

    The reports they call for (NOTIFY=SUCCESS, or a copy that could not be made) are queued in
    the same transaction, so a recipient in a final state is always a reported one.
    """
    delivered: list[Delivered] = []
    settled: list[Recipient] = []
    prefix = return_path(message.envelope.sender) + message.prefix
    for rcpt in message.recipients:
        if rcpt.user_id is None or rcpt.state is not RecipientState.QUEUED:
            continue
        copies = deliver_one(tx, message, rcpt, prefix, reporter, inboxes)
        if copies is None:
            # The user was deleted after the message was accepted: a failure to report.
            rcpt.state = RecipientState.FAILED
            rcpt.last_reply = "550 5.1.1 mailbox no longer exists"
        else:
            delivered += copies
        tx.queue.update_recipient(rcpt)
        settled.append(rcpt)
    now = time.time()
    record_outcomes(tx, message.id, settled, now)
    reporter.local_outcomes(tx, message, settled, now)
    tx.queue.finish_if_done(message.id, (RecipientState.DELIVERED, RecipientState.FAILED))
    return delivered


def deliver_one(
    tx: Tx,
    message: QueuedMessage,
    rcpt: Recipient,
    prefix: bytes,
    reporter: Reporter | None,
    inboxes: dict[tuple[int, bool], tuple[int, str] | None],
) -> list[Delivered] | None:
    """One local recipient's copies: what the user's Sieve script decides (delivery/sieve.py),
    else one in INBOX (Junk when judged so). Sets the recipient's state: FAILED when the script
    rejected the message. None when the user is gone."""
    assert rcpt.user_id is not None
    junk = message.envelope.junk or rcpt.junk
    decision = None
    # (Reports postroom writes itself are not filtered.)
    active = None if reporter is None else tx.sieve.active(rcpt.user_id)
    if active is not None:
        assert reporter is not None
        own = copy_prefix(rcpt, prefix)
        try:
            with tx.savepoint():
                decision = sieve.decide(
                    tx,
                    message,
                    rcpt,
                    lambda: own + tx.blobs.read(message.blob_id),
                    active,
                    junk=junk,
                    reporter=reporter,
                )
        except StorageFailure:
            raise
        except Exception:  # a defect of ours must not keep the mail from its mailbox
            log.exception("sieve failed for %s of %s; delivered as usual", rcpt.address, message.id)
            decision = None
    if decision is None:
        key = (rcpt.user_id, junk)
        if key not in inboxes:
            inboxes[key] = target_mailbox(tx, *key)
        target = inboxes[key]
        return None if target is None else [copy_into(tx, message, rcpt, target, prefix)]
    if decision.rejected is not None:
        reason = " ".join(decision.rejected.split())[:200]
        rcpt.state = RecipientState.FAILED
        rcpt.last_reply = f"550 5.7.1 rejected by the recipient's Sieve script: {reason}"
        return []
    if not decision.copies:
        rcpt.state = RecipientState.DELIVERED
        rcpt.last_reply = "250 2.0.0 discarded by the recipient's Sieve script"
        return []
    return [
        copy_into(tx, message, rcpt, (c.mailbox_id, c.name), prefix, c.flags, c.content)
        for c in decision.copies
    ]


def copy_prefix(rcpt: Recipient, prefix: bytes) -> bytes:
    """The prefix of this recipient's copy: the junk filter's fields below Return-Path."""
    if not rcpt.spam_score:
        return prefix
    return_field, _, rest = prefix.partition(b"\n")
    return return_field + b"\n" + spam_headers(rcpt) + rest


def copy_into(
    tx: Tx,
    message: QueuedMessage,
    rcpt: Recipient,
    target: tuple[int, str],
    prefix: bytes,
    flags: tuple[str, ...] = (),
    content: bytes | None = None,
) -> Delivered:
    """The recipient's copy in `target` (mailbox ID, name): the shared blob behind this copy's
    own `prefix`, or `content` of its own (a Sieve script edited its header)."""
    mailbox_id, name = target
    if content is None:
        prefix = copy_prefix(rcpt, prefix)
        uid = tx.messages.append(
            mailbox_id,
            message.blob_id,
            size=len(prefix) + message.blob_size,
            internal_date=message.envelope.arrival,
            prefix=prefix,
            flags=flags,
        )
    else:
        blob_id = tx.blobs.add(content)
        uid = tx.messages.append(
            mailbox_id,
            blob_id,
            size=len(content),
            internal_date=message.envelope.arrival,
            flags=flags,
        )
    rcpt.state = RecipientState.DELIVERED
    rcpt.last_reply = f"250 2.0.0 delivered to {name} uid {uid}"
    return Delivered(message.id, rcpt.address, uid, name)


def record_outcomes(tx: Tx, message_id: str, settled: list[Recipient], now: float) -> None:
    """The delivery history of local recipients just delivered (or failed)."""
    for rcpt in settled:
        tx.history.record(
            HistoryEvent(message_id, now, rcpt.address, str(rcpt.state), rcpt.last_reply)
        )


def deliver_messages(tx: Tx, message_ids: list[str], reporter: Reporter) -> list[Delivered]:
    """Deliver the local recipients of `message_ids`; returns the deliveries."""
    delivered: list[Delivered] = []
    inboxes: dict[tuple[int, bool], tuple[int, str] | None] = {}
    for message_id in message_ids:
        message = tx.queue.load(message_id)
        if message is not None:
            delivered += deliver_loaded(tx, message, inboxes, reporter)
    return delivered


def deliver_before_queuing(
    tx: Tx, message: QueuedMessage, reporter: Reporter | None = None
) -> list[Delivered]:
    """Deliver local recipients inside the accepting transaction (before any queue entry).

    Runs under a savepoint: if local delivery fails, the recipients stay QUEUED, the message
    gets a queue entry like any other, and the background worker retries it. The caller
    records the copies made in the message's history with its arrival. Success reports
    owed (NOTIFY=SUCCESS) are queued in the same transaction by `reporter`; reports postroom
    generates itself pass none (their recipients never ask for one).
    """
    delivered: list[Delivered] = []
    local = [r for r in message.recipients if r.user_id is not None]
    if not local:
        return delivered
    prefix = return_path(message.envelope.sender) + message.prefix
    try:
        with tx.savepoint():
            inboxes: dict[tuple[int, bool], tuple[int, str] | None] = {}
            for rcpt in local:
                copies = deliver_one(tx, message, rcpt, prefix, reporter, inboxes)
                if copies is None:
                    continue  # user deleted since RCPT: the worker records the failure
                delivered += copies
    except StorageFailure:
        raise  # the whole transaction fails with it: nothing is accepted
    except Exception:
        log.exception("immediate delivery of %s failed; queuing it for retry", message.id)
        for rcpt in local:
            rcpt.state = RecipientState.QUEUED
            rcpt.last_reply = ""
        return []
    if reporter is not None:
        settled = [r for r in local if r.state is not RecipientState.QUEUED]
        reporter.local_outcomes(tx, message, settled, time.time())
    return delivered


def log_deliveries(delivered: list[Delivered]) -> None:
    for item in delivered:
        log.info(
            "delivered id=%s to=<%s> mailbox=%s uid=%d",
            item.message_id,
            item.address,
            item.mailbox,
            item.uid,
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
        for message_id in await self.store.read(lambda tx: tx.queue.with_local_work()):
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
                delivered = await self.store.write(
                    functools.partial(deliver_messages, message_ids=batch, reporter=self.reporter)
                )
            except Exception as error:
                what = f"local delivery of {len(batch)} messages failed; will retry"
                if isinstance(error, StorageFailure):
                    log.warning("%s: %s", what, error)
                else:
                    log.exception(what)
                await asyncio.sleep(1.0)
                self._pending[:0] = batch
                self._wakeup.set()
                continue
            log_deliveries(delivered)
            if not self._pending:
                self._idle.set()
