"""Storage contract, the delivery trace: how a message was received and each attempt's details
are kept with its history, it is found by queue ID, Message-ID and address (newest first,
bounded), long replies are cut, and pruning forgets the message by every key.

Written against `storage.api` only and run for every backend in conftest.BACKENDS.
"""

from __future__ import annotations

from postroom.model.queue import Envelope, QueuedMessage, Recipient, RecipientState, new_queue_id
from postroom.proto.smtp.params import MailParams
from postroom.storage.api import Store, Tx
from postroom.storage.records import HistoryEvent, HourActivity, Lease, ReceivedRecipient, Reception

from .conftest import read, write

CONTENT = b"Subject: hello\r\nMessage-ID: <m1@client.test>\r\n\r\nHi.\r\n"
ARRIVAL = 1_800_000_000.0
TLS = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"


def accept(
    tx: Tx, arrival: float, sender: str, *recipients: Recipient, msgid: str = "", qid: str = ""
) -> str:
    envelope = Envelope(
        sender,
        MailParams(),
        "192.0.2.1",
        "client.test",
        "ESMTPS",
        tls=TLS,
        arrival=arrival,
        auth="spf=pass dkim=pass dmarc=pass arc=none",
        message_id=msgid,
        verdict="deliver (authenticated)",
    )
    message = QueuedMessage(
        qid or new_queue_id(arrival), envelope, b"", 0, len(CONTENT), [*recipients]
    )
    message.blob_id = tx.blobs.add(CONTENT)
    tx.history.arrived(message)
    tx.queue.enqueue(message)
    return message.id


def remote(address: str, original: str | None = None) -> Recipient:
    return Recipient(address, original or address, None)


def test_reception_and_attempts_are_kept_with_the_history(store: Store) -> None:
    queue_id = write(
        store,
        lambda tx: accept(
            tx,
            ARRIVAL,
            "Alice@Example.test",
            remote("carol@remote.test", "list@example.test"),
            Recipient("bob@example.test", "bob@example.test", 1),
            msgid="<m1@client.test>",
        ),
    )

    def attempt(tx: Tx) -> None:
        claims = tx.queue.claim_due(
            ARRIVAL, lambda arrival, n: ARRIVAL + 600.0 * n, lease=Lease("n1", ARRIVAL + 600)
        )
        (claimed,) = claims["remote.test"]
        (rcpt,) = claimed.recipients
        reply = "451 4.3.0 " + "x" * 2000
        tx.queue.record_attempt(
            rcpt,
            RecipientState.DEFERRED,
            reply,
            ARRIVAL + 1,
            "mx.remote.test",
            ip="127.0.0.9",
            tls="TLSv1.3 TLS_AES_128_GCM_SHA256",
        )
        tx.history.record(
            HistoryEvent(
                queue_id,
                ARRIVAL + 2,
                "alice@example.test",
                "report",
                "delay report",
                report_id="ZZZZZZZZZZZZZZZZZ",
            ),
        )

    write(store, attempt)
    trace = read(store, lambda tx: tx.history.trace(queue_id.lower()))
    assert trace is not None and trace.message_id == queue_id
    assert trace.auth == "spf=pass dkim=pass dmarc=pass arc=none"
    assert trace.reception == Reception(
        tls=TLS,
        message_id="<m1@client.test>",
        verdict="deliver (authenticated)",
        junk=False,
        recipients=(
            ReceivedRecipient("carol@remote.test", "list@example.test", False),
            ReceivedRecipient("bob@example.test", "bob@example.test", True),
        ),
    )
    deferred, report = trace.events
    assert (deferred.event, deferred.relay, deferred.ip) == (
        "deferred",
        "mx.remote.test",
        "127.0.0.9",
    )
    assert deferred.tls == "TLSv1.3 TLS_AES_128_GCM_SHA256"
    assert deferred.next_attempt == ARRIVAL + 600.0  # set when the attempt was claimed
    assert deferred.reply.startswith("451 4.3.0 xxx") and len(deferred.reply) == 512
    assert (report.event, report.recipient, report.report_id) == (
        "report",
        "alice@example.test",
        "ZZZZZZZZZZZZZZZZZ",
    )


def test_messages_are_found_by_address_and_message_id_newest_first(store: Store) -> None:
    def three(tx: Tx) -> list[str]:
        return [
            accept(tx, ARRIVAL, "alice@example.test", remote("carol@remote.test"), msgid="<A@x>"),
            accept(tx, ARRIVAL + 10, "dave@example.test", remote("carol@remote.test")),
            accept(tx, ARRIVAL + 20, "alice@example.test", remote("erin@remote.test"), msgid="b@x"),
        ]

    first, second, third = write(store, three)
    assert read(store, lambda tx: tx.history.with_address("Carol@Remote.test", 50)) == [
        second,
        first,
    ]
    assert read(store, lambda tx: tx.history.with_address("alice@example.test", 50)) == [
        third,
        first,
    ]
    assert read(store, lambda tx: tx.history.with_address("alice@example.test", 1)) == [third]
    assert read(store, lambda tx: tx.history.with_message_id("a@X", 50)) == [first]
    assert read(store, lambda tx: tx.history.with_message_id("<B@x>", 50)) == [third]
    assert read(store, lambda tx: tx.history.with_address("nobody@example.test", 50)) == []


def test_pruning_forgets_a_message_by_every_key(store: Store) -> None:
    old = write(
        store,
        lambda tx: accept(
            tx, ARRIVAL, "alice@example.test", remote("carol@remote.test"), msgid="<o@x>"
        ),
    )
    new = write(
        store,
        lambda tx: accept(tx, ARRIVAL + 100, "alice@example.test", remote("carol@remote.test")),
    )
    assert write(store, lambda tx: tx.history.prune(ARRIVAL + 50)) == 1
    assert read(store, lambda tx: tx.history.trace(old)) is None
    assert read(store, lambda tx: tx.history.with_address("carol@remote.test", 50)) == [new]
    assert read(store, lambda tx: tx.history.with_address("alice@example.test", 50)) == [new]
    assert read(store, lambda tx: tx.history.with_message_id("o@x", 50)) == []


def test_an_event_recorded_just_before_the_arrival_is_kept_with_it(store: Store) -> None:
    """A report queued while a message is delivered locally, before the spool writes its
    history in the same transaction, is in its trace; one of a message that never arrived is
    not kept, nor given to another."""
    queue_id, lost = new_queue_id(ARRIVAL), new_queue_id(ARRIVAL)

    def job(tx: Tx) -> None:
        for about in (lost, queue_id):
            tx.history.record(
                HistoryEvent(about, ARRIVAL, "alice@example.test", "report", "success report")
            )
        accept(tx, ARRIVAL, "alice@example.test", remote("carol@remote.test"), qid=queue_id)

    write(store, job)
    trace = read(store, lambda tx: tx.history.trace(queue_id))
    assert trace is not None
    assert [(e.event, e.reply) for e in trace.events] == [("report", "success report")]
    write(store, lambda tx: accept(tx, ARRIVAL, "dave@example.test", qid=lost))
    later = read(store, lambda tx: tx.history.trace(lost))
    assert later is not None and later.events == ()


def test_activity_counts_by_hour_and_lists_the_newest_failures(store: Store) -> None:
    """Arrivals, local and remote deliveries and failures since a moment, by hour; messages
    that arrived before `arrived_since` are not read; the newest failures first, bounded."""
    day = 86400.0

    def event(queue_id: str, moment: float, kind: str, relay: str | None = None) -> HistoryEvent:
        return HistoryEvent(queue_id, moment, "carol@remote.test", kind, f"{kind} reply", relay)

    def history(tx: Tx) -> tuple[str, str]:
        older = accept(tx, ARRIVAL - 3 * day, "a@example.test", remote("carol@remote.test"))
        ancient = accept(tx, ARRIVAL - 10 * day, "a@example.test", remote("carol@remote.test"))
        before = accept(tx, ARRIVAL - 7200, "a@example.test", remote("carol@remote.test"))
        first = accept(tx, ARRIVAL + 60, "a@example.test", remote("carol@remote.test"))
        second = accept(tx, ARRIVAL + 3700, "a@example.test", remote("carol@remote.test"))
        for happened in (
            event(older, ARRIVAL + 10, "failed"),
            event(ancient, ARRIVAL + 20, "failed"),  # not read: arrived too long ago
            event(before, ARRIVAL - 7100, "delivered"),  # before `since`
            event(first, ARRIVAL + 61, "delivered"),  # local: no relay
            event(first, ARRIVAL + 3605, "delivered", "mx.remote.test"),
            event(second, ARRIVAL + 3750, "deferred", "mx.remote.test"),
            event(second, ARRIVAL + 3800, "failed", "mx.remote.test"),
        ):
            tx.history.record(happened)
        return older, second

    older, second = write(store, history)
    found = read(store, lambda tx: tx.history.activity(ARRIVAL, ARRIVAL - 5 * day, 10))
    assert found.hours == (
        HourActivity(int(ARRIVAL), 1, 1, 0, 1),
        HourActivity(int(ARRIVAL) + 3600, 1, 0, 1, 1),
    )
    assert [(f.message_id, f.time, f.reply) for f in found.failures] == [
        (second, ARRIVAL + 3800, "failed reply"),
        (older, ARRIVAL + 10, "failed reply"),
    ]
    newest = read(store, lambda tx: tx.history.activity(ARRIVAL, ARRIVAL - 5 * day, 1))
    assert [f.message_id for f in newest.failures] == [second]
    assert read(store, lambda tx: tx.history.activity(ARRIVAL + 7200, ARRIVAL, 5)).hours == ()


def test_activity_stops_at_until_names_later_messages_and_reads_those_asked(store: Store) -> None:
    """Counts end before `until`; `later` names the messages read that arrived or have an event
    at or after it; `also` adds messages that arrived before `arrived_since`, read by key."""
    day = 86400.0

    def history(tx: Tx) -> tuple[str, str]:
        old = accept(tx, ARRIVAL - 3 * day, "a@example.test", remote("carol@remote.test"))
        done = accept(tx, ARRIVAL + 60, "a@example.test", remote("carol@remote.test"))
        new = accept(tx, ARRIVAL + 3700, "a@example.test", remote("carol@remote.test"))
        for happened in (
            HistoryEvent(old, ARRIVAL + 10, "carol@remote.test", "failed", "550", None),
            HistoryEvent(old, ARRIVAL + 4000, "dan@remote.test", "delivered", "250", "mx"),
            HistoryEvent(done, ARRIVAL + 70, "carol@remote.test", "delivered", "250", "mx"),
        ):
            tx.history.record(happened)
        return old, new

    old, new = write(store, history)
    until = ARRIVAL + 3600
    found = read(store, lambda tx: tx.history.activity(ARRIVAL, ARRIVAL - 5 * day, 5, until))
    assert found.hours == (HourActivity(int(ARRIVAL), 1, 0, 1, 1),)
    assert found.later == {old, new}
    plain = read(store, lambda tx: tx.history.activity(until, until - 600, 5))
    assert plain.hours == (HourActivity(int(until), 1, 0, 0, 0),) and plain.later == set()
    asked = read(store, lambda tx: tx.history.activity(until, until - 600, 5, also=[old, new]))
    assert asked.hours == (HourActivity(int(until), 1, 0, 1, 0),)
