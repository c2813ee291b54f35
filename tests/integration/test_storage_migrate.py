"""`postroom storage migrate --to postgresql`: a SQLite installation filled through the real
server and CLI (users, an alias, mail over SMTP with one large message, flags set over IMAP, a
remote message waiting in the queue, a DKIM key, a Sieve script) copied into a real PostgreSQL
started by the tests (tests/storage/postgres_server.py); then `postroom serve` on PostgreSQL
serves the same mail over IMAP (UIDVALIDITY, UIDs, flags, dates, bytes). A copy killed while
it waits on a lock the test holds resumes without duplicates; a database holding other data,
and a data_dir a server is running on, are refused."""

from __future__ import annotations

import imaplib
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator

import psycopg
import pytest

from postroom.config_storage import PASSWORD_VARIABLE
from postroom.storage.postgresql.store import open_database
from storage.postgres_server import PASSWORD, PostgresServer

from .conftest import ALICE, BOB, PASSWORDS, Postroom, postroom_executable, wait_until
from .wire import new_token, simple_message

SERVICES = ("smtp", "submission", "imap")
REMOTE = "carol@remote.example"
SIEVE = 'require "fileinto";\nif header :contains "subject" "sieve-me" { fileinto "INBOX"; }\n'


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    name = postgres.new_database()
    try:
        yield name
    finally:
        postgres.drop_database(name)


@pytest.fixture(autouse=True)
def db_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """`storage migrate` and the CLI read the database's password from the environment."""
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)


def migrate(server: Postroom, dsn: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return server.run_cli(
        "storage", "migrate", "--to", "postgresql", "--dsn", dsn, check=check, timeout=120
    )


def large_message(token: str) -> bytes:
    """About 700 KB: a file blob in SQLite, three chunks in PostgreSQL."""
    lines = "".join(f"{token} line {n:06d} {'x' * 60}\r\n" for n in range(9000))
    return simple_message(token, ALICE, BOB).replace(b"Body of", lines.encode() + b"Body of")


Seen = tuple[bytes, dict[int, tuple[list[str], str, bytes, str]]]


def imap_state(server: Postroom) -> Seen:
    """What bob's IMAP client sees: UIDVALIDITY, and per UID its flags, date, bytes and the
    whole response (with ENVELOPE and BODYSTRUCTURE)."""
    client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=30)
    try:
        client.starttls(ssl_context=server.tls_context())
        client.login(BOB, PASSWORDS[BOB])
        typ, _ = client.select("INBOX")
        assert typ == "OK"
        validity = client.untagged_responses["UIDVALIDITY"][0]
        assert isinstance(validity, bytes)
        # ENVELOPE and BODYSTRUCTURE come from the summaries the copy carried.
        typ, data = client.uid(
            "FETCH", "1:*", "(FLAGS INTERNALDATE ENVELOPE BODYSTRUCTURE BODY.PEEK[])"
        )
        assert typ == "OK"
        messages: dict[int, tuple[list[str], str, bytes, str]] = {}
        for item in data:
            if isinstance(item, tuple):
                head = item[0].decode()
                uid = re.search(r"UID (\d+)", head)
                flags = re.search(r"FLAGS \(([^)]*)\)", head)
                date = re.search(r'INTERNALDATE "([^"]+)"', head)
                assert uid and flags and date, head
                messages[int(uid[1])] = (sorted(flags[1].split()), date[1], item[1], head)
        return validity, messages
    finally:
        client.logout()


def set_flags(server: Postroom) -> None:
    client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=30)
    try:
        client.starttls(ssl_context=server.tls_context())
        client.login(BOB, PASSWORDS[BOB])
        client.select("INBOX")
        assert client.uid("STORE", "2", "+FLAGS", r"(\Flagged $Important)")[0] == "OK"
        assert client.uid("STORE", "3", "+FLAGS", r"(\Seen)")[0] == "OK"
        assert client.uid("STORE", "1", "+FLAGS", r"(\Deleted)")[0] == "OK"
        assert client.expunge()[0] == "OK"  # UID 1 gone: the copy keeps the gap
    finally:
        client.logout()


def fill(server: Postroom, count: int = 5) -> None:
    """Mail for bob over SMTP (one large), a message for a remote domain left in the queue."""
    with server.smtp() as smtp:
        for n in range(count):
            token = new_token(f"m{n}")
            body = large_message(token) if n == 2 else simple_message(token, ALICE, BOB)
            smtp.sendmail(ALICE, [BOB], body)
    with server.submission() as submission:
        submission.sendmail(ALICE, [REMOTE], simple_message(new_token("remote"), ALICE, REMOTE))
    server.wait_for_messages(BOB, count)
    wait_until(lambda: REMOTE in server.queue_list(), timeout=30, what="the remote message queued")


def use_postgresql(server: Postroom, dsn: str) -> None:
    secret = server.root / "db-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    server.extra += (
        f'\n[storage]\nbackend = "postgresql"\ndsn = "{dsn}"\npassword_file = "{secret}"\n'
    )
    server.write_config()


def test_migrated_store_serves_the_same_mail(
    postgres: PostgresServer, database: str, postroom_factory: Callable[..., Postroom]
) -> None:
    server = postroom_factory(services=SERVICES)
    server.run_cli("alias", "add", "postmaster@example.test", BOB)
    script = server.root / "filter.sieve"
    script.write_text(SIEVE)
    server.run_cli("sieve", "put", BOB, "main", str(script))
    server.run_cli("sieve", "activate", BOB, "main")
    server.run_cli("dkim", "rotate", "example.test")
    for name in ("one", "two"):  # keyed by bytes (their hashes): where a copy resumes
        server.run_cli("user", "token", BOB, "--name", name)
    fill(server)
    set_flags(server)
    before = imap_state(server)
    keys = server.run_cli("dkim", "list").stdout
    trace = server.run_cli("trace", REMOTE).stdout
    dsn = postgres.dsn(database)

    running = migrate(server, dsn, check=False)
    assert running.returncode == 1
    assert "already running" in running.stderr and running.stderr.count("\n") == 1

    server.stop()
    done = migrate(server, dsn)
    assert "DIFFERS" not in done.stdout
    assert re.search(r"mailbox_messages\s+4\s+4\b", done.stdout), done.stdout
    assert re.search(r"queue_recipients\s+1\s+1\b", done.stdout), done.stdout
    assert re.search(r"api_tokens\s+2\s+2\b", done.stdout), done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    again = migrate(server, dsn)  # a second run copies nothing, and says so
    assert "complete copy already" in again.stdout

    use_postgresql(server, dsn)
    server.start()
    after = imap_state(server)
    assert after == before
    messages = after[1]
    assert sorted(messages) == [2, 3, 4, 5]
    assert messages[2][0] == ["$Important", "\\Flagged"] and messages[3][0] == ["\\Seen"]
    assert len(messages[3][2]) > 600_000  # the large one, a file in SQLite
    assert REMOTE in server.queue_list()
    assert server.run_cli("dkim", "list").stdout == keys
    assert server.run_cli("trace", REMOTE).stdout == trace and REMOTE in trace
    assert "main" in server.run_cli("sieve", "list", BOB).stdout
    assert BOB in server.run_cli("alias", "list").stdout
    with server.smtp() as smtp:  # new ids come after the copied ones
        smtp.sendmail(ALICE, [BOB], simple_message(new_token("new"), ALICE, BOB))
    server.wait_for_messages(BOB, 5)
    assert sorted(imap_state(server)[1]) == [2, 3, 4, 5, 6]


def _waiting_on_lock(dsn: str) -> bool:
    with psycopg.connect(dsn, password=PASSWORD) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
        return row is not None and row[0] > 0


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn, password=PASSWORD) as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
        assert row is not None and row[0] == row[1]  # no row twice
        return int(row[0])


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_stopped_copy_resumes_without_duplicates(
    stop: signal.Signals,
    postgres: PostgresServer,
    database: str,
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(services=SERVICES)
    fill(server, count=12)
    server.stop()
    dsn = postgres.dsn(database)
    open_database(dsn, PASSWORD).close()  # the schema, so the test can lock a table of it
    holder = psycopg.connect(dsn, password=PASSWORD)
    command = [postroom_executable(), "--config", str(server.config_path), "storage", "migrate"]
    try:
        # Reads pass a SHARE lock; the copy's first write to mailbox_messages waits on it.
        holder.execute("LOCK TABLE mailbox_messages IN SHARE MODE")
        copy = subprocess.Popen(
            [*command, "--to", "postgresql", "--dsn", dsn],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until(lambda: _waiting_on_lock(dsn), timeout=60, what="the copy to wait")
            os.kill(copy.pid, stop)
            _, errors = copy.communicate(timeout=30)
        finally:
            if copy.poll() is None:
                copy.kill()
                copy.communicate(timeout=30)
    finally:
        holder.rollback()
        holder.close()
    if stop == signal.SIGINT:
        assert copy.returncode == 1
        assert errors.decode().endswith(
            "interrupted; what was copied is kept: run the same command again to go on\n"
        )
    assert _count(dsn, "blobs") == 13 and _count(dsn, "mailbox_messages") == 0
    assert _count(dsn, "users") == 2

    done = migrate(server, dsn)
    assert "resuming the copy" in done.stderr
    assert "DIFFERS" not in done.stdout
    assert re.search(r"blobs\s+13\s+13\b", done.stdout), done.stdout
    assert _count(dsn, "mailbox_messages") == 12 and _count(dsn, "blobs") == 13
    assert _count(dsn, "users") == 2


def test_database_with_other_data_is_refused(
    postgres: PostgresServer, database: str, postroom_factory: Callable[..., Postroom]
) -> None:
    server = postroom_factory(start=False)
    dsn = postgres.dsn(database)
    with open_database(dsn, PASSWORD) as conn:
        conn.execute("INSERT INTO aliases(address, target) VALUES ('a@x.test', 'b@x.test')")
    refused = migrate(server, dsn, check=False)
    assert refused.returncode == 1
    assert "already holds data no migration copied there (aliases)" in refused.stderr
    assert "createdb" in refused.stderr and refused.stderr.count("\n") == 1
    assert _rows(dsn, "users") == 0 and _rows(dsn, "aliases") == 1


def test_database_of_something_else_is_refused(
    postgres: PostgresServer, database: str, postroom_factory: Callable[..., Postroom]
) -> None:
    server = postroom_factory(start=False)
    dsn = postgres.dsn(database)
    with psycopg.connect(dsn, password=PASSWORD) as conn:
        conn.execute("CREATE TABLE orders (id integer PRIMARY KEY)")
    refused = migrate(server, dsn, check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "holds tables that are not postroom's" in refused.stderr
    with psycopg.connect(dsn, password=PASSWORD) as conn:
        row = conn.execute("SELECT to_regclass('meta') IS NULL").fetchone()
        assert row == (True,)  # postroom made none of its tables there


def _rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn, password=PASSWORD) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return 0 if row is None else int(row[0])
