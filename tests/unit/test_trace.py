"""services/trace.py over a real store: what a query names, a queued message's recipients with
their state and next attempt, reports apart from recipients, the JSON shape, the Message-ID
header as cleanup reads it."""

from __future__ import annotations

import asyncio
import json

from postroom.model.queue import Envelope, QueuedMessage, Recipient, RecipientState, new_queue_id
from postroom.proto.smtp.params import MailParams
from postroom.services.cleanup import message_id_of
from postroom.services.trace import find, trace
from postroom.storage.api import Store, Tx
from postroom.storage.records import HistoryEvent, Lease

ARRIVAL = 1_800_000_000.0
QUEUE_ID = new_queue_id(ARRIVAL)


def accept(tx: Tx) -> None:
    envelope = Envelope(
        "alice@example.test",
        MailParams(),
        "192.0.2.1",
        "client.test",
        "ESMTP",
        arrival=ARRIVAL,
        auth="spf=pass dkim=none dmarc=none arc=none",
        message_id="<m@client.test>",
        verdict="deliver (no policy)",
    )
    recipients = [
        Recipient("bob@example.test", "bob@example.test", 1),
        Recipient("carol@remote.test", "friends@example.test", None),
    ]
    message = QueuedMessage(QUEUE_ID, envelope, b"", 0, 10, recipients)
    message.blob_id = tx.blobs.add(b"Subject: x\r\n\r\nx\r\n")
    tx.history.arrived(message)
    recipients[0].state = RecipientState.DELIVERED
    tx.history.record(
        HistoryEvent(QUEUE_ID, ARRIVAL, "bob@example.test", "delivered", "250 2.0.0 to Junk uid 1")
    )
    tx.queue.enqueue(message)
    claims = tx.queue.claim_due(
        ARRIVAL + 1, lambda arrival, n: ARRIVAL + 900.0, lease=Lease("n1", ARRIVAL + 601)
    )
    (claimed,) = claims["remote.test"]
    (rcpt,) = claimed.recipients
    tx.queue.record_attempt(
        rcpt, RecipientState.DEFERRED, "421 4.4.2 busy", ARRIVAL + 2, "mx.remote.test", ip="::1"
    )
    tx.history.record(
        HistoryEvent(
            QUEUE_ID,
            ARRIVAL + 3,
            "alice@example.test",
            "report",
            "delay report",
            None,
            report_id="R" * 17,
        ),
    )


def test_a_queued_message_shows_each_recipient_and_the_reports(store: Store) -> None:
    asyncio.run(store.write(accept))
    [found] = asyncio.run(trace(store, "<M@client.test>"))
    assert found.queue_id == QUEUE_ID and found.queued and found.message_id == "<m@client.test>"
    assert found.received.verdict == "deliver (no policy)" and found.received.tls == ""
    bob, carol = found.recipients
    assert (bob.local, bob.state, bob.next_attempt) == (True, "delivered", None)
    assert (carol.original, carol.local, carol.state) == ("friends@example.test", False, "deferred")
    assert carol.next_attempt == ARRIVAL + 900.0
    [step] = carol.steps
    assert (step.event, step.mx, step.ip, step.tls) == ("deferred", "mx.remote.test", "::1", "")
    assert step.next_attempt == ARRIVAL + 900.0
    [report] = found.reports
    assert (report.kind, report.to, report.queue_id) == ("delay", "alice@example.test", "R" * 17)
    # JSON-ready: only strings, numbers, booleans, null, lists and objects.
    assert json.loads(json.dumps(found.to_json()))["recipients"][1]["steps"][0]["ip"] == "::1"


def test_what_a_query_names(store: Store) -> None:
    asyncio.run(store.write(accept))

    def ids(query: str) -> list[str]:
        return [t.queue_id for t in asyncio.run(store.read(lambda tx: find(tx, query)))]

    assert ids(QUEUE_ID.lower()) == [QUEUE_ID]
    assert ids(" friends@example.test ") == [QUEUE_ID]  # a recipient as given
    assert ids("<alice@example.test>") == [QUEUE_ID]  # an address in brackets
    assert ids("m@client.test") == [QUEUE_ID]
    assert ids("0" * 17) == [] and ids("") == [] and ids("alice") == []


def test_message_id_of_a_header() -> None:
    head = b"Subject: x\r\nMessage-Id:\r\n <a.b@c.test>\r\n\r\nMessage-ID: <body@x>\r\n"
    assert message_id_of(head) == "<a.b@c.test>"
    assert message_id_of(b"Subject: x\r\n\r\n") == ""
    assert len(message_id_of(b"Message-ID: <" + b"x" * 1000 + b">\r\n\r\n")) == 250
