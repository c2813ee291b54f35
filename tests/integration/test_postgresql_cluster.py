"""Two postroom nodes on one PostgreSQL behind a real HAProxy (issue 16 §3, first bullet).

PostgreSQL runs from Debian's binaries (tests/storage/postgres_server.py), HAProxy in TCP mode
in front of both nodes on loopback (tests/integration/haproxy.py), sending a version 2 PROXY
header from 127.0.0.66, the nodes' only trusted address; the clients connect to HAProxy alone.
It balances SMTP, submission and IMAPS over both nodes (round robin, a health check every
300 ms, `option redispatch` and `retries` so a dead node's connections go to the other), and
has one frontend per node and service to reach a given node on purpose. Remote mail is routed
([routes]) to an smtp-sink that keeps every message it is given.

The crash test sends a load of numbered messages from a few client threads, a third of them to
the remote domain through submission, the rest to a local mailbox over SMTP; once a third are
acknowledged, node b is killed with SIGKILL. A client whose connection breaks or who gets a
4xx tries again through HAProxy, which sends it to the survivor. Then, counted:
- every acknowledged local number is in the mailbox read over IMAP through the survivor at
  once (250 only after the commit); a local duplicate needs a client that sent that number
  again (its first session broke after the commit, before the 250), so there are at most as
  many as client retries, and only of retried numbers;
- the remote mail the survivor accepted after the kill is relayed by it alone;
- node b is started again and rejoins: it answers through HAProxy with the same mailbox, and
  every acknowledged remote number reaches the sink: what b had claimed when it died is
  relayed again (after the restart gave its claims back, or once they fell due again, RETRY);
  a remote duplicate is a number a client sent again or one whose first copy reached the sink
  before the kill (b handed it over and died before recording it: RFC 5321 §6.1 at least
  once); none is lost;
- HAProxy gives b sessions again, and mail it accepts is delivered, local and remote.
The sink answers some DATA commands late (smtp-sink -W), so relays are in flight at the kill.
"""

from __future__ import annotations

import collections
import imaplib
import queue
import re
import shutil
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from storage.postgres_server import PASSWORD, PostgresServer

from . import test_delivery_smtp, test_postgresql_nodes
from .conftest import BOB, Postroom, free_ports, wait_until
from .haproxy import BALANCER, Balancer, accept_proxy, start_haproxy

postgres = test_postgresql_nodes.postgres
smtp_sink = test_delivery_smtp.smtp_sink
Sink = test_delivery_smtp.Sink

SERVICES = ("smtp", "submission", "imaps")
BOB_PASSWORD = "bob-in-the-cluster"
CAROL = "carol@remote.test"
SENDER = "loader@client.test"
NODES = ("a", "b")
LOAD = 240  # numbered messages in the crash test; every third one is remote
CLIENTS = 4  # client threads sending them
KILL_AFTER = LOAD // 3  # acknowledged messages before the kill
RETRY = 30.0  # seconds: [queue] retry, so a dead node's claimed mail falls due again soon
# smtp-sink answers one DATA in five or so after a second or more: relays are in flight at the
# kill, and the whole relay stays quick.
SINK_DELAY = "data:1:20"
LOAD_TIMEOUT = 120.0
_NUMBER = re.compile(rb"^X-Load-Number: (\d+)\r?$", re.MULTILINE)


@dataclass
class Cluster:
    nodes: dict[str, Postroom]
    balancer: Balancer[str]
    sink: Sink
    context: ssl.SSLContext  # trusts the nodes' certificate

    def port(self, frontend: str) -> int:
        return self.balancer.ports[frontend]


def haproxy_config(nodes: dict[str, Postroom], ports: dict[str, int]) -> str:
    """Balanced frontends per service, and a pinned one per service and node."""
    lines = [
        "global",
        "    maxconn 400",
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout check 1s",
        "    retries 3",
        "    option redispatch 1",
    ]
    for service in SERVICES:
        lines += [
            f"frontend {service}",
            f"    bind 127.0.0.1:{ports[service]}",
            f"    default_backend {service}",
            f"backend {service}",
            "    balance roundrobin",
        ]
        lines += [
            f"    server {name} 127.0.0.1:{node.ports[service]} send-proxy-v2 source {BALANCER}"
            " check check-send-proxy inter 300ms fall 1 rise 1"
            for name, node in nodes.items()
        ]
        for name, node in nodes.items():
            lines += [
                f"frontend {service}-{name}",
                f"    bind 127.0.0.1:{ports[f'{service}-{name}']}",
                f"    default_backend {service}-{name}",
                f"backend {service}-{name}",
                f"    server {name} 127.0.0.1:{node.ports[service]} send-proxy-v2"
                f" source {BALANCER}",
            ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def cluster(
    postgres: PostgresServer,
    postroom_factory: Callable[..., Postroom],
    smtp_sink: Callable[..., Sink],
    tmp_path: Path,
) -> Iterator[Cluster]:
    sink = smtp_sink("-W", SINK_DELAY)
    database = postgres.new_database()
    nodes: dict[str, Postroom] = {}
    balancer: Balancer[str] | None = None
    try:
        for name in NODES:
            node = postroom_factory(
                services=SERVICES,
                start=False,
                name=f"node-{name}",
                limits={"messages_per_hour": 100_000},
            )
            secret = node.root / "db-password"
            secret.write_text(PASSWORD + "\n")
            secret.chmod(0o600)
            node.extra += (
                f'\n[storage]\nbackend = "postgresql"\ndsn = "{postgres.dsn(database)}"\n'
                f'password_file = "{secret}"\n'
                f'\n[routes]\n"remote.test" = "127.0.0.1:{sink.port}"\n'
                f'\n[queue]\nretry = ["{RETRY:g}s"]\n'
            )
            accept_proxy(node, SERVICES)
            nodes[name] = node
        nodes["a"].add_user(BOB, BOB_PASSWORD)  # once: both nodes read the same accounts
        nodes["a"].start()
        # One certificate for the cluster's name, as behind any balancer: node a's pair.
        shutil.copytree(nodes["a"].data_dir / "tls", nodes["b"].data_dir / "tls")
        nodes["b"].start()
        context = nodes["a"].tls_context()
        frontends = [*SERVICES, *(f"{s}-{n}" for s in SERVICES for n in NODES)]
        ports = dict(zip(frontends, free_ports(len(frontends)), strict=True))
        balancer = start_haproxy(tmp_path / "haproxy", haproxy_config(nodes, ports), ports)
        yield Cluster(nodes, balancer, sink, context)
    finally:
        if balancer is not None:
            balancer.stop()
        for node in nodes.values():
            node.stop()
        postgres.drop_database(database)


# --- clients -----------------------------------------------------------------------------------


def numbered(number: int, recipient: str) -> bytes:
    return (
        f"From: <{SENDER}>\r\nTo: <{recipient}>\r\nSubject: load {number}\r\n"
        f"Message-ID: <load-{number}@client.test>\r\nX-Load-Number: {number}\r\n\r\n"
        f"number {number}\r\nend of {number}\r\n"
    ).encode()


def send_local(cluster: Cluster, number: int, frontend: str = "smtp") -> None:
    with smtplib.SMTP(
        "127.0.0.1", cluster.port(frontend), local_hostname="client.example.net", timeout=30
    ) as client:
        client.sendmail(SENDER, [BOB], numbered(number, BOB))


def send_remote(cluster: Cluster, number: int, frontend: str = "submission") -> None:
    with smtplib.SMTP(
        "127.0.0.1", cluster.port(frontend), local_hostname="client.example.net", timeout=30
    ) as client:
        client.starttls(context=cluster.context)
        client.login(BOB, BOB_PASSWORD)
        client.sendmail(BOB, [CAROL], numbered(number, CAROL))


def is_remote(number: int) -> bool:
    return number % 3 == 0


def permanent(error: Exception) -> bool:
    """A 5xx: the message was refused for good (the test fails); anything else is retried."""
    if isinstance(error, smtplib.SMTPResponseException):
        return error.smtp_code >= 500
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return any(code >= 500 for code, _ in error.recipients.values())
    return False


@dataclass
class Load:
    """Who sent what: the acknowledged numbers, the attempts that failed, the refusals."""

    acknowledged: dict[int, float] = field(default_factory=dict)  # number → when (monotonic)
    retried: collections.Counter[int] = field(default_factory=collections.Counter)
    refused: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_load(cluster: Cluster, numbers: list[int], load: Load, deadline: float) -> None:
    """Send every number from CLIENTS threads, each retried until acknowledged or refused."""
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for number in numbers:
        todo.put(number)

    def client() -> None:
        while True:
            try:
                number = todo.get_nowait()
            except queue.Empty:
                return
            while time.monotonic() < deadline:
                try:
                    if is_remote(number):
                        send_remote(cluster, number)
                    else:
                        send_local(cluster, number)
                except (OSError, smtplib.SMTPException) as error:
                    with load.lock:
                        if permanent(error):
                            load.refused[number] = repr(error)
                            break
                        load.retried[number] += 1
                        load.errors.append(f"{number}: {error!r}")
                    continue
                with load.lock:
                    load.acknowledged[number] = time.monotonic()
                break

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 35)
    assert not any(t.is_alive() for t in threads), "client threads still running"


def imap_numbers(cluster: Cluster, frontend: str) -> list[int]:
    """The load numbers of bob's INBOX in UID order, read over IMAPS through `frontend`."""
    with imaplib.IMAP4_SSL(
        "127.0.0.1", cluster.port(frontend), ssl_context=cluster.context, timeout=30
    ) as imap:
        imap.login(BOB, BOB_PASSWORD)
        status, data = imap.select("INBOX", readonly=True)
        assert status == "OK", data
        if data[0] == b"0":
            return []
        status, fetched = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (X-LOAD-NUMBER)])")
        assert status == "OK", fetched
        numbers = []
        for part in fetched:
            if isinstance(part, tuple):
                match = _NUMBER.search(part[1])
                assert match, part
                numbers.append(int(match[1]))
        imap.logout()
    return numbers


def sink_arrivals(sink: Sink) -> list[tuple[int, float]]:
    """(number, time written) of the messages smtp-sink received whole (the last line there)."""
    arrivals = []
    for path in sorted(sink.dumps.iterdir()):
        dump = path.read_bytes()
        match = _NUMBER.search(dump)
        if match and f"end of {int(match[1])}\n".encode() in dump:
            arrivals.append((int(match[1]), path.stat().st_mtime))
    return arrivals


def sink_numbers(sink: Sink) -> list[int]:
    return [number for number, _ in sink_arrivals(sink)]


def duplicates(numbers: list[int]) -> dict[int, int]:
    return {n: c for n, c in collections.Counter(numbers).items() if c > 1}


def queue_empty(node: Postroom) -> bool:
    return CAROL not in node.queue_list()


# --- tests -------------------------------------------------------------------------------------


def test_mail_submitted_through_one_node_is_read_and_relayed_through_the_other(
    cluster: Cluster,
) -> None:
    send_local(cluster, 1, "smtp-a")
    assert imap_numbers(cluster, "imaps-b") == [1]
    send_local(cluster, 2, "smtp-b")
    assert imap_numbers(cluster, "imaps-a") == [1, 2]
    # Remote mail through the balanced submission frontend: whichever node claims it relays.
    for number in (3, 6, 9, 12):
        send_remote(cluster, number)
    wait_until(
        lambda: sorted(sink_numbers(cluster.sink)) == [3, 6, 9, 12], 30, "the relayed messages"
    )
    wait_until(lambda: queue_empty(cluster.nodes["a"]), 30, "the queue to empty")
    assert queue_empty(cluster.nodes["b"])  # one database: one queue
    relayed = {
        name: len(re.findall(r"delivered id=\S+ to=<carol@", node.log()))
        for name, node in cluster.nodes.items()
    }
    print(f"relayed by node: {relayed}")
    assert sum(relayed.values()) == 4, relayed


@pytest.mark.timeout(400)
def test_kill_9_one_node_under_load_loses_nothing_and_it_rejoins(cluster: Cluster) -> None:
    survivor, victim = cluster.nodes["a"], cluster.nodes["b"]
    started = time.monotonic()
    load = Load()
    numbers = list(range(1, LOAD + 1))
    sender = threading.Thread(
        target=run_load, args=(cluster, numbers, load, started + LOAD_TIMEOUT), daemon=True
    )
    sender.start()
    wait_until(lambda: len(load.acknowledged) >= KILL_AFTER, 60, f"{KILL_AFTER} acknowledged")
    victim.kill()  # SIGKILL by PID
    killed_at = time.monotonic()
    killed_wall = time.time()
    acknowledged_before_kill = len(load.acknowledged)
    sender.join(LOAD_TIMEOUT + 60)
    assert not sender.is_alive()
    load_done = time.monotonic()
    assert not load.refused, load.refused
    assert set(load.acknowledged) == set(numbers), (
        f"not acknowledged: {sorted(set(numbers) - set(load.acknowledged))}\n{load.errors[-20:]}"
    )
    local = {n for n in numbers if not is_remote(n)}
    remote = set(numbers) - local

    # Local: every acknowledged number is in the mailbox at once (250 after the commit).
    seen = imap_numbers(cluster, "imaps-a")
    assert local - set(seen) == set(), f"lost: {sorted(local - set(seen))}"
    assert set(seen) <= local, sorted(set(seen) - local)
    local_dups = duplicates(seen)
    local_retries = sum(c for n, c in load.retried.items() if n in local)
    assert sum(c - 1 for c in local_dups.values()) <= local_retries, (local_dups, local_retries)
    assert all(load.retried[n] for n in local_dups), local_dups  # only what a client sent twice

    # Remote mail accepted after the kill was accepted by the survivor: it relays it alone.
    survivors = {n for n in remote if load.acknowledged[n] > killed_at}
    wait_until(
        lambda: survivors <= set(sink_numbers(cluster.sink)),
        60,
        "the survivor to relay the remote mail it accepted",
        interval=0.2,
    )
    survivor_relayed_at = time.monotonic()

    # The killed node rejoins: its listeners answer through HAProxy, with the same mailbox.
    victim.start()
    restarted_at = time.monotonic()
    assert imap_numbers(cluster, "imaps-b") == imap_numbers(cluster, "imaps-a")

    # What the dead node had claimed is relayed by one of the two: after the restart (which
    # gives back its own claims) or once the claims fall due again (RETRY).
    def all_relayed() -> bool:
        return remote <= set(sink_numbers(cluster.sink))

    wait_until(all_relayed, 120, "every acknowledged remote number at the sink", interval=0.2)
    relayed_at = time.monotonic()
    wait_until(lambda: queue_empty(survivor), 60, "the queue to empty", interval=0.2)
    arrivals = sink_arrivals(cluster.sink)
    received = [number for number, _ in arrivals]
    assert set(received) == remote, sorted(set(received) ^ remote)
    remote_dups = duplicates(received)
    # A second copy comes from a client that sent it again, or from relaying again what the
    # dead node had claimed (and perhaps handed over before it died).
    before_kill = {number for number, written in arrivals if written <= killed_wall}
    in_flight = {n for n in remote_dups if n in before_kill and not load.retried[n]}
    assert all(load.retried[n] or n in before_kill for n in remote_dups), remote_dups

    # HAProxy gives the restarted node sessions again, and what it accepts is delivered.
    victim_log_start = len(victim.log(current=True))
    extra = iter(range(LOAD + 1, LOAD + 100))
    sent_after: list[int] = []

    def balanced_to_victim() -> bool:
        number = next(extra)
        send_local(cluster, number)  # through the balanced frontend
        sent_after.append(number)
        return "queued id=" in victim.log(current=True)[victim_log_start:]

    wait_until(balanced_to_victim, 30, "HAProxy to send the restarted node a session")
    send_local(cluster, LOAD + 100, "smtp-b")
    sent_after.append(LOAD + 100)
    after = imap_numbers(cluster, "imaps-b")
    assert set(sent_after) <= set(after), sorted(set(sent_after) - set(after))
    assert imap_numbers(cluster, "imaps-a") == after
    send_remote(cluster, LOAD + 102, "submission-b")
    wait_until(lambda: LOAD + 102 in sink_numbers(cluster.sink), 30, "remote mail through node b")

    remote_retries = sum(c for n, c in load.retried.items() if n in remote)
    print(
        f"\nload: {LOAD} numbered ({len(local)} local, {len(remote)} remote) from {CLIENTS}"
        f" clients; killed node b after {acknowledged_before_kill} acknowledged"
        f" ({killed_at - started:.1f}s); load done at {load_done - started:.1f}s;"
        f" the survivor's remote relayed at {survivor_relayed_at - started:.1f}s;"
        f" restarted at {restarted_at - started:.1f}s; all remote relayed at"
        f" {relayed_at - started:.1f}s; total {time.monotonic() - started:.1f}s\n"
        f"acknowledged {len(load.acknowledged)}; client retries local {local_retries},"
        f" remote {remote_retries}; mailbox {len(seen)} ({len(set(seen))} distinct, duplicates"
        f" {local_dups}); sink {len(received)} ({len(set(received))} distinct, duplicates"
        f" {remote_dups}, {len(in_flight)} of them relayed again after the kill); lost 0"
    )
