"""Faults of the PostgreSQL backend (issue 16 §3), with a real PostgreSQL
(tests/storage/postgres_server.py), a real `postroom serve` and stock clients:

- PostgreSQL stopped (`pg_ctl stop -m fast` or `-m immediate`) and started again while several
  SMTP clients send numbered messages: every answer is 250 or 4xx (never 5xx), the server lives
  on, and afterwards every message that got 250 is in the INBOX (read over IMAP). An IMAP
  session during the outage gets NO (or BYE), and a new login afterwards works.
- The database unreachable at start: `postroom storage check` says so in one line (host and
  port, never the password) and exits 1; `serve` tries again, one warning line each time, comes
  up once PostgreSQL starts, and gives up after `[storage] start_wait` with one line.
- Another client holding a lock postroom needs (a table, a mailbox row) longer than
  `[storage] lock_timeout`: sessions get 4xx meanwhile, nothing waits for good, and once the
  lock is released the queue runner delivers what was queued and mail is accepted again.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import smtplib
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
import pytest

from postroom.config_storage import PASSWORD_VARIABLE
from postroom.durations import parse_duration
from storage.postgres_server import HOST, PASSWORD, PostgresServer

from .conftest import ALICE, BOB, Postroom, postroom_executable, wait_until
from .test_delivery_smtp import Sink, smtp_sink
from .wire import simple_message

__all__ = ["smtp_sink"]  # the fixture, used by name

SERVICES = ("smtp", "submission", "imap")
BOB_PASSWORD = "bob-through-faults"
CAROL = "carol@remote.test"
LOCK_TIMEOUT = "1s"
SENDERS = 4  # SMTP client threads
CLIENT_TIMEOUT = 90.0  # seconds a client waits for any one answer: "never hangs"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def on_postgresql(made: Postroom, dsn: str, more: str = "") -> None:
    """Point `made` at the database `dsn` (password in a file), with more [storage] keys."""
    secret = made.root / "db-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    made.extra += (
        f'\n[storage]\nbackend = "postgresql"\ndsn = "{dsn}"\npassword_file = "{secret}"\n{more}'
    )
    made.write_config()


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    name = postgres.new_database()
    try:
        yield name
    finally:
        if postgres_running(postgres):
            postgres.drop_database(name)


def postgres_running(postgres: PostgresServer) -> bool:
    try:
        postgres.admin_execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def imap_login(server: Postroom) -> imaplib.IMAP4:
    client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=CLIENT_TIMEOUT)
    client.starttls(ssl_context=server.tls_context())
    client.login(BOB, BOB_PASSWORD)
    return client


def subjects_in_inbox(server: Postroom) -> Counter[str]:
    """Each Subject in bob's INBOX, counted, read over IMAP."""
    client = imap_login(server)
    try:
        typ, data = client.select("INBOX", readonly=True)
        assert typ == "OK", data
        typ, fetched = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK", fetched
    finally:
        client.logout()
    found: Counter[str] = Counter()
    for item in fetched:
        if isinstance(item, tuple):
            match = re.search(rb"Subject: (\S+)", item[1])
            assert match, item
            found[match[1].decode()] += 1
    return found


def numbered_message(name: str) -> bytes:
    return (
        f"From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: {name}\r\n"
        f"Message-ID: <{name}@faults.test>\r\n\r\nmessage {name}\r\n"
    ).encode()


@dataclass
class Load:
    """SMTP clients sending numbered messages to bob until told to stop; each answer counted."""

    server: Postroom
    senders: int = SENDERS
    accepted: list[str] = field(default_factory=list)  # names answered 250
    deferred: list[str] = field(default_factory=list)  # names answered 4xx (or cut off)
    refused: list[str] = field(default_factory=list)  # 5xx: never
    errors: list[str] = field(default_factory=list)  # anything else a client met
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)
    slowest: float = 0.0  # seconds, the longest a message waited for its answer

    def start(self) -> None:
        for number in range(self.senders):
            thread = threading.Thread(target=self._send, args=(number,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT + 30)
            assert not thread.is_alive(), "an SMTP client still waits for an answer"

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.accepted), len(self.deferred)

    def _record(self, kind: list[str], name: str) -> None:
        with self.lock:
            kind.append(name)

    def _send(self, thread: int) -> None:
        client: smtplib.SMTP | None = None
        number = 0
        while not self.stop.is_set():
            number += 1
            name = f"m{thread}-{number}"
            began = time.monotonic()
            try:
                if client is None:
                    client = self.server.smtp(timeout=CLIENT_TIMEOUT)
                client.sendmail(ALICE, [BOB], numbered_message(name))
            except smtplib.SMTPResponseException as error:
                code = error.smtp_code
                self._record(self.deferred if 400 <= code < 500 else self.refused, name)
                client = _drop(client) if code == 421 or code >= 500 else _reset(client)
            except smtplib.SMTPRecipientsRefused as error:
                codes = [code for code, _ in error.recipients.values()]
                temporary = all(400 <= code < 500 for code in codes)
                self._record(self.deferred if temporary else self.refused, name)
                client = _reset(client)
            except (smtplib.SMTPServerDisconnected, ConnectionError):
                # Cut off before an answer: not acknowledged, so not owed.
                self._record(self.deferred, name)
                client = _drop(client)
            except (TimeoutError, OSError) as error:
                self._record(self.errors, f"{name}: {error!r}")
                client = _drop(client)
            else:
                self._record(self.accepted, name)
            with self.lock:
                self.slowest = max(self.slowest, time.monotonic() - began)
        _drop(client)


def _reset(client: smtplib.SMTP | None) -> smtplib.SMTP | None:
    if client is None:
        return None
    try:
        client.rset()
    except (smtplib.SMTPException, OSError):
        return _drop(client)
    return client


def _drop(client: smtplib.SMTP | None) -> smtplib.SMTP | None:
    """Close the client; None (a new one is opened for the next message)."""
    if client is not None:
        with contextlib.suppress(OSError):
            client.close()
    return None


@pytest.fixture
def server(
    postgres: PostgresServer, database: str, postroom_factory: Callable[..., Postroom]
) -> Postroom:
    made = postroom_factory(services=SERVICES, start=False)
    on_postgresql(made, postgres.dsn(database), f'lock_timeout = "{LOCK_TIMEOUT}"\n')
    made.add_user(BOB, BOB_PASSWORD)
    made.start()
    return made


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgresql_restarted_under_load_loses_nothing_acknowledged(
    postgres: PostgresServer, server: Postroom, mode: str
) -> None:
    watcher = imap_login(server)
    load = Load(server)
    load.start()
    try:
        wait_until(lambda: load.counts()[0] >= 20, 60, "20 messages accepted before the stop")
        assert watcher.select("INBOX")[0] == "OK"
        postgres.halt(mode)
        try:
            # During the outage: mail is deferred, and an IMAP command that needs the store is
            # answered NO (or the session is closed with BYE), never left waiting.
            before = load.counts()[1]
            wait_until(lambda: load.counts()[1] > before, 60, "a 4xx during the outage")
            try:
                typ, data = watcher.status("INBOX", "(MESSAGES)")
                assert typ == "NO", (typ, data)
            except imaplib.IMAP4.abort as error:  # BYE: the server closed the session
                assert "BYE" in str(error) or "socket" in str(error), error
            server.check_alive()
        finally:
            postgres.resume()
        after = load.counts()[0]
        wait_until(
            lambda: load.counts()[0] >= after + 20, 90, "20 messages accepted after the restart"
        )
    finally:
        load.finish()
        _logout(watcher)
    server.check_alive()
    assert load.refused == [], f"5xx during the outage: {load.refused}"
    assert load.errors == [], load.errors
    assert load.deferred, "the outage deferred nothing: it was not seen"

    def fresh_login() -> imaplib.IMAP4 | None:
        try:
            return imap_login(server)
        except imaplib.IMAP4.error:
            return None

    wait_until(fresh_login, 30, "an IMAP login after the restart").logout()
    found = subjects_in_inbox(server)
    lost = sorted(set(load.accepted) - set(found))
    assert lost == [], f"{len(lost)} acknowledged messages lost: {lost[:20]}"
    duplicates = sorted(name for name, count in found.items() if count > 1)
    # A 250 is given once per commit; a message in a commit whose answer the outage cut off
    # may be stored and still answered 4xx (then sent again: at least once, never lost).
    assert all(name in load.deferred for name in duplicates), duplicates
    print(
        f"\n{mode}: {len(load.accepted)} accepted, {len(load.deferred)} deferred, "
        f"{len(found)} stored, {len(set(found) - set(load.accepted))} stored though deferred"
    )


def _logout(client: imaplib.IMAP4) -> None:
    with contextlib.suppress(imaplib.IMAP4.error, OSError):
        client.logout()


def _nothing_listens() -> int:
    """A port of 127.0.0.1 where nothing listens (bound and released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def test_storage_check_with_the_database_unreachable_is_one_line(
    postroom_factory: Callable[..., Postroom],
) -> None:
    port = _nothing_listens()
    made = postroom_factory(start=False)
    made.extra += (
        f'\n[storage]\nbackend = "postgresql"\n'
        f'dsn = "postgresql://postroom@{HOST}:{port}/postroom"\n'
    )
    made.write_config()
    environment = {**os.environ, PASSWORD_VARIABLE: PASSWORD}
    started = time.monotonic()
    done = subprocess.run(
        [postroom_executable(), "--config", str(made.config_path), "storage", "check"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith("postroom: error: "), line
    assert f"{HOST}:{port}" in line and "check that PostgreSQL runs" in line, line
    assert "[storage] dsn is set in" in line, line
    assert PASSWORD not in line and "Traceback" not in done.stderr
    assert time.monotonic() - started < 30  # refused at once: not waited for


def test_serve_waits_for_a_database_that_starts_late(
    postgres: PostgresServer, database: str, postroom_factory: Callable[..., Postroom]
) -> None:
    made = postroom_factory(services=("smtp", "imap"), start=False)
    on_postgresql(made, postgres.dsn(database), 'start_wait = "5m"\n')
    made.add_user(BOB, BOB_PASSWORD)
    postgres.halt()
    started: list[BaseException | None] = []

    def start() -> None:
        try:
            made.start(timeout=240)
        except BaseException as error:
            started.append(error)
        else:
            started.append(None)

    starter = threading.Thread(target=start, daemon=True)
    try:
        starter.start()
        where = re.escape(f"{HOST}:{postgres.port}")
        pattern = rf"WARNING.*{where}.*; trying again in"
        wait_until(
            lambda: len(re.findall(pattern, made.log(current=True))) >= 2,
            60,
            "two warnings of the start trying again",
        )
        made.check_alive()
        assert "postroom ready" not in made.log(current=True)
    finally:
        postgres.resume()
    starter.join(timeout=300)
    assert started == [None], started
    log = made.log(current=True)
    assert PASSWORD not in log and "Traceback" not in log
    warnings = [line for line in log.splitlines() if "trying again in" in line]
    assert all("check that PostgreSQL runs" in line for line in warnings), warnings
    with made.smtp(timeout=CLIENT_TIMEOUT) as client:
        client.sendmail(ALICE, [BOB], simple_message("late-start", ALICE, BOB))
    assert subjects_in_inbox(made)


def test_serve_gives_up_after_start_wait_with_one_line(
    postroom_factory: Callable[..., Postroom],
) -> None:
    port = _nothing_listens()
    made = postroom_factory(services=("smtp",), start=False)
    on_postgresql(made, f"postgresql://postroom@{HOST}:{port}/postroom", 'start_wait = "2s"\n')
    started = time.monotonic()
    done = subprocess.run(
        [postroom_executable(), "--config", str(made.config_path), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("postroom: error:")]
    assert len(errors) == 1, done.stderr
    assert f"{HOST}:{port}" in errors[0] and "check that PostgreSQL runs" in errors[0]
    tries = [line for line in done.stderr.splitlines() if "trying again in" in line]
    assert len(tries) >= 2, done.stderr  # each attempt logged, with its pause
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr
    assert 2 <= took < 30, took


def hold(postgres: PostgresServer, database: str, *statements: str) -> psycopg.Connection:
    """Another client: a connection in a transaction that ran `statements` (and so holds
    their locks until it ends)."""
    conn = psycopg.connect(postgres.dsn(database), password=PASSWORD)
    for statement in statements:
        conn.execute(statement)
    return conn


def test_a_lock_held_elsewhere_defers_mail_and_does_not_stick_the_queue(
    postgres: PostgresServer,
    database: str,
    postroom_factory: Callable[..., Postroom],
    smtp_sink: Callable[..., Sink],
) -> None:
    sink_port = _nothing_listens()  # the sink starts once the lock is taken
    made = postroom_factory(
        services=SERVICES,
        start=False,
        extra=f'[routes]\n"remote.test" = "127.0.0.1:{sink_port}"\n[queue]\nretry = ["1s"]\n',
    )
    on_postgresql(made, postgres.dsn(database), f'lock_timeout = "{LOCK_TIMEOUT}"\n')
    made.add_user(ALICE, made.passwords[ALICE])  # the database's users: none yet
    made.start()
    with made.submission() as client:  # queued, deferred: nothing listens for remote.test yet
        client.sendmail(ALICE, [CAROL], simple_message("queued-before", ALICE, CAROL))
    wait_until(lambda: "\tdeferred\t" in made.queue_list(), 60, "the first attempt deferred")

    holder = hold(postgres, database, "LOCK TABLE queue_recipients IN ACCESS EXCLUSIVE MODE")
    try:
        sink = smtp_sink(port=sink_port)
        started = time.monotonic()
        with (
            made.submission() as client,
            pytest.raises(smtplib.SMTPDataError) as refused,
        ):
            client.sendmail(ALICE, [CAROL], simple_message("while-locked", ALICE, CAROL))
        assert 400 <= refused.value.smtp_code < 500, refused.value
        assert time.monotonic() - started < 30  # the lock timeout, not the lock, decided
        made.wait_for_log("queue run failed", timeout=60)  # the runner met the lock too
        made.check_alive()
        assert sink.messages() == []
    finally:
        holder.close()  # the lock is released: ROLLBACK
    wait_until(
        lambda: any(b"queued-before" in m for m in sink.messages()),
        60,
        "the queued mail delivered once the lock is released",
    )
    with made.submission() as client:
        client.sendmail(ALICE, [CAROL], simple_message("after-release", ALICE, CAROL))
    wait_until(
        lambda: any(b"after-release" in m for m in sink.messages()), 60, "mail sent afterwards"
    )


def test_a_mailbox_row_locked_elsewhere_defers_delivery_and_loses_nothing(
    postgres: PostgresServer, database: str, server: Postroom
) -> None:
    with server.smtp(timeout=CLIENT_TIMEOUT) as client:  # bob's INBOX exists, with a message
        client.sendmail(ALICE, [BOB], numbered_message("first"))
    holder = hold(
        postgres,
        database,
        "SELECT id FROM mailboxes WHERE name = 'INBOX' FOR UPDATE",
    )
    try:
        load = Load(server, senders=16)  # batches of many jobs, all behind the held row
        load.start()
        try:
            wait_until(lambda: load.counts()[1] >= 40, 60, "mail deferred while the row is held")
            server.check_alive()
        finally:
            load.finish()
        assert load.accepted == [], "accepted while the INBOX row was locked elsewhere"
        assert load.refused == [] and load.errors == [], (load.refused, load.errors)
        # A group commit waits lock_timeout in all, not once per job behind the row: no
        # message waits much longer than its batch and the one before it.
        assert load.slowest < 8 * parse_duration(LOCK_TIMEOUT), load.slowest
    finally:
        holder.close()
    with server.smtp(timeout=CLIENT_TIMEOUT) as client:
        client.sendmail(ALICE, [BOB], numbered_message("after"))
    found = subjects_in_inbox(server)
    assert found["first"] == 1 and found["after"] == 1, found
