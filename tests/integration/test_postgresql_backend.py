"""`postroom serve` and the CLI on the PostgreSQL backend ([storage] backend = "postgresql"),
against a real PostgreSQL started by the tests (tests/storage/postgres_server.py): users made
by the CLI, mail received over SMTP, read back over IMAP (with a flag change and an expunge
another session hears of), kept across a restart; the users are the database's, not those of
the SQLite store in data_dir; `postroom storage check` on both backends."""

from __future__ import annotations

import imaplib
import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from postroom.config_storage import PASSWORD_VARIABLE
from postroom.storage.postgresql.schema import SCHEMA_VERSION as PG_VERSION
from postroom.storage.sqlite.schema import SCHEMA_VERSION as SQLITE_VERSION
from storage.postgres_server import PASSWORD, PostgresServer

from .conftest import ALICE, BOB, Postroom, postroom_executable, wait_until
from .wire import new_token, simple_message

SERVICES = ("smtp", "submission", "imap")
BOB_PASSWORD = "bob-on-postgresql"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(
    postgres: PostgresServer, postroom_factory: Callable[..., Postroom]
) -> Iterator[Postroom]:
    database = postgres.new_database()
    made = postroom_factory(services=SERVICES, start=False)
    secret = made.root / "db-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    made.extra += (
        f'\n[storage]\nbackend = "postgresql"\ndsn = "{postgres.dsn(database)}"\n'
        f'password_file = "{secret}"\n'
    )
    made.write_config()
    made.add_user(BOB, BOB_PASSWORD)
    made.start()
    try:
        yield made
    finally:
        made.stop()
        postgres.drop_database(database)


def imap_login(server: Postroom) -> imaplib.IMAP4:
    client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=30)
    client.starttls(ssl_context=server.tls_context())
    client.login(BOB, BOB_PASSWORD)
    return client


def test_mail_goes_through_postgresql(server: Postroom) -> None:
    users = server.run_cli("user", "list").stdout
    assert BOB in users and ALICE not in users  # the users of this database, not data_dir's
    assert PASSWORD not in server.log()
    token = new_token()
    message = simple_message(token, ALICE, BOB)
    with server.smtp() as smtp:
        smtp.sendmail(ALICE, [BOB], message)
    assert server.wait_for_messages(BOB, 1)["messages"] == 1  # the CLI reads PostgreSQL

    reader, watcher = imap_login(server), imap_login(server)
    try:
        assert reader.select("INBOX")[0] == "OK"
        typ, data = reader.uid("FETCH", "1", "(BODY.PEEK[] FLAGS)")
        assert typ == "OK"
        body = data[0][1]
        assert isinstance(body, bytes) and body.endswith(message)
        assert token.encode() in body and b"Received:" in body
        watcher.select("INBOX")
        assert reader.uid("STORE", "1", "+FLAGS", r"(\Deleted)")[0] == "OK"
        assert reader.expunge()[0] == "OK"

        def expunge_heard() -> object:
            watcher.noop()
            return watcher.untagged_responses.get("EXPUNGE")

        wait_until(expunge_heard, timeout=10, what="the other session hears of the expunge")
    finally:
        reader.logout()
        watcher.logout()
    assert server.mailbox_status(BOB)["messages"] == 0


def test_mail_outlives_a_restart(server: Postroom) -> None:
    token = new_token()
    with server.smtp() as smtp:
        smtp.sendmail(ALICE, [BOB], simple_message(token, ALICE, BOB))
    server.wait_for_messages(BOB, 1)
    server.stop()
    server.start()
    client = imap_login(server)
    try:
        client.select("INBOX")
        typ, data = client.uid("SEARCH", "TEXT", token)
        assert typ == "OK" and data[0] == b"1"
    finally:
        client.logout()


def test_storage_check_reads_the_schema_version_without_migrating(
    postgres: PostgresServer, postroom_factory: Callable[..., Postroom]
) -> None:
    sqlite = postroom_factory(start=False, name="sqlite")
    done = sqlite.run_cli("storage", "check")
    assert done.stdout.strip() == (
        f"{sqlite.data_dir / 'postroom.db'}: schema version {SQLITE_VERSION}, this postroom's"
    )
    empty = postgres.new_database()
    try:
        server = postroom_factory(start=False, name="postgresql")
        server.extra += f'\n[storage]\nbackend = "postgresql"\ndsn = "{postgres.dsn(empty)}"\n'
        server.write_config()
        environment = {**os.environ, PASSWORD_VARIABLE: PASSWORD}
        check = [postroom_executable(), "--config", str(server.config_path), "storage", "check"]
        first = subprocess.run(check, capture_output=True, text=True, env=environment, timeout=60)
        assert first.returncode == 1
        assert "has not made its tables there yet" in first.stderr
        assert first.stderr.count("\n") == 1 and PASSWORD not in first.stderr
        made = subprocess.run(
            [postroom_executable(), "--config", str(server.config_path), "user", "list"],
            capture_output=True,
            env=environment,
            timeout=60,
        )
        assert made.returncode == 0
        again = subprocess.run(check, capture_output=True, text=True, env=environment, timeout=60)
        assert again.returncode == 0
        assert again.stdout.strip() == (
            f"{postgres.dsn(empty)}: schema version {PG_VERSION}, this postroom's"
        )
        wrong = {**environment, PASSWORD_VARIABLE: "not-the-password"}
        refused = subprocess.run(check, capture_output=True, text=True, env=wrong, timeout=60)
        assert refused.returncode == 1
        assert "password authentication failed" in refused.stderr
        assert f"([storage] dsn is set in {server.config_path})" in refused.stderr
        assert "not-the-password" not in refused.stderr
    finally:
        postgres.drop_database(empty)
