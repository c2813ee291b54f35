"""Queue the delivery status notifications postroom owes (RFC 3461 §4.1, RFC 3464).

One place decides who a report goes to and writes it into the queue, inside the caller's
transaction, for both delivery paths:
- remote delivery (queue/scheduler.py): failed, delayed, and "relayed" success reports;
- local delivery (delivery/local.py): "delivered" success reports for NOTIFY=SUCCESS, and failure
  reports for local recipients that could not get their copy (the user was deleted after RCPT).
A report about a report (null sender) never goes back to `<>`: a failure goes to the postmaster of
our first domain, anything else to nobody.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postroom.model.queue import Envelope, QueuedMessage, Recipient, RecipientState, new_queue_id
from postroom.proto.smtp.params import MailParams
from postroom.queue.bounce import Kind, ReportRecipient, build_report
from postroom.queue.spool import settled_events
from postroom.storage.api import Tx
from postroom.storage.records import HistoryEvent

log = logging.getLogger("postroom.queue")


def wants(notify: tuple[str, ...] | None, what: str, *, default: bool) -> bool:
    """RFC 3461 §4.1: NOTIFY lists what the sender wants; absent means failures (and delays)."""
    if notify is None:
        return default
    return what in notify


@dataclass(frozen=True)
class Reporter:
    hostname: str
    local_domains: tuple[str, ...]  # lower case; the first one's postmaster gets orphans
    # Delivers a report's local copies in the same transaction (delivery/local.py).
    deliver_local: Callable[[Tx, QueuedMessage], object]

    def recipient_of(self, kind: Kind, envelope: Envelope) -> str | None:
        if envelope.sender:
            return envelope.sender
        if kind == "failure" and self.local_domains:
            return f"postmaster@{self.local_domains[0]}"
        return None

    def send(
        self,
        tx: Tx,
        kind: Kind,
        message: QueuedMessage,
        recipients: Sequence[ReportRecipient],
        now: float,
        content: bytes | None = None,
    ) -> None:
        """Queue one report of `kind` listing exactly `recipients` (none: nothing is sent)."""
        to = self.recipient_of(kind, message.envelope)
        if not recipients or to is None:
            return
        message.queued_more = True
        if content is None:
            content = message.prefix + tx.blobs.read(message.blob_id)
        envelope = message.envelope
        ret = envelope.params.ret
        report = build_report(
            kind=kind,
            reporting_mta=self.hostname,
            original_sender=to,
            envid=envelope.params.envid,
            arrival=envelope.arrival,
            recipients=recipients,
            original=content,
            ret="FULL" if ret == "FULL" else "HDRS" if ret == "HDRS" else None,
            now=now,
            message_id=f"{new_queue_id(now)}@{self.hostname}",
        )
        queued = queue_generated(
            tx,
            report,
            to,
            hostname=self.hostname,
            local_domains=frozenset(self.local_domains),
            deliver_local=self.deliver_local,
        )
        if queued is not None:
            # The trace of the message shows the report sent about it.
            tx.history.record(
                HistoryEvent(message.id, now, to, "report", f"{kind} report", report_id=queued.id)
            )
        log.info(
            "report kind=%s about id=%s to=<%s> id=%s",
            kind,
            message.id,
            to,
            queued.id if queued else "(nobody: address unknown)",
        )

    def local_outcomes(
        self,
        tx: Tx,
        message: QueuedMessage,
        recipients: Sequence[Recipient],
        now: float,
    ) -> None:
        """Reports for local recipients just settled: RFC 3464 "delivered" for NOTIFY=SUCCESS,
        "failed" for a copy that could not be made."""
        success: list[ReportRecipient] = []
        failure: list[ReportRecipient] = []
        for rcpt in recipients:
            entry = ReportRecipient(
                final_recipient=rcpt.address,
                original_recipient=rcpt.orcpt,
                action="delivered",
                status=_status_of(rcpt.last_reply, "2.0.0"),
                diagnostic=rcpt.last_reply or None,
                last_attempt=now,
            )
            if rcpt.state is RecipientState.DELIVERED and wants(
                rcpt.notify, "SUCCESS", default=False
            ):
                success.append(entry)
            elif rcpt.state is RecipientState.FAILED and wants(
                rcpt.notify, "FAILURE", default=True
            ):
                failure.append(
                    ReportRecipient(
                        final_recipient=rcpt.address,
                        original_recipient=rcpt.orcpt,
                        action="failed",
                        status=_status_of(rcpt.last_reply, "5.0.0"),
                        diagnostic=rcpt.last_reply or None,
                        last_attempt=now,
                    )
                )
        self.send(tx, "success", message, success, now)
        self.send(tx, "failure", message, failure, now)


def _status_of(reply: str, default: str) -> str:
    """The RFC 3463 code in a reply like "550 5.1.1 text", or `default`."""
    parts = reply.split(" ", 2)
    if len(parts) >= 2 and parts[1][:1] in "245" and parts[1].count(".") == 2:
        return parts[1]
    return default


def queue_generated(
    tx: Tx,
    content: bytes,
    recipient: str,
    *,
    hostname: str,
    local_domains: frozenset[str],
    deliver_local: Callable[[Tx, QueuedMessage], object],
) -> QueuedMessage | None:
    """Queue a message postroom wrote itself (a report) from the null sender `<>`.

    Local recipients get their copy in this transaction; remote ones are queued. Returns None
    when the address leads nowhere (an unknown local user): there is nobody to tell.
    """
    resolution = tx.accounts.resolve(recipient, local_domains)
    if resolution.empty:
        return None
    recipients = [Recipient(a, recipient, uid) for a, uid in resolution.local_users]
    recipients += [Recipient(a, recipient, None) for a in resolution.remote]
    return queue_message(
        tx,
        content,
        recipients,
        sender="",
        hostname=hostname,
        now=time.time(),
        deliver_local=deliver_local,
    )


def queue_message(
    tx: Tx,
    content: bytes,
    recipients: list[Recipient],
    *,
    sender: str,
    hostname: str,
    now: float,
    deliver_local: Callable[[Tx, QueuedMessage], object],
) -> QueuedMessage:
    """A message postroom wrote itself, accepted in `tx` like one from a client: its blob,
    the local copies, its history, and a queue entry when remote recipients are left."""
    envelope = Envelope(
        sender=sender,
        params=MailParams(),
        client_addr="127.0.0.1",
        client_helo=hostname,
        protocol="local",
        arrival=now,
    )
    message = QueuedMessage(new_queue_id(now), envelope, b"", 0, len(content), recipients)
    message.blob_id = tx.blobs.add(content)
    deliver_local(tx, message)
    tx.history.arrived(message, settled_events(message))
    if message.needs_queue_entry():
        tx.queue.enqueue(message)
    return message
