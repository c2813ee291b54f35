"""The delivery trace of a message: how it was received and what happened to each recipient.

`find(tx, query)` answers `postroom trace` and the web admin's trace page. The query is a queue
ID, a Message-ID (with or without <>) or an address (a sender or a recipient, as given or as
delivered); an address or Message-ID finds the newest `MAX_TRACES` messages. Each
`MessageTrace` is built from the delivery history (storage `History`: the reception, every
event) and, while the message is still queued, its queue entry (each recipient's state and next
attempt). The records are plain frozen dataclasses of strings, numbers and tuples:
`to_json()` (dataclasses.asdict) is what `--json` prints and a web page can render.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import partial

from postroom.model.queue import QueuedMessage, RecipientState
from postroom.storage.api import Store, Tx
from postroom.storage.records import HistoryEvent
from postroom.storage.records import MessageTrace as StoredTrace

MAX_TRACES = 50  # messages an address or a Message-ID finds, newest first
REPORT_EVENT = "report"  # the history event of a report (DSN) sent about the message
WAITING = (str(RecipientState.QUEUED), str(RecipientState.DEFERRED))
_QUEUE_ID = re.compile(r"[0-9BCDFGHJKLMNPQRSTVWXZ]{17}")  # model.queue.new_queue_id


@dataclass(frozen=True, slots=True)
class Received:
    """Who handed the message to us and what the inbound checks said: the client's address
    and HELO name, the protocol (RFC 3848: ESMTPS, ESMTPSA, ...), the TLS version and cipher
    ("" without TLS), the user who logged in ("" for none), the checks ("spf=pass dkim=pass
    dmarc=pass", "" when none ran) and the verdict on them ("" when none ran)."""

    client_addr: str
    client_helo: str
    protocol: str
    tls: str
    auth_user: str
    checks: str
    verdict: str
    junk: bool


@dataclass(frozen=True, slots=True)
class Step:
    """One thing that happened to a recipient: a delivery attempt (remote: the MX or relay
    host, its address, the TLS of the session, the reply; the next attempt when deferred), a
    local delivery (the reply names the mailbox), a manual action."""

    time: float
    event: str  # delivered | deferred | failed | deleted ...
    reply: str
    mx: str | None
    ip: str
    tls: str
    next_attempt: float | None


@dataclass(frozen=True, slots=True)
class RecipientTrace:
    """One recipient: its address (as delivered and as given), local or remote (None: not
    known for messages kept before traces), its state now and its next attempt when it is
    waiting in the queue, and its steps, oldest first."""

    address: str
    original: str
    local: bool | None
    state: str
    next_attempt: float | None
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class ReportSent:
    """A delivery status notification (RFC 3464) sent about the message: its kind (failure,
    delay, success), to whom, and its own queue ID (trace that for its fate)."""

    time: float
    kind: str
    to: str
    queue_id: str


@dataclass(frozen=True, slots=True)
class MessageTrace:
    """A message's trace: its queue ID, Message-ID header ("" when unknown), arrival, sender
    ("" is the null sender), size, how it was received, each recipient, the reports sent, and
    whether it is still queued."""

    queue_id: str
    message_id: str
    arrival: float
    sender: str
    size: int
    received: Received
    recipients: tuple[RecipientTrace, ...]
    reports: tuple[ReportSent, ...]
    queued: bool

    def to_json(self) -> dict[str, object]:
        """Stable keys; times are Unix seconds, null where there is none."""
        return dataclasses.asdict(self)


async def trace(store: Store, query: str, limit: int = MAX_TRACES) -> list[MessageTrace]:
    """`find` on the store's reader (for the server: the web admin)."""
    return await store.read(partial(find, query=query, limit=limit))


def find(tx: Tx, query: str, limit: int = MAX_TRACES) -> list[MessageTrace]:
    """The traces `query` names, newest first; empty when it names none."""
    query = query.strip()
    if _QUEUE_ID.fullmatch(query.upper()):
        ids = [query.upper()]
    elif "@" in query:
        # "a@b" may be an address or a Message-ID, "<a@b>" too: both are looked up.
        bare = query.strip("<>")
        found = set(tx.history.with_address(bare, limit))
        found.update(tx.history.with_message_id(bare, limit))
        ids = sorted(found, reverse=True)[:limit]
    else:
        return []
    traces = []
    for queue_id in ids:
        stored = tx.history.trace(queue_id)
        if stored is not None:
            traces.append(build(stored, tx.queue.load(queue_id)))
    return traces


def build(stored: StoredTrace, queued: QueuedMessage | None) -> MessageTrace:
    """One message's trace from its history and, while it is queued, its queue entry."""
    reception = stored.reception
    received = Received(
        client_addr=stored.client_addr,
        client_helo=stored.client_helo,
        protocol=stored.protocol,
        tls=reception.tls if reception is not None else "",
        auth_user=stored.auth_user,
        checks=stored.auth,
        verdict=reception.verdict if reception is not None else "",
        junk=reception.junk if reception is not None else False,
    )
    # Recipients in the order they were accepted; before traces, in the order of events.
    listed: dict[str, tuple[str, bool | None]] = {}
    if reception is not None:
        for rcpt in reception.recipients:
            listed.setdefault(rcpt.address, (rcpt.original, rcpt.local))
    if queued is not None:
        for waiting in queued.recipients:
            listed.setdefault(waiting.address, (waiting.original, waiting.user_id is not None))
    steps: dict[str, list[HistoryEvent]] = {}
    reports = []
    for event in stored.events:
        if event.event == REPORT_EVENT:
            kind = event.reply.split(" ", 1)[0]
            reports.append(ReportSent(event.time, kind, event.recipient, event.report_id))
            continue
        listed.setdefault(event.recipient, (event.recipient, None))
        steps.setdefault(event.recipient, []).append(event)
    now = {r.address: r for r in queued.recipients} if queued is not None else {}
    recipients = []
    for address, (original, local) in listed.items():
        events = steps.get(address, [])
        current = now.get(address)
        if current is not None:
            state = str(current.state)
            upcoming = current.next_attempt if state in WAITING else None
        else:
            state = events[-1].event if events else "unknown"
            upcoming = None
        recipients.append(
            RecipientTrace(
                address,
                original,
                local,
                state,
                upcoming,
                tuple(
                    Step(e.time, e.event, e.reply, e.relay, e.ip, e.tls, e.next_attempt)
                    for e in events
                ),
            )
        )
    return MessageTrace(
        queue_id=stored.message_id,
        message_id=reception.message_id if reception is not None else "",
        arrival=stored.arrival,
        sender=stored.sender,
        size=stored.size,
        received=received,
        recipients=tuple(recipients),
        reports=tuple(reports),
        queued=queued is not None,
    )
