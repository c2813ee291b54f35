"""Storage contract, the queue, history and accounts: what every backend guarantees delivery.

Written against `storage.api` only and run for every backend in conftest.BACKENDS: state is per
recipient, an attempt is counted before it is made, a manual retry leaves the schedule alone,
history outlives the queue entry until pruned, aliases resolve as documented, and a write that
was answered survives a kill -9 of the process that made it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from postroom.model.queue import (
    Envelope,
    QueuedMessage,
    Recipient,
    RecipientState,
    new_queue_id,
)
from postroom.proto.smtp.params import MailParams
from postroom.storage.api import Store, Tx
from postroom.storage.records import ClaimedMessage, HistoryEvent, Lease, Resolution, StoreError

from .conftest import Backend, read, write
from .postgres_server import PASSWORD

CONTENT = b"Subject: hello\r\n\r\nHi.\r\n"
ARRIVAL = 1_800_000_000.0
LOCAL = frozenset({"example.test"})


def queued(
    tx: Tx, message_id: str, *addresses: str, local: dict[str, int] | None = None
) -> QueuedMessage:
    envelope = Envelope(
        "sender@example.test", MailParams(), "192.0.2.1", "client", "ESMTPS", arrival=ARRIVAL
    )
    recipients = [Recipient(a, a, None) for a in addresses]
    recipients += [Recipient(a, a, user) for a, user in (local or {}).items()]
    message = QueuedMessage(message_id, envelope, b"Received: x\r\n", 0, len(CONTENT), recipients)
    message.blob_id = tx.blobs.add(CONTENT)
    tx.history.arrived(message)
    tx.queue.enqueue(message)
    return message


LEASE = 600.0


def lease_at(now: float, node: str = "node-a") -> Lease:
    """A lease `node` takes at `now`, as the scheduler's (LEASE_SECONDS)."""
    return Lease(node, now + LEASE)


def every_hour(arrival: float, attempts: int) -> float:
    """A schedule for the tests: the n-th scheduled attempt is followed by n hours' wait."""
    return ARRIVAL + attempts * 3600.0


def claim(store: Store, now: float, node: str = "node-a") -> dict[str, list[ClaimedMessage]]:
    """What `node` claims at `now` (on the schedule `every_hour`, with a lease of LEASE)."""
    return write(store, lambda tx: tx.queue.claim_due(now, every_hour, lease=lease_at(now, node)))


def test_state_is_per_recipient_and_attempts_are_counted_first(store: Store) -> None:
    write(store, lambda tx: queued(tx, "Q1", "a@one.test", "b@one.test", "c@two.test"))
    claims = claim(store, ARRIVAL)
    assert sorted(claims) == ["one.test", "two.test"]
    (one,) = claims["one.test"]
    assert [r.address for r in one.recipients] == ["a@one.test", "b@one.test"]
    assert all(r.attempts == 1 for r in one.recipients)
    assert one.message.blob_size == len(CONTENT)
    # Counted, rescheduled and leased before delivery: due to nobody until the lease ends.
    assert claim(store, ARRIVAL + 1) == {}
    assert read(store, lambda tx: tx.queue.next_due()) == ARRIVAL + LEASE
    (two,) = claims["two.test"]

    def outcomes(tx: Tx) -> None:
        a, b = one.recipients
        tx.queue.record_attempt(a, RecipientState.DELIVERED, "250 ok", ARRIVAL + 5, "mx.one.test")
        tx.queue.record_attempt(b, RecipientState.FAILED, "550 no such user", ARRIVAL + 5)
        (c,) = two.recipients
        tx.queue.record_attempt(c, RecipientState.DEFERRED, "451 later", ARRIVAL + 6)

    write(store, outcomes)
    message = read(store, lambda tx: tx.queue.load("Q1"))
    assert message is not None
    assert [(r.address, r.state, r.last_reply) for r in message.recipients] == [
        ("a@one.test", RecipientState.DELIVERED, "250 ok"),
        ("b@one.test", RecipientState.FAILED, "550 no such user"),
        ("c@two.test", RecipientState.DEFERRED, "451 later"),
    ]
    final = (RecipientState.DELIVERED, RecipientState.FAILED)
    assert not write(store, lambda tx: tx.queue.finish_if_done("Q1", final))
    entries = read(store, lambda tx: tx.queue.entries())
    assert [(e.id, len(e.recipients)) for e in entries] == [("Q1", 3)]


def test_history_outlives_the_queue_entry_until_pruned(store: Store) -> None:
    q2 = new_queue_id(ARRIVAL)
    message = write(store, lambda tx: queued(tx, q2, "a@one.test"))
    (taken,) = claim(store, ARRIVAL)["one.test"]

    def delivered(tx: Tx) -> bool:
        (rcpt,) = taken.recipients
        tx.queue.record_attempt(rcpt, RecipientState.DEFERRED, "451 busy", ARRIVAL + 1)
        tx.queue.record_attempt(rcpt, RecipientState.DELIVERED, "250 ok", ARRIVAL + 2, "mx")
        return tx.queue.finish_if_done(q2)

    assert write(store, delivered)
    assert read(store, lambda tx: tx.queue.load(q2)) is None
    assert not read(store, lambda tx: tx.blobs.exists(message.blob_id))
    trace = read(store, lambda tx: tx.history.trace(q2.lower()))
    assert trace is not None and (trace.sender, trace.client_addr) == (
        "sender@example.test",
        "192.0.2.1",
    )
    assert [(e.event, e.reply, e.relay) for e in trace.events] == [
        ("deferred", "451 busy", None),
        ("delivered", "250 ok", "mx"),
    ]
    assert write(store, lambda tx: tx.history.prune(ARRIVAL - 1)) == 0
    assert write(store, lambda tx: tx.history.prune(ARRIVAL + 1)) == 1
    assert read(store, lambda tx: tx.history.trace(q2)) is None


def test_a_manual_retry_keeps_the_schedule(store: Store) -> None:
    write(store, lambda tx: queued(tx, "Q3", "a@one.test"))
    (taken,) = claim(store, ARRIVAL)["one.test"]
    (rcpt,) = taken.recipients
    write(store, lambda tx: tx.queue.record_attempt(rcpt, RecipientState.DEFERRED, "451", ARRIVAL))
    planned = ARRIVAL + 3600.0
    assert read(store, lambda tx: tx.queue.next_due()) == planned
    now = ARRIVAL + 60
    assert write(store, lambda tx: tx.queue.retry("Q3", now)) == 1
    assert read(store, lambda tx: tx.queue.next_due()) == now
    (early,) = claim(store, now)["one.test"]
    assert early.recipients[0].attempts == 2
    (rcpt,) = early.recipients
    write(store, lambda tx: tx.queue.record_attempt(rcpt, RecipientState.DEFERRED, "451", now))
    assert read(store, lambda tx: tx.queue.next_due()) == planned  # still the planned one
    (scheduled,) = claim(store, planned)["one.test"]
    assert scheduled.recipients[0].attempts == 3
    (rcpt,) = scheduled.recipients
    write(store, lambda tx: tx.queue.record_attempt(rcpt, RecipientState.DEFERRED, "451", planned))
    # The schedule counts its own attempts only: the second scheduled one waits 2 hours.
    assert read(store, lambda tx: tx.queue.next_due()) == ARRIVAL + 2 * 3600.0
    assert write(store, lambda tx: tx.queue.retry_domain("ONE.test", planned + 1)) == 1
    assert write(store, lambda tx: tx.queue.retry_domain("one.test", planned + 2)) == 0  # due


def test_held_messages_are_not_claimed_and_release_keeps_the_schedule(store: Store) -> None:
    write(store, lambda tx: queued(tx, "Q4", "a@one.test", "b@one.test"))
    assert write(store, lambda tx: tx.queue.hold("q4")) == 2
    assert claim(store, ARRIVAL + 10) == {}
    assert read(store, lambda tx: tx.queue.next_due()) is None
    assert write(store, lambda tx: tx.queue.release("Q4", ARRIVAL + 20)) == 2
    claims = claim(store, ARRIVAL + 20)
    assert [r.address for r in claims["one.test"][0].recipients] == ["a@one.test", "b@one.test"]
    with pytest.raises(StoreError):
        write(store, lambda tx: tx.queue.hold("NOSUCH"))


def test_a_deleted_entry_goes_with_its_blob_and_is_remembered(store: Store) -> None:
    message = write(store, lambda tx: queued(tx, "Q5", "a@one.test"))
    assert read(store, lambda tx: tx.queue.still_queued("Q5"))
    write(store, lambda tx: tx.queue.delete("q5"))
    assert not read(store, lambda tx: tx.queue.still_queued("Q5"))
    assert not read(store, lambda tx: tx.blobs.exists(message.blob_id))
    trace = read(store, lambda tx: tx.history.trace("Q5"))
    assert trace is not None and [e.event for e in trace.events] == ["deleted"]
    with pytest.raises(StoreError):
        write(store, lambda tx: tx.queue.delete("Q5"))


def test_report_lines_are_held_and_taken_once(store: Store) -> None:
    write(store, lambda tx: queued(tx, "Q6", "a@one.test"))
    write(store, lambda tx: tx.queue.hold_report_lines("Q6", "failure", ["{1}", "{2}"]))
    write(store, lambda tx: tx.queue.hold_report_lines("Q6", "delay", ["{3}"]))
    assert read(store, lambda tx: tx.queue.with_held_reports()) == ["Q6"]
    assert write(store, lambda tx: tx.queue.take_report_lines("Q6")) == {
        "failure": ["{1}", "{2}"],
        "delay": ["{3}"],
    }
    assert write(store, lambda tx: tx.queue.take_report_lines("Q6")) == {}


def test_local_recipients_wait_for_local_delivery(store: Store) -> None:
    def local(tx: Tx) -> QueuedMessage:
        user = tx.accounts.add_user("bob@example.test", "h", "s")
        return queued(tx, "Q7", local={"bob@example.test": user})

    write(store, local)
    assert read(store, lambda tx: tx.queue.with_local_work()) == ["Q7"]
    assert claim(store, ARRIVAL) == {}  # not remote


def test_aliases_resolve_recursively_with_catch_all_and_loops(store: Store) -> None:
    def setup(tx: Tx) -> int:
        alice = tx.accounts.add_user("alice@example.test", "h", "s")
        team = ["alice@example.test", "ext@remote.test", "loop@example.test"]
        tx.accounts.add_alias("team@example.test", team)
        tx.accounts.add_alias("loop@example.test", ["team@example.test"])
        tx.accounts.add_alias("@example.test", ["alice@example.test"])
        return alice

    alice = write(store, setup)

    def resolve(address: str) -> Resolution:
        return read(store, lambda tx: tx.accounts.resolve(address, LOCAL))

    assert resolve("Team@Example.test") == Resolution(
        (("alice@example.test", alice),), ("ext@remote.test",)
    )
    assert resolve("anyone@example.test").local_users == (("alice@example.test", alice),)
    assert resolve("x@remote.test") == Resolution((), ("x@remote.test",))
    assert read(store, lambda tx: tx.accounts.list_aliases())["loop@example.test"] == [
        "team@example.test"
    ]
    write(store, lambda tx: tx.accounts.delete_alias("@example.test"))
    assert resolve("anyone@example.test").empty
    with pytest.raises(StoreError):
        write(store, lambda tx: tx.accounts.delete_alias("@example.test"))


def test_passwords_change_and_users_list(store: Store) -> None:
    write(store, lambda tx: tx.accounts.add_user("Bob@Example.test", "h1", "s1"))
    write(store, lambda tx: tx.accounts.set_password("bob@example.test", "h2", "s2"))
    user = read(store, lambda tx: tx.accounts.get_user("BOB@example.test"))
    assert user is not None and (user.address, user.password_hash, user.scram) == (
        "bob@example.test",
        "h2",
        "s2",
    )
    assert [u.address for u in read(store, lambda tx: tx.accounts.list_users())] == [
        "bob@example.test"
    ]
    with pytest.raises(StoreError):
        write(store, lambda tx: tx.accounts.set_password("nobody@example.test", "h", "s"))


def test_signals_tell_a_server_what_the_cli_changed(backend: Backend) -> None:
    store = backend.server()
    direct = backend.direct()
    try:
        before = store.signals.version("accounts")
        direct.signals.mark("accounts")
        assert store.signals.version("accounts") != before
        assert store.signals.version("queue") == store.signals.version("queue")
        with direct.transaction() as tx:
            tx.accounts.add_user("carol@example.test", "h", "s")
        # The CLI's commit is seen by the server's next read.
        assert read(store, lambda tx: tx.accounts.get_user("carol@example.test")) is not None
    finally:
        direct.close()
        store.close()


def test_events_of_a_message_whose_arrival_is_not_remembered_are_not_kept(store: Store) -> None:
    orphan = new_queue_id(ARRIVAL)
    event = HistoryEvent(orphan, ARRIVAL, "a@one.test", "delivered", "250 ok")
    write(store, lambda tx: tx.history.record(event))
    assert read(store, lambda tx: tx.history.trace(orphan)) is None


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from postroom.storage.backend import server_store

    async def main() -> None:
        place, dsn, password = sys.argv[1:4]
        store = server_store(Path(place), database=dsn or None, password=password)
        store.open()
        user = await store.write(lambda tx: tx.accounts.add_user("k@example.test", "h", "s"))
        inbox = await store.read(lambda tx: tx.mailboxes.require(user, "INBOX").id)
        print("ready", flush=True)

        def one(tx):
            blob = tx.blobs.add(b"Subject: n\\r\\n\\r\\nbody\\r\\n")
            return tx.messages.append(inbox, blob, size=21, internal_date=1.0)

        while True:
            uids = await asyncio.gather(*(store.write(one) for _ in range(8)))
            print(" ".join(map(str, uids)), flush=True)

    asyncio.run(main())
    """
)


def test_an_answered_write_survives_kill_9(backend: Backend) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(backend.place), backend.dsn, PASSWORD],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    acknowledged: list[int] = []
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while len(acknowledged) < 400 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            acknowledged += [int(uid) for uid in line.split()]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert len(acknowledged) >= 400
    store = backend.server()
    try:
        user = read(store, lambda tx: tx.accounts.get_user("k@example.test"))
        assert user is not None
        inbox = read(store, lambda tx: tx.mailboxes.require(user.id, "INBOX").id)
        present = {s.uid for s in read(store, lambda tx: tx.messages.states(inbox))}
    finally:
        store.close()
    assert set(acknowledged) <= present  # nothing acknowledged is lost
    assert len(acknowledged) == len(set(acknowledged))


def test_entries_are_counted_once_by_their_weightiest_state(store: Store) -> None:
    assert read(store, lambda tx: tx.queue.state_counts()) == {}
    write(store, lambda tx: queued(tx, "Q6", "a@one.test", "b@two.test"))
    write(store, lambda tx: queued(tx, "Q7", "c@one.test"))
    write(store, lambda tx: queued(tx, "Q8", "d@three.test"))
    assert read(store, lambda tx: tx.queue.state_counts()) == {"queued": 3}
    claims = claim(store, ARRIVAL)

    def outcomes(tx: Tx) -> None:
        (q6,) = claims["two.test"]
        tx.queue.record_attempt(q6.recipients[0], RecipientState.DEFERRED, "451", ARRIVAL)
        q6_one, q7 = claims["one.test"]
        tx.queue.record_attempt(q6_one.recipients[0], RecipientState.DELIVERED, "250", ARRIVAL)
        tx.queue.record_attempt(q7.recipients[0], RecipientState.DEFERRED, "451", ARRIVAL)

    write(store, outcomes)
    write(store, lambda tx: tx.queue.hold("Q7"))
    # Q6: one delivered, one deferred; Q7: held (deferred before); Q8: not tried yet.
    assert read(store, lambda tx: tx.queue.state_counts()) == {
        "queued": 1,
        "deferred": 1,
        "held": 1,
    }
