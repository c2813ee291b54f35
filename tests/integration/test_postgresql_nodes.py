"""Two `postroom serve` nodes on one PostgreSQL database (tests/storage/postgres_server.py),
each with its own data_dir and ports, hear each other through LISTEN/NOTIFY
(storage/postgresql/notify.py): an IDLE session on node B is told `* N EXISTS` for mail
delivered over SMTP to node A, and `* N FETCH (FLAGS ...)` for a flag changed through A; a
password changed with the CLI is refused by both at once; after PostgreSQL restarts, IDLE on B
still wakes for mail delivered to A."""

from __future__ import annotations

import imaplib
import smtplib
import time
from collections.abc import Callable, Iterator

import pytest

from storage.postgres_server import PASSWORD, PostgresServer

from .conftest import ALICE, BOB, Postroom, wait_until
from .wire import new_token, simple_message

SERVICES = ("smtp", "imap")
BOB_PASSWORD = "bob-on-two-nodes"
WITHIN = 2.0  # seconds for a change on one node to reach a session on the other


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def nodes(
    postgres: PostgresServer, postroom_factory: Callable[..., Postroom]
) -> Iterator[tuple[Postroom, Postroom]]:
    database = postgres.new_database()
    made: list[Postroom] = []
    for name in ("node-a", "node-b"):
        node = postroom_factory(services=SERVICES, start=False, name=name)
        secret = node.root / "db-password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        node.extra += (
            f'\n[storage]\nbackend = "postgresql"\ndsn = "{postgres.dsn(database)}"\n'
            f'password_file = "{secret}"\n'
        )
        node.write_config()
        made.append(node)
    made[0].add_user(BOB, BOB_PASSWORD)  # once: both nodes read the same accounts
    try:
        for node in made:
            node.start()
        yield made[0], made[1]
    finally:
        for node in made:
            node.stop()
        postgres.drop_database(database)


def imap_login(node: Postroom, password: str = BOB_PASSWORD) -> imaplib.IMAP4:
    client = imaplib.IMAP4(node.host, node.ports["imap"], timeout=30)
    client.starttls(ssl_context=node.tls_context())
    client.login(BOB, password)
    return client


def deliver(node: Postroom) -> None:
    with node.smtp() as smtp:
        smtp.sendmail(ALICE, [BOB], simple_message(new_token(), ALICE, BOB))


def accepted(node: Postroom) -> Callable[[], bool]:
    """Delivery to `node` that may meet connections PostgreSQL broke (a 4xx): try again."""

    def attempt() -> bool:
        try:
            deliver(node)
        except smtplib.SMTPException:
            return False
        return True

    return attempt


def start_idle(client: imaplib.IMAP4) -> None:
    client.send(b"I1 IDLE\r\n")
    assert client.readline().startswith(b"+ ")


def idle_line(client: imaplib.IMAP4, timeout: float) -> tuple[bytes, float]:
    """The next untagged line during IDLE, and the seconds it took (fails after `timeout`)."""
    client.sock.settimeout(timeout)
    start = time.monotonic()
    try:
        line = client.readline()
    except TimeoutError:
        raise AssertionError(f"nothing heard during IDLE within {timeout:g} s") from None
    return line, time.monotonic() - start


def end_idle(client: imaplib.IMAP4) -> None:
    client.sock.settimeout(30)
    client.send(b"DONE\r\n")
    while not (line := client.readline()).startswith(b"I1 "):
        assert line.startswith(b"* "), line
    assert line.startswith(b"I1 OK"), line


def test_idle_on_one_node_hears_mail_and_flags_from_the_other(
    nodes: tuple[Postroom, Postroom],
) -> None:
    a, b = nodes
    watcher = imap_login(b)
    try:
        assert watcher.select("INBOX") == ("OK", [b"0"])
        start_idle(watcher)
        deliver(a)  # answered 250 by A once committed
        line, took = idle_line(watcher, WITHIN)
        assert line == b"* 1 EXISTS\r\n", line
        assert took < WITHIN
        changer = imap_login(a)
        try:
            changer.select("INBOX")
            assert changer.store("1", "+FLAGS", r"(\Flagged)")[0] == "OK"
        finally:
            changer.logout()
        while True:  # `* 1 RECENT` may come first
            line, _ = idle_line(watcher, WITHIN)
            if b"FETCH" in line:
                break
            assert line.startswith(b"* "), line
        assert line.startswith(b"* 1 FETCH (") and b"\\Flagged" in line, line
        end_idle(watcher)
    finally:
        watcher.logout()


def test_a_password_changed_with_the_cli_is_refused_by_both_nodes_at_once(
    nodes: tuple[Postroom, Postroom],
) -> None:
    for node in nodes:  # each node has verified (and remembered) the old password
        imap_login(node).logout()
    new = "bob-changed-on-node-a"
    nodes[0].run_cli("user", "passwd", BOB, "--password", new)
    changed = time.monotonic()
    for node in nodes:
        with pytest.raises(imaplib.IMAP4.error):
            imap_login(node)
        imap_login(node, new).logout()
    assert time.monotonic() - changed < 30  # nothing was waited for: argon2 and TLS only


def test_notifications_outlive_a_restart_of_postgresql(
    postgres: PostgresServer, nodes: tuple[Postroom, Postroom]
) -> None:
    a, b = nodes
    postgres.halt()
    postgres.resume()
    for node in nodes:
        node.wait_for_log("listening to .* again", timeout=30)

    def logged_in() -> imaplib.IMAP4 | None:
        try:  # the first reads may meet connections PostgreSQL broke (a temporary NO)
            return imap_login(b)
        except imaplib.IMAP4.error:
            return None

    watcher: imaplib.IMAP4 = wait_until(logged_in, 30, "a login on node B after the restart")
    try:
        watcher.select("INBOX")
        start_idle(watcher)
        wait_until(accepted(a), 30, "mail accepted by node A after the restart")
        line, _ = idle_line(watcher, WITHIN)
        assert line == b"* 1 EXISTS\r\n", line
        end_idle(watcher)
    finally:
        watcher.logout()
