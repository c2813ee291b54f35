"""Outbound delivery end to end: `postroom serve` relays through a REAL nsd to REAL smtp-sink.

The whole chain runs: submission → queue → scheduler → MX lookup → SMTP client → peer, and the
reports (RFC 3464 failure and delay notices) come back into the sender's mailbox.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator

import pytest

from . import test_delivery_smtp
from .conftest import ALICE, Postroom, free_ports, wait_until
from .dns_server import DnsServer, run_dns_server
from .wire import new_token, simple_message

smtp_sink = test_delivery_smtp.smtp_sink
Sink = test_delivery_smtp.Sink

SOA = test_delivery_smtp.SOA
REMOTE_ZONE = (
    SOA.format(origin="remote.test")
    + """
@           IN MX 10 mx.remote.test.
mx          IN A  127.0.0.1
other       IN MX 10 mx.remote.test.
down        IN MX 10 mx-down.remote.test.
mx-down     IN A  127.0.0.2
"""
)
CAROL = "carol@remote.test"
ERIN = "erin@other.remote.test"
DAVE = "dave@down.remote.test"


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    with run_dns_server(tmp_path_factory.mktemp("nsd"), {"remote.test": REMOTE_ZONE}) as server:
        yield server


def relay_server(
    factory: Callable[..., Postroom], dns: DnsServer, port: int, queue: str = ""
) -> Postroom:
    extra = (
        f'[dns]\nnameservers = ["{dns.nameserver}"]\n\n[delivery]\nport = {port}\n\n'
        f"[queue]\n{queue}\n"
    )
    return factory(extra=extra)


def submit(server: Postroom, *recipients: str, options: tuple[str, ...] = ()) -> str:
    token = new_token()
    with server.submission() as s:
        refused = s.sendmail(
            ALICE,
            list(recipients),
            simple_message(token, ALICE, recipients[0]),
            rcpt_options=list(options),
        )
        assert refused == {}
    return token


def reports(server: Postroom) -> list[email.message.EmailMessage]:
    found = []
    for raw in server.export(ALICE):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        if parsed.get_content_type() == "multipart/report":
            found.append(parsed)
    return found


def status_part(report: email.message.EmailMessage) -> str:
    for part in report.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                return "\n".join(str(p) for p in payload)
            return str(payload)
    raise AssertionError("no message/delivery-status part")


def test_relayed_mail_reaches_the_remote_mx_and_leaves_the_queue(
    postroom_factory: Callable[..., Postroom], dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    sink = smtp_sink()
    server = relay_server(postroom_factory, dns, sink.port)
    token = submit(server, CAROL)
    wait_until(lambda: any(token.encode() in m for m in sink.messages()), 30, "the sink to get it")
    wait_until(lambda: CAROL not in server.queue_list(), 30, "the queue entry to go")
    assert reports(server) == []  # no NOTIFY=SUCCESS asked: no report


def test_remote_550_returns_a_failure_report_to_the_sender(
    postroom_factory: Callable[..., Postroom], dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    sink = smtp_sink("-f", "RCPT")
    server = relay_server(postroom_factory, dns, sink.port)
    token = submit(server, CAROL, ALICE)
    [report] = wait_until(lambda: reports(server), 30, "the failure report")
    assert report["From"].addresses[0].username == "MAILER-DAEMON"
    status = status_part(report)
    assert "Action: failed" in status
    assert f"Final-Recipient: rfc822; {CAROL}" in status
    assert "Status: 5." in status
    assert ALICE not in status  # only the failed recipient is listed
    assert token in report.as_string()  # the original is returned
    wait_until(lambda: CAROL not in server.queue_list(), 30, "the queue entry to go")


def test_failures_at_two_domains_make_one_report(
    postroom_factory: Callable[..., Postroom], dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    """Each destination is a separate delivery; the sender still gets one report for both."""
    sink = smtp_sink("-f", "RCPT")
    server = relay_server(postroom_factory, dns, sink.port)
    submit(server, CAROL, ERIN)
    wait_until(lambda: server.run_cli("queue", "list").stdout == "", 30, "done")
    [report] = reports(server)
    status = status_part(report)
    assert f"Final-Recipient: rfc822; {CAROL}" in status
    assert f"Final-Recipient: rfc822; {ERIN}" in status


def test_unreachable_host_defers_warns_then_gives_up(
    postroom_factory: Callable[..., Postroom], dns: DnsServer
) -> None:
    port = free_ports(1)[0]
    server = relay_server(
        postroom_factory, dns, port, 'retry = ["1s"]\nwarn_after = "2s"\ngive_up_after = "6s"'
    )
    submit(server, DAVE)
    wait_until(lambda: "deferred" in server.queue_list(), 30, "the recipient to be deferred")

    def both_reports() -> list[str] | None:
        found = [status_part(r) for r in reports(server)]
        return found if len(found) >= 2 else None

    delay, failure = wait_until(both_reports, 40, "a delay notice, then a failure report")
    assert "Action: delayed" in delay and "Will-Retry-Until:" in delay
    assert "Action: failed" in failure and "Status: 4.4.7" in failure
    assert f"Final-Recipient: rfc822; {DAVE}" in failure
    wait_until(lambda: DAVE not in server.queue_list(), 30, "the queue entry to go")


def test_deferred_mail_goes_out_after_queue_retry(
    postroom_factory: Callable[..., Postroom], dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    port = free_ports(1)[0]
    server = relay_server(postroom_factory, dns, port, 'retry = ["1h"]')
    token = submit(server, CAROL)
    wait_until(lambda: "deferred" in server.queue_list(), 30, "the recipient to be deferred")
    sink = smtp_sink(port=port)
    server.run_cli("queue", "retry", "--all")
    wait_until(lambda: any(token.encode() in m for m in sink.messages()), 30, "the retry")
    wait_until(lambda: CAROL not in server.queue_list(), 30, "the queue entry to go")
    assert server.run_cli("queue", "list").stdout == ""


def test_success_notice_when_asked_and_the_peer_lacks_dsn(
    postroom_factory: Callable[..., Postroom], dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    sink = smtp_sink("-N")  # no DSN announced: NOTIFY cannot travel on, so we report "relayed"
    server = relay_server(postroom_factory, dns, sink.port)
    submit(server, CAROL, options=("NOTIFY=SUCCESS",))
    [report] = wait_until(lambda: reports(server), 30, "the success report")
    status = status_part(report)
    assert "Action: relayed" in status
    assert f"Final-Recipient: rfc822; {CAROL}" in status


def test_no_success_notice_from_us_when_the_peer_has_dsn(
    postroom_factory: Callable[..., Postroom], dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    """RFC 3461 §5.2.2: the peer got NOTIFY=SUCCESS with the message and reports delivery."""
    sink = smtp_sink()  # announces DSN
    server = relay_server(postroom_factory, dns, sink.port)
    token = submit(server, CAROL, options=("NOTIFY=SUCCESS",))
    wait_until(lambda: any(token.encode() in m for m in sink.messages()), 30, "the sink to get it")
    # The entry leaves the queue in the same transaction that would have queued a report.
    wait_until(lambda: CAROL not in server.queue_list(), 30, "the queue entry to go")
    assert reports(server) == []


def test_kill_9_during_delivery_loses_nothing(
    postroom_factory: Callable[..., Postroom], dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    """The attempt is recorded before the peer is contacted; a crash mid-delivery means a
    retry after restart (at worst a duplicate, RFC 5321 §6.1), never a lost message."""
    # Holds every DATA for 10 s: time to see the attempt (two CLI runs) and crash in the middle.
    sink = smtp_sink("-w", "10")
    server = relay_server(postroom_factory, dns, sink.port, 'retry = ["1s"]')
    token = submit(server, CAROL)
    wait_until(lambda: "attempts=1" in show_all(server), 30, "the first attempt to be recorded")
    assert not any(token.encode() in m for m in sink.messages())  # still in the middle
    server.kill()
    server.restart()
    wait_until(lambda: any(token.encode() in m for m in sink.messages()), 60, "the retry")
    wait_until(lambda: CAROL not in server.queue_list(), 60, "the queue entry to go")


def show_all(server: Postroom) -> str:
    listing = server.queue_list()
    ids = [word for word in listing.split() if len(word) == 17 and word.isalnum()]
    return "".join(server.run_cli("queue", "show", i, check=False).stdout for i in ids)
