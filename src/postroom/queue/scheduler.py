"""The outbound scheduler: due remote recipients → deliveries per destination → results.

Each cycle claims the due recipients (recording the attempt first, see `Queue.claim_due`),
groups them by destination domain, splits a large group over parallel sessions, runs the
deliveries with bounded concurrency (`[delivery] concurrency` sessions at once), then records
every recipient's outcome in one transaction together with the report lines it calls for. The
lines are held in the store until the last destination of that message in this round has
answered; then the sender gets ONE report per kind listing them all (a crash in between only
delays them: held lines are sent when the scheduler starts):
- failed (5xx, or deferred past `give_up_after`): a failure report (RFC 3464) to the sender,
  unless NOTIFY excludes FAILURE (RFC 3461 §4.1); a failed report (null sender) goes to the
  postmaster of our first domain, never back to `<>`;
- deferred past `warn_after`: one delay notice (Action: delayed, Will-Retry-Until);
- delivered with NOTIFY=SUCCESS to a peer without DSN: a success report ("relayed": we handed
  it on); a peer with DSN got the NOTIFY and reports delivery itself (RFC 3461 §5.2.2).

Several nodes on one database share the queue through leases (issue 16 §2): a claim records
this node's name and a lease of LEASE_SECONDS with the attempt, renewed every RENEW_EVERY while
the round runs, so no other node takes those recipients while they are in flight and nothing
is delivered twice in normal operation. A node that dies stops renewing: its leases end and any
node takes the recipients then (RFC 5321 §6.1: at least once, so what was in flight may arrive
twice). At start a node ends the leases still under its own name (nothing of them is in
flight any more), so what it was delivering goes out at once rather than when they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

from postroom.model.queue import QueuedMessage, RecipientOutcome, RecipientState
from postroom.queue.backoff import RetryPolicy
from postroom.queue.bounce import Kind, ReportRecipient
from postroom.queue.reports import Reporter, wants
from postroom.storage.api import Store, Tx
from postroom.storage.records import ClaimedMessage, Lease, StorageFailure

log = logging.getLogger("postroom.queue")

MAX_IDLE_WAIT = 60.0  # seconds between looks at an idle queue
PRUNE_EVERY = 3600.0  # seconds between prunings of the delivery history
PRUNE_SLICE = 5000  # messages forgotten per write
STAMP_CHECK = 1.0  # seconds between checks of the CLI's "queue changed" stamp
STORAGE_RETRY = 10.0  # seconds before another look after the store failed
SESSION_MIN_MESSAGES = 20  # a destination gets another parallel session per this many messages
# A queue lease covers the longest wait of one attempt, RFC 5321 §4.5.3.2.6's 10 minutes for
# the reply to the end of DATA (delivery/smtp.py data_timeout); renewed while the round runs, so
# a round of many sessions keeps its recipients however long it takes, and only a node that
# stopped (or lost the database) lets them go.
LEASE_SECONDS = 600.0
RENEW_EVERY = 60.0

T = TypeVar("T")


Deliver = Callable[
    [str, Sequence[ClaimedMessage], Sequence[bytes]], Awaitable[list[list[RecipientOutcome]]]
]


class Scheduler:
    def __init__(
        self,
        store: Store,
        deliver: Deliver,
        *,
        policy: RetryPolicy,
        reporter: Reporter,
        concurrency: int,
        node: str,
        keep_history: float = 30 * 86400.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.deliver = deliver
        self.policy = policy
        self.reporter = reporter
        self.clock = clock
        self.node = node  # this server's name in the leases it takes
        self.rng = rng or random.Random()
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._rounds: Counter[str] = Counter()  # message → its batches still delivering
        self._wakeup = asyncio.Event()
        self._stamp = store.signals.version("queue")
        self.keep_history = keep_history
        self._pruned_at = -math.inf

    def wake(self) -> None:
        """Look at the queue now (new remote mail, ETRN, `queue retry`)."""
        self._wakeup.set()

    async def run(self) -> None:
        held_sent = False
        while True:
            try:
                if not held_sent:
                    # What this node was delivering when it stopped is due again at once.
                    await self.release_own_leases()
                    # Report lines a crash left held (a round that never finished) go first.
                    await self.store.write(self._send_all_held)
                    held_sent = True
                await self._cycle()
            except StorageFailure as failure:
                # A full disk or a failing database: one line, and another look later. What
                # a round claimed and could not record is retried at its next attempt.
                log.warning("queue run failed, next look in %gs: %s", STORAGE_RETRY, failure)
                await self._idle(STORAGE_RETRY)

    async def release_own_leases(self) -> int:
        """End the leases still held under this node's name (it restarted: none of those
        attempts runs any more); one log line with how many."""
        now = self.clock()
        count = await self.store.write(lambda tx: tx.queue.release_leases(self.node, now))
        log.info("queue node %s: released %d lease(s) left from before its start", self.node, count)
        return count

    async def _cycle(self) -> None:
        """Deliver what is due, or wait until something may be."""
        self._wakeup.clear()
        now = self.clock()
        claims = await self.store.write(functools.partial(self._claim, now=now))
        if claims:
            batches = [
                (domain, batch)
                for domain, items in claims.items()
                for batch in split_batches(items, self._concurrency)
            ]
            # A message waits for all its destinations before its reports go out.
            self._rounds = Counter(item.message.id for _, b in batches for item in b)
            log.info(
                "queue node %s: leased %d recipient(s) of %d message(s) for %gs",
                self.node,
                sum(len(item.recipients) for _, b in batches for item in b),
                len(self._rounds),
                LEASE_SECONDS,
            )
            renewing = asyncio.get_running_loop().create_task(self._renew_leases())
            try:
                await asyncio.gather(*(self._deliver_domain(d, b) for d, b in batches))
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
            return
        if now - self._pruned_at >= PRUNE_EVERY:
            await self.prune_history(now)
        due = await self.store.read(lambda tx: tx.queue.next_due())
        wait = MAX_IDLE_WAIT if due is None else min(MAX_IDLE_WAIT, due - self.clock())
        await self._idle(wait)

    async def _renew_leases(self) -> None:
        """Every RENEW_EVERY seconds while a round runs: this node's leases last LEASE_SECONDS
        more (a failed renewal is tried again at the next; the lease is long enough)."""
        while True:
            await asyncio.sleep(RENEW_EVERY)
            renew = functools.partial(_renew, node=self.node, until=self.clock() + LEASE_SECONDS)
            try:
                await self.store.write(renew, durable=False)
            except StorageFailure as failure:
                log.warning("queue node %s: leases not renewed: %s", self.node, failure)

    async def prune_history(self, now: float) -> int:
        """Forget the delivery history of messages older than `keep_history`, a slice per
        write so other work goes on in between; how many messages were forgotten."""
        self._pruned_at = now
        before = now - self.keep_history
        total = 0
        while True:
            pruned = await self.store.write(lambda tx: tx.history.prune(before, PRUNE_SLICE))
            total += pruned
            if pruned < PRUNE_SLICE:
                return total

    async def _idle(self, seconds: float) -> None:
        """Sleep until woken, `seconds` pass, or the CLI's queue stamp changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            # asyncio.timeout, not wait_for: on 3.11 wait_for returns normally when it is
            # cancelled in the same loop turn as the event is set, and the cancellation that
            # stops the server is lost (the task runs on, and shutdown waits forever).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(STAMP_CHECK, remaining)):
                    await self._wakeup.wait()
                return
            stamp = self.store.signals.version("queue")
            if stamp != self._stamp:
                self._stamp = stamp
                return

    async def _deliver_domain(self, domain: str, claimed: list[ClaimedMessage]) -> None:
        async with self._slots:
            # One trip to the reader thread for the whole batch, not one per message.
            contents = await self.store.read(functools.partial(_contents, claimed=claimed))
            try:
                results = await self.deliver(domain, claimed, contents)
            except Exception as error:
                log.exception("delivery to %s crashed", domain)
                reply = f"451 4.3.0 local error during delivery: {type(error).__name__}"
                results = [
                    [
                        RecipientOutcome(r.address, "deferred", reply, "4.3.0", None)
                        for r in item.recipients
                    ]
                    for item in claimed
                ]
            now = self.clock()
            last: set[str] = set()
            for item in claimed:
                self._rounds[item.message.id] -= 1
                if self._rounds[item.message.id] <= 0:
                    last.add(item.message.id)
            await self.store.write(
                functools.partial(
                    self._record_all,
                    claimed=claimed,
                    contents=contents,
                    results=results,
                    now=now,
                    last=last,
                )
            )

    def _claim(self, tx: Tx, now: float) -> dict[str, list[ClaimedMessage]]:
        def next_attempt(arrival: float, attempts: int) -> float:
            return self.policy.next_attempt(arrival, now, attempts, self.rng)

        return tx.queue.claim_due(now, next_attempt, lease=Lease(self.node, now + LEASE_SECONDS))

    def _record_all(
        self,
        tx: Tx,
        claimed: list[ClaimedMessage],
        contents: Sequence[bytes],
        results: list[list[RecipientOutcome]],
        now: float,
        last: set[str],
    ) -> None:
        for item, content, outcomes in zip(claimed, contents, results, strict=True):
            self._record(tx, item, content, outcomes, now, item.message.id in last)

    def _record(
        self,
        tx: Tx,
        claimed: ClaimedMessage,
        content: bytes,
        outcomes: list[RecipientOutcome],
        now: float,
        last_round: bool,
    ) -> None:
        message = claimed.message
        if not tx.queue.still_queued(message.id):
            return
        arrival = message.envelope.arrival
        reports: dict[Kind, list[ReportRecipient]] = {"failure": [], "delay": [], "success": []}
        for rcpt, outcome in zip(claimed.recipients, outcomes, strict=True):
            state, reply, status = self._state_for(outcome, arrival, now)
            tx.queue.record_attempt(
                rcpt, state, reply, now, outcome.remote_mta, ip=outcome.remote_ip, tls=outcome.tls
            )
            log.info(
                "%s id=%s to=<%s> relay=%s reply=%s",
                state,
                message.id,
                rcpt.address,
                outcome.remote_mta or "-",
                reply,
            )
            entry = ReportRecipient(
                final_recipient=rcpt.address,
                original_recipient=rcpt.orcpt,
                action="failed",
                status=status,
                remote_mta=outcome.remote_mta,
                diagnostic=reply,
                last_attempt=now,
            )
            if state is RecipientState.FAILED and wants(rcpt.notify, "FAILURE", default=True):
                reports["failure"].append(entry)
            elif (
                state is RecipientState.DELIVERED
                and not outcome.dsn_passed
                and wants(rcpt.notify, "SUCCESS", default=False)
            ):
                reports["success"].append(dataclasses.replace(entry, action="relayed"))
            elif (
                state is RecipientState.DEFERRED
                and self.policy.warning_due(arrival, now, rcpt.delay_notified)
                and wants(rcpt.notify, "DELAY", default=True)
            ):
                tx.queue.mark_delay_notified(rcpt)
                reports["delay"].append(
                    dataclasses.replace(
                        entry, action="delayed", will_retry_until=self.policy.expires(arrival)
                    )
                )
        for kind, recipients in reports.items():
            if recipients:
                lines = [json.dumps(dataclasses.asdict(r)) for r in recipients]
                tx.queue.hold_report_lines(message.id, kind, lines)
        if last_round:
            self._send_held(tx, message, now, content)
        # Failures are reported above, in this same transaction: they are final too.
        tx.queue.finish_if_done(message.id, (RecipientState.DELIVERED, RecipientState.FAILED))

    def _send_held(
        self, tx: Tx, message: QueuedMessage, now: float, content: bytes | None = None
    ) -> None:
        """One report per kind with every line held for the message (RFC 3464 §2)."""
        for kind, lines in tx.queue.take_report_lines(message.id).items():
            recipients = [ReportRecipient(**json.loads(line)) for line in lines]
            self.reporter.send(tx, cast(Kind, kind), message, recipients, now, content)

    def _send_all_held(self, tx: Tx) -> None:
        now = self.clock()
        for message_id in tx.queue.with_held_reports():
            message = tx.queue.load(message_id)
            if message is None:
                continue
            self._send_held(tx, message, now)
            tx.queue.finish_if_done(message_id, (RecipientState.DELIVERED, RecipientState.FAILED))

    def _state_for(
        self, outcome: RecipientOutcome, arrival: float, now: float
    ) -> tuple[RecipientState, str, str]:
        if outcome.result == "delivered":
            return RecipientState.DELIVERED, outcome.reply, outcome.status
        if outcome.result == "failed":
            return RecipientState.FAILED, outcome.reply, outcome.status
        if self.policy.expired(arrival, now):
            # RFC 3463 4.4.7 → permanent: the message expired in the queue.
            return (
                RecipientState.FAILED,
                f"{outcome.reply} (gave up: too long in the queue)",
                ("4.4.7" if outcome.status.startswith("4") else outcome.status),
            )
        return RecipientState.DEFERRED, outcome.reply, outcome.status


def split_batches(
    items: Sequence[T], sessions: int, min_per_session: int = SESSION_MIN_MESSAGES
) -> list[list[T]]:
    """Split one destination's messages into at most `sessions` batches, in queue order.

    Like Postfix's per-destination concurrency: a backlog for one domain (a smarthost, a big
    provider) goes out over several connections instead of one, but every batch holds at least
    `min_per_session` messages: a small backlog keeps to one session.
    """
    count = max(1, min(sessions, len(items) // min_per_session))
    size, larger = divmod(len(items), count)
    batches: list[list[T]] = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < larger else 0)
        batches.append(list(items[start:end]))
        start = end
    return [batch for batch in batches if batch]


def _renew(tx: Tx, node: str, until: float) -> int:
    return tx.queue.renew_leases(node, until)


def _contents(tx: Tx, claimed: Sequence[ClaimedMessage]) -> list[bytes]:
    return [item.message.prefix + tx.blobs.read(item.message.blob_id) for item in claimed]
