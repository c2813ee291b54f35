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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from postroom.model.queue import Envelope, QueuedMessage, Recipient, RecipientState, new_queue_id
from postroom.queue.bounce import Kind, ReportRecipient, build_report
from postroom.storage.database import Database
from postroom.storage.outbound import queue_generated

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
    blob_dir: Path
    # Delivers a report's local copies in the same transaction (delivery/local.py).
    deliver_local: Callable[[Database, QueuedMessage], object]

    def recipient_of(self, kind: Kind, envelope: Envelope) -> str | None:
        if envelope.sender:
            return envelope.sender
        if kind == "failure" and self.local_domains:
            return f"postmaster@{self.local_domains[0]}"
        return None

    def send(
        self,
        db: Database,
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
        if content is None:
            content = message.prefix + db.read_blob(message.blob_id, self.blob_dir)
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
            db,
            report,
            to,
            hostname=self.hostname,
            local_domains=frozenset(self.local_domains),
            deliver_local=self.deliver_local,
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
        db: Database,
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
        self.send(db, "success", message, success, now)
        self.send(db, "failure", message, failure, now)


def _status_of(reply: str, default: str) -> str:
    """The RFC 3463 code in a reply like "550 5.1.1 text", or `default`."""
    parts = reply.split(" ", 2)
    if len(parts) >= 2 and parts[1][:1] in "245" and parts[1].count(".") == 2:
        return parts[1]
    return default
