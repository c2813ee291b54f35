"""The web admin's dashboard on a real `postroom serve` over real HTTPS: its mail per hour stays
exact from one page view to the next while the counts of the hours that are over are kept
between views (services/activity.py) — mail arriving over SMTP, and a message queued hours
ago that fails now (relayed to the server itself, which refuses to relay: 554), show at the
next reload.

The history of earlier hours is written into the data directory before the server starts,
through the store's own repositories, as the spool and the scheduler write it.
"""

from __future__ import annotations

import re
import time

from postroom.model.queue import Envelope, QueuedMessage, Recipient, RecipientState, new_queue_id
from postroom.proto.smtp.params import MailParams
from postroom.storage.backend import direct_store
from postroom.storage.records import HistoryEvent

from .conftest import ALICE, BOB, Factory, Postroom, wait_until
from .web_client import WebClient
from .wire import new_token, simple_message

SERVICES = ("smtp", "submission", "http", "https")
HOUR = 3600
ELSEWHERE = "carol@elsewhere.test"  # routed to the server itself, which refuses to relay
TOTALS = re.compile(
    r'<th scope="row">Total</th><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>'
)


def earlier_history(server: Postroom, now: float) -> str:
    """Three messages delivered here 5 hours ago, one failed 2 hours ago, and one queued 3
    hours ago for ELSEWHERE, deferred until tomorrow; the queued one's ID."""
    store = direct_store(server.data_dir)

    def message(arrival: float, rcpt: Recipient, sender: str = ALICE) -> QueuedMessage:
        envelope = Envelope(sender, MailParams(), "192.0.2.1", "client.test", "ESMTP")
        envelope.arrival = arrival
        return QueuedMessage(new_queue_id(arrival), envelope, b"", 0, 20, [rcpt])

    try:
        with store.transaction() as tx:
            for index in range(3):
                arrival = now - 5 * HOUR + index
                rcpt = Recipient(BOB, BOB, 2, state=RecipientState.DELIVERED)
                delivered = message(arrival, rcpt)
                tx.history.arrived(
                    delivered, [HistoryEvent(delivered.id, arrival, BOB, "delivered", "INBOX")]
                )
            failed = message(now - 3 * HOUR, Recipient("x@gone.test", "x@gone.test", None))
            tx.history.arrived(failed)
            tx.history.record(
                HistoryEvent(failed.id, now - 2 * HOUR, "x@gone.test", "failed", "550 gone", "mx")
            )
            waiting = message(
                now - 3 * HOUR,
                Recipient(
                    ELSEWHERE,
                    ELSEWHERE,
                    None,
                    state=RecipientState.DEFERRED,
                    attempts=1,
                    next_attempt=now + 24 * HOUR,
                ),
                sender="",  # no failure report: what fails here is counted alone
            )
            waiting.blob_id = tx.blobs.add(simple_message(new_token(), ALICE, ELSEWHERE))
            tx.history.arrived(waiting)
            tx.queue.enqueue(waiting)
    finally:
        store.close()
    return waiting.id


def totals(client: WebClient) -> tuple[int, ...]:
    """Received, delivered here, sent out, failed: the dashboard's last 24 hours."""
    page = client.get("/admin/")
    assert page.status == 200, page.body
    match = TOTALS.search(page.body)
    assert match, page.body
    return tuple(int(number) for number in match.groups())


def test_dashboard_counts_stay_exact_as_mail_arrives_and_fails(postroom_factory: Factory) -> None:
    server = postroom_factory(services=SERVICES, start=False)
    server.extra = f'[routes]\n"elsewhere.test" = "127.0.0.1:{server.ports["smtp"]}"\n'
    server.write_config()
    server.run_cli("user", "admin", ALICE)
    waiting = earlier_history(server, time.time())
    server.start()
    admin = WebClient(server)
    admin.login(ALICE, server.passwords[ALICE])
    assert totals(admin) == (5, 3, 0, 1)
    assert totals(admin) == (5, 3, 0, 1)  # from the kept hours now

    # Two messages to bob over SMTP, one to a remote address (deferred: no DNS answers).
    with server.submission(ALICE) as client:
        for _ in range(2):
            client.sendmail(ALICE, [BOB], simple_message(new_token(), ALICE, BOB))
        client.sendmail(ALICE, ["dan@remote.example"], simple_message(new_token(), ALICE, BOB))
    assert totals(admin) == (8, 5, 0, 1)

    # The message queued 3 hours ago is tried now and refused for good.
    server.run_cli("queue", "retry", waiting)
    wait_until(lambda: waiting not in server.queue_list(), 30, "the refused entry to go")
    assert totals(admin) == (8, 5, 0, 2)
    page = admin.get("/admin/").body
    assert f'<a href="/admin/trace?q={waiting}">{waiting}</a>' in page
    assert "554 5.7.1" in page
