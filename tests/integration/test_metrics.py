"""`/metrics` of a real `postroom serve`, scraped with urllib before and after mail flows: the
counters move by exactly what was sent (SMTP connections and messages per listener, command
latencies, remote delivery outcomes against real smtp-sinks, the inbound checks' results against
a real nsd) and the gauges follow the IMAP and POP3 sessions and the queue."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from . import dns_server as dns_server_module
from . import test_delivery_smtp
from .conftest import ALICE, BOB, DOMAIN, Postroom, wait_until
from .dns_server import DnsServerFactory
from .wire import new_token, simple_message

smtp_sink = test_delivery_smtp.smtp_sink
Sink = test_delivery_smtp.Sink
dns_server = dns_server_module.dns_server

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SERVICES = ("smtp", "submission", "imap", "pop3", "http")
TIMEOUT = 30.0


def scrape(server: Postroom) -> Samples:
    url = f"http://{server.host}:{server.ports['http']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Scraper:
    """Scrapes one server; `moved` is how far a sample went since `mark()`."""

    def __init__(self, server: Postroom) -> None:
        self.server = server
        self.before: Samples = {}
        self.now: Samples = {}

    def mark(self) -> None:
        self.before = self.now = scrape(self.server)

    def take(self) -> Samples:
        self.now = scrape(self.server)
        return self.now

    def moved(self, name: str, **labels: str) -> float:
        return value(self.now, name, **labels) - value(self.before, name, **labels)

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        def check() -> bool:
            self.take()
            return condition()

        wait_until(check, TIMEOUT, what, interval=0.1)


def commands(scraper: Scraper, protocol: str, *names: str) -> dict[str, float]:
    return {
        name: scraper.moved("postroom_command_seconds_count", protocol=protocol, command=name)
        for name in names
    }


def test_counters_move_by_exactly_what_was_sent(
    postroom_factory: Callable[..., Postroom], smtp_sink: Callable[..., Sink]
) -> None:
    delivered, refused, later = smtp_sink(), smtp_sink("-f", "RCPT"), smtp_sink("-r", "RCPT")
    routes = "\n".join(
        f'"{name}" = "127.0.0.1:{sink.port}"'
        for name, sink in (("ok.test", delivered), ("refuse.test", refused), ("later.test", later))
    )
    server = postroom_factory(services=SERVICES, extra=f"[routes]\n{routes}\n")
    scraper = Scraper(server)
    scraper.mark()
    assert value(scraper.now, "postroom_imap_sessions") == 0
    assert value(scraper.now, "postroom_queue_messages", state="deferred") == 0

    # Port 25: N messages, one connection each, and one connection that sends nothing.
    count = 7
    for _ in range(count):
        with server.smtp() as client:
            token = new_token()
            assert client.sendmail("x@outside.test", [BOB], simple_message(token, to=BOB)) == {}
    with server.smtp() as client:
        assert client.noop()[0] == 250
    # Submission: one message for each kind of remote outcome.
    with server.submission(login=ALICE) as client:
        for rcpt in ("carol@ok.test", "dave@refuse.test", "erin@later.test"):
            assert client.sendmail(ALICE, [rcpt], simple_message(new_token(), ALICE, rcpt)) == {}
    server.wait_for_messages(BOB, count)

    def delivery_done() -> bool:
        return all(
            scraper.moved("postroom_delivery_attempts_total", result=result) >= 1
            for result in ("delivered", "failed", "deferred")
        )

    scraper.wait(delivery_done, "one delivered, one failed and one deferred attempt")
    scraper.wait(
        lambda: value(scraper.now, "postroom_queue_messages", state="deferred") == 1,
        "the deferred message alone in the queue",
    )
    now = scraper.now
    moved = scraper.moved
    assert moved("postroom_smtp_connections_total", service="smtp") == count + 1
    assert moved("postroom_smtp_connections_total", service="submission") == 1
    assert moved("postroom_smtp_messages_total", service="smtp", result="accepted") == count
    assert moved("postroom_smtp_messages_total", service="submission", result="accepted") == 3
    for service in ("smtp", "submission"):
        for result in ("rejected", "tempfailed"):
            assert moved("postroom_smtp_messages_total", service=service, result=result) == 0
    assert commands(scraper, "smtp", "MAIL", "RCPT", "DATA", "AUTH", "STARTTLS") == {
        "MAIL": count + 3,
        "RCPT": count + 3,
        "DATA": count + 3,
        "AUTH": 1,
        "STARTTLS": 1,
    }
    assert {
        result: moved("postroom_delivery_attempts_total", result=result)
        for result in ("delivered", "failed", "deferred")
    } == {"delivered": 1, "failed": 1, "deferred": 1}
    assert {
        state: value(now, "postroom_queue_messages", state=state)
        for state in ("queued", "deferred", "held")
    } == {"queued": 0, "deferred": 1, "held": 0}
    # Every accepted message was one job of some group commit, at least.
    assert moved("postroom_commit_batch_size_sum") >= count + 3
    assert 1 <= moved("postroom_commit_batch_size_count") <= moved("postroom_commit_batch_size_sum")
    assert moved("postroom_command_seconds_sum", protocol="smtp", command="DATA") > 0

    # IMAP: two sessions open, then closed; the gauge follows, the commands are counted.
    scraper.mark()
    first = imaplib.IMAP4(server.host, server.ports["imap"], timeout=TIMEOUT)
    second = imaplib.IMAP4(server.host, server.ports["imap"], timeout=TIMEOUT)
    for client in (first, second):
        client.starttls(ssl_context=server.tls_context())
        client.login(BOB, server.passwords[BOB])
    assert value(scraper.take(), "postroom_imap_sessions") == 2
    status, data = first.select("INBOX")
    assert status == "OK" and int(data[0] or 0) == count
    assert first.fetch("1:*", "(FLAGS)")[0] == "OK"
    for client in (first, second):
        client.logout()
    scraper.wait(
        lambda: value(scraper.now, "postroom_imap_sessions") == 0, "the IMAP sessions to end"
    )
    assert commands(scraper, "imap", "STARTTLS", "LOGIN", "SELECT", "FETCH", "LOGOUT") == {
        "STARTTLS": 2,
        "LOGIN": 2,
        "SELECT": 1,
        "FETCH": 1,
        "LOGOUT": 2,
    }

    # POP3: one session (a QUIT with nothing to delete is answered at once, and not timed).
    scraper.mark()
    pop = poplib.POP3(server.host, server.ports["pop3"], timeout=TIMEOUT)
    pop.stls(context=server.tls_context())
    pop.user(BOB)
    pop.pass_(server.passwords[BOB])
    assert value(scraper.take(), "postroom_pop3_sessions") == 1
    assert pop.stat()[0] == count
    pop.retr(1)
    pop.dele(1)
    pop.quit()  # with a deletion to commit: a QUIT that takes work
    scraper.wait(
        lambda: value(scraper.now, "postroom_pop3_sessions") == 0, "the POP3 session to end"
    )
    assert commands(scraper, "pop3", "STLS", "PASS", "RETR", "QUIT") == {
        "STLS": 1,
        "PASS": 1,
        "RETR": 1,
        "QUIT": 1,
    }
    assert value(scraper.now, "postroom_imap_sessions") == 0


SOA = """$TTL 300
@       IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 120
@       IN NS  ns.{origin}.
ns      IN A   127.0.0.1
"""
ZONES = {
    # Mail from loopback passes SPF and so DMARC (aligned); failures are to be refused.
    "pass.test": '@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n_dmarc IN TXT "v=DMARC1; p=reject"\n',
    "reject.test": '@ IN TXT "v=spf1 ip4:192.0.2.1 -all"\n_dmarc IN TXT "v=DMARC1; p=reject"\n',
    DOMAIN: "",
    "test": "",  # every other name under .test: no such name
}


def test_inbound_check_results_and_refusals_are_counted(
    dns_server: DnsServerFactory, postroom_factory: Callable[..., Postroom]
) -> None:
    nsd = dns_server({name: SOA.format(origin=name) + body for name, body in ZONES.items()})
    server = postroom_factory(
        services=("smtp", "http"),
        extra=f'[dns]\nnameservers = ["{nsd.nameserver}"]\n\n[verify]\nenabled = true\n',
    )
    scraper = Scraper(server)
    scraper.mark()
    passing = 3
    for _ in range(passing):
        with server.smtp() as client:
            content = simple_message(new_token(), "bob@pass.test", ALICE)
            assert client.sendmail("bob@pass.test", [ALICE], content) == {}
    with server.smtp() as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("eve@reject.test", [ALICE], simple_message(new_token(), "eve@reject.test"))
    assert refused.value.smtp_code == 550
    scraper.take()
    results = {
        (method, result): scraper.moved("postroom_auth_results_total", method=method, result=result)
        for method in ("spf", "dkim", "dmarc", "arc")
        for result in ("pass", "fail", "none", "temperror", "permerror", "other")
    }
    assert {key: moved for key, moved in results.items() if moved} == {
        ("spf", "pass"): passing,
        ("spf", "fail"): 1,
        ("dkim", "none"): passing + 1,
        ("dmarc", "pass"): passing,
        ("dmarc", "fail"): 1,
        ("arc", "none"): passing + 1,
    }
    moved = scraper.moved
    assert moved("postroom_smtp_messages_total", service="smtp", result="accepted") == passing
    assert moved("postroom_smtp_messages_total", service="smtp", result="rejected") == 1
    assert moved("postroom_smtp_connections_total", service="smtp") == passing + 1
