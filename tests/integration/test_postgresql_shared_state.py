"""Two `postroom serve` nodes on one PostgreSQL database share the abuse defences' state and the
DKIM keys (issue 16 §2; services/limits.py, services/greylist.py, services/dkim_keys.py):
failed logins on node A until the client is blocked, then the same client is refused by node B
within about a second; a triplet greylisted by A passes on B once the delay is over (B never
greylists it anew), and the network that passed on B passes on A; the sending limit counts the
messages sent through both nodes; a key pair rotated with the CLI signs, at once, what either
node sends next (verified with dkimpy against the records `dkim list` prints)."""

from __future__ import annotations

import base64
import imaplib
import json
import smtplib
import socket
import time
from collections.abc import Callable, Iterator

import dkim
import psycopg
import pytest

from storage.postgres_server import PASSWORD, PostgresServer

from . import test_delivery_smtp
from .conftest import BOB, DOMAIN, Postroom, wait_until
from .test_delivery_smtp import Sink, sink_data, wait_dumps
from .wire import new_token, simple_message

smtp_sink = test_delivery_smtp.smtp_sink

SERVICES = ("smtp", "submission", "imap")
BOB_PASSWORD = "bob-on-two-nodes"
GREYLIST = 2.0  # seconds
WITHIN = 2.0  # seconds for a block made on one node to be honoured by the other
TIMEOUT = 30
LIMITS = {"auth_failures": 3, "auth_block": "1h", "messages_per_hour": 3}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


Nodes = tuple[Postroom, Postroom, str]


def make_nodes(
    postgres: PostgresServer,
    postroom_factory: Callable[..., Postroom],
    extra: str = "",
    limits: dict[str, object] | None = None,
) -> Iterator[Nodes]:
    database = postgres.new_database()
    made: list[Postroom] = []
    for name in ("node-a", "node-b"):
        node = postroom_factory(
            services=SERVICES, start=False, name=name, limits=LIMITS if limits is None else limits
        )
        node.hostname = f"{name}.{DOMAIN}"  # tells the sink which node delivered
        secret = node.root / "db-password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        node.extra += (
            f'{extra}\n[antispam]\ngreylist = "{GREYLIST:g}s"\n'
            f'\n[storage]\nbackend = "postgresql"\ndsn = "{postgres.dsn(database)}"\n'
            f'password_file = "{secret}"\n'
        )
        node.write_config()
        made.append(node)
    made[0].add_user(BOB, BOB_PASSWORD)  # once: both nodes read the same accounts
    made[1].passwords[BOB] = BOB_PASSWORD
    try:
        for node in made:
            node.start()
        yield made[0], made[1], postgres.dsn(database)
    finally:
        for node in made:
            node.stop()
        postgres.drop_database(database)


@pytest.fixture
def nodes(postgres: PostgresServer, postroom_factory: Callable[..., Postroom]) -> Iterator[Nodes]:
    yield from make_nodes(postgres, postroom_factory)


def query(dsn: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    """What the shared database holds now (the test's own connection)."""
    with psycopg.connect(dsn, password=PASSWORD, connect_timeout=10) as conn:
        return list(conn.execute(sql, args).fetchall())


class SourcedImap(imaplib.IMAP4):
    def __init__(self, host: str, port: int, source: str) -> None:
        self.source = source
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


def imap_login(node: Postroom, source: str, password: str) -> str:
    client = SourcedImap(node.host, node.ports["imap"], source)
    client.starttls(ssl_context=node.tls_context())
    try:
        client.login(BOB, password)
        return "OK"
    except imaplib.IMAP4.error as error:
        return str(error)
    finally:
        client.shutdown()


def smtp_login(node: Postroom, source: str, password: str) -> int:
    with smtplib.SMTP(
        node.host, node.submission_port, source_address=(source, 0), timeout=TIMEOUT
    ) as client:
        client.starttls(context=node.tls_context())
        client.ehlo()
        blob = base64.b64encode(f"\0{BOB}\0{password}".encode()).decode()
        code: int = client.docmd("AUTH", "PLAIN " + blob)[0]
        return code


def rcpt_from(node: Postroom, source: str, sender: str) -> tuple[int, bytes]:
    with smtplib.SMTP(
        node.host,
        node.smtp_port,
        local_hostname="client.example.net",
        source_address=(source, 0),
        timeout=TIMEOUT,
    ) as client:
        client.ehlo()
        assert client.mail(sender)[0] == 250
        return client.rcpt(BOB)


def test_a_login_block_made_on_one_node_refuses_the_client_on_the_other(nodes: Nodes) -> None:
    a, b, _ = nodes
    assert imap_login(b, "127.0.0.2", BOB_PASSWORD) == "OK"  # B knows no block yet
    for n in range(3):
        assert "AUTHENTICATIONFAILED" in imap_login(a, "127.0.0.2", f"guess{n}")
    a.wait_for_log(r"login blocked client=127\.0\.0\.2 user=<bob@example\.test>")
    blocked = time.monotonic()
    wait_until(
        lambda: "[UNAVAILABLE]" in imap_login(b, "127.0.0.2", BOB_PASSWORD),
        WITHIN,
        "node B to refuse the client node A blocked",
        interval=0.05,
    )
    took = time.monotonic() - blocked
    assert smtp_login(b, "127.0.0.2", BOB_PASSWORD) == 454  # every service of B
    assert imap_login(b, "127.0.0.3", BOB_PASSWORD) == "OK"  # not another client
    print(f"block honoured by node B {took:.2f} s after node A made it")
    # Lifted with the CLI on one node: lifted on both.
    b.run_cli("limits", "clear", BOB)
    for node in (a, b):
        assert imap_login(node, "127.0.0.2", BOB_PASSWORD) == "OK"


def test_a_triplet_greylisted_on_one_node_passes_on_the_other(nodes: Nodes) -> None:
    a, b, dsn = nodes
    code, text = rcpt_from(a, "127.0.0.5", "s@remote.example")
    assert code == 451 and text.startswith(b"4.7.1 Greylisted"), text
    seen = time.monotonic()
    key = "127.0.0.0/24|s@remote.example|bob@example.test"
    wait_until(
        lambda: query(dsn, "SELECT 1 FROM greylist_triplets WHERE key = %s", key),
        10,
        "node A to write the triplet",
    )
    # Early on B: still greylisted, counting from A's first sighting (not anew).
    code, text = rcpt_from(b, "127.0.0.5", "s@remote.example")
    assert code == 451, text
    b.wait_for_log(r"greylisted client=127\.0\.0\.5 from=<s@remote\.example> .* early")
    wait_until(lambda: time.monotonic() - seen > GREYLIST, 10, "the greylisting delay")
    assert rcpt_from(b, "127.0.0.5", "s@remote.example")[0] == 250
    b.wait_for_log(r"greylisting passed client=127\.0\.0\.5 network=127\.0\.0\.0/24")
    assert "greylisted client=127.0.0.5 from=<s@remote.example> to=<bob@example.test> new" not in (
        b.log()
    )
    # The network passed on B: another sender from it passes on A at once.
    wait_until(
        lambda: query(dsn, "SELECT 1 FROM greylist_networks WHERE network = %s", "127.0.0.0/24"),
        10,
        "node B to write the network that passed",
    )
    assert rcpt_from(a, "127.0.0.6", "new@remote.example")[0] == 250
    # Another network is greylisted by either node.
    assert rcpt_from(b, "127.0.1.1", "s@remote.example")[0] == 451


def sent_count(dsn: str) -> int:
    rows = query(dsn, "SELECT messages FROM sending_counts WHERE account = %s", BOB)
    return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]


def test_the_sending_limit_counts_messages_sent_through_both_nodes(nodes: Nodes) -> None:
    a, b, dsn = nodes
    message = simple_message(new_token(), BOB, BOB)
    with a.submission(BOB) as client:
        for _ in range(2):
            client.sendmail(BOB, [BOB], message)
    wait_until(lambda: sent_count(dsn) == 2, 10, "node A to add its 2 messages")
    with b.submission(BOB) as client:
        client.sendmail(BOB, [BOB], message)  # the third of 3
        code, text = client.mail(BOB)
        assert (code, text[:5]) == (451, b"4.7.0"), text
        client.rset()
    wait_until(lambda: sent_count(dsn) == 3, 10, "node B to add its message")
    with a.submission(BOB) as client:
        code, text = client.mail(BOB)
        assert (code, text[:5]) == (451, b"4.7.0"), text  # A counts B's message too
    out = a.run_cli("limits", "show", BOB).stdout
    assert out.startswith(f"sent\t{BOB}\t3/3\t"), out
    # Cleared with the CLI: both nodes take mail again.
    a.run_cli("limits", "clear", BOB)
    for node in (a, b):
        with node.submission(BOB) as client:
            assert client.mail(BOB)[0] == 250
            client.rset()


@pytest.fixture
def sink(smtp_sink: Callable[..., Sink]) -> Sink:
    return smtp_sink()


@pytest.fixture
def routed_nodes(
    postgres: PostgresServer, postroom_factory: Callable[..., Postroom], sink: Sink
) -> Iterator[Nodes]:
    yield from make_nodes(
        postgres,
        postroom_factory,
        f'\n[routes]\n"sink.test" = "{sink.host}:{sink.port}"\n',
        limits={},
    )


def dkim_records(node: Postroom) -> dict[bytes, bytes]:
    """Every key's TXT record by its DNS name, as `dkim list --json` prints them."""
    keys = json.loads(node.run_cli("dkim", "list", DOMAIN, "--json").stdout)
    return {
        f"{k['selector']}._domainkey.{k['domain']}.".encode(): k["record"].encode() for k in keys
    }


def send_through(node: Postroom, token: str) -> None:
    with node.submission(BOB) as client:
        client.sendmail(BOB, ["someone@sink.test"], simple_message(token, BOB, "someone@sink.test"))


def signed(sink: Sink, token: str, records: dict[bytes, bytes]) -> tuple[set[str], str]:
    """The selectors whose signatures on the message `token` dkimpy verifies, and the node
    (HELO) that delivered it."""
    dump = next(d for d in sink.messages() if f"Subject: {token}".encode() in d)
    helo = next(
        line.split(b":", 1)[1].strip().decode()
        for line in dump.split(b"\n")
        if line.startswith(b"X-Helo-Args:")
    )
    data = sink_data(dump).replace(b"\n", b"\r\n")
    fields = dkim.DKIM(data)
    selectors: set[str] = set()
    for index, (name, value) in enumerate(
        (n, v) for n, v in fields.headers if n.lower() == b"dkim-signature"
    ):
        del name
        tags = dict(part.strip().split("=", 1) for part in value.decode().split(";") if "=" in part)
        if dkim.DKIM(data).verify(idx=index, dnsfunc=lambda n, timeout=5: records.get(n, b"")):
            selectors.add(tags["s"].strip())
    return selectors, helo


def test_a_key_rotated_with_the_cli_signs_what_both_nodes_send_next(
    routed_nodes: Nodes, sink: Sink
) -> None:
    a, b, _ = routed_nodes
    before = [new_token("before") for _ in range(2)]
    for node, token in zip((a, b), before, strict=True):
        send_through(node, token)  # each node reads (and keeps) the first keys
    wait_dumps(sink, 2)
    first = dkim_records(a)
    old = {name.decode().split(".")[0] for name in first}
    for token in before:
        assert signed(sink, token, first)[0] == old
    out = a.run_cli("dkim", "rotate", DOMAIN, "--now").stdout
    records = dkim_records(a)
    new = {name.decode().split(".")[0] for name in records} - old
    assert len(new) == 2, out
    after = [new_token("after") for _ in range(2)]
    for node, token in zip((b, a), after, strict=True):
        send_through(node, token)
    wait_dumps(sink, 4)
    delivered_by = set()
    for token in after:
        selectors, helo = signed(sink, token, records)
        assert selectors == new, (token, selectors, new)
        delivered_by.add(helo)
    print(f"signed with {sorted(new)} by {sorted(delivered_by)}")
