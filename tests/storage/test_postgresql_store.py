"""The PostgreSQL store's own promises, against a real server (tests/storage/postgres_server.py):
the schema made and versioned at open (and a newer one refused), group commit (several jobs in
one transaction, a failing job undoing only its own changes, answers only after COMMIT), reads
in one snapshot, contents stored in chunks and copied from spill files, and a clear error,
without the password, when the database cannot be reached."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from postroom.storage.postgresql import blobs as pg_blobs
from postroom.storage.postgresql.connection import PgTx
from postroom.storage.postgresql.schema import MIGRATIONS, SCHEMA_VERSION
from postroom.storage.postgresql.store import PgDirect, PgStore
from postroom.storage.records import StorageFailure, StoreError

from .postgres_server import PASSWORD, PostgresServer


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    database = postgres_server.new_database()
    try:
        yield postgres_server.dsn(database)
    finally:
        postgres_server.drop_database(database)


@pytest.fixture
def store(dsn: str, tmp_path: Path) -> Iterator[PgStore]:
    opened = PgStore(dsn, tmp_path / "data", password=PASSWORD)
    opened.open()
    try:
        yield opened
    finally:
        opened.close()


def _version(dsn: str) -> str:
    with psycopg.connect(dsn, password=PASSWORD) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert row is not None
        return str(row[0])


def test_open_makes_the_schema_once_and_refuses_a_newer_one(dsn: str, tmp_path: Path) -> None:
    first = PgDirect(dsn, tmp_path, password=PASSWORD)
    with first.transaction() as tx:
        tx.accounts.add_user("alice@example.test", "h", "s")
    first.close()
    assert _version(dsn) == str(SCHEMA_VERSION)
    again = PgDirect(dsn, tmp_path, password=PASSWORD)  # already current: nothing is redone
    assert again.reader().accounts.get_user("alice@example.test") is not None
    again.close()
    with psycopg.connect(dsn, password=PASSWORD, autocommit=True) as conn:
        conn.execute(
            "UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    with pytest.raises(StorageFailure, match="newer than this postroom"):
        PgDirect(dsn, tmp_path, password=PASSWORD)


def test_a_version_1_database_gets_queue_leases(dsn: str, tmp_path: Path) -> None:
    """Schema 2 (queue leases): the recipients a version-1 database holds keep every column
    and have no lease."""
    with psycopg.connect(dsn, password=PASSWORD, autocommit=True) as conn:
        conn.execute(MIGRATIONS[1])
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO blobs(size, refs) VALUES (1, 1)")
        conn.execute(
            "INSERT INTO queue_messages(id, blob_id, prefix, sender, size, params, arrival,"
            " client_addr, client_helo, protocol, tls, auth_user)"
            " SELECT 'Q1', id, '', 's@x.test', 1, '{}', 1, '', '', 'ESMTP', '', '' FROM blobs"
        )
        conn.execute(
            "INSERT INTO queue_recipients(message_id, address, original, state, next_attempt)"
            " VALUES ('Q1', 'r@y.test', 'r@y.test', 'deferred', 5)"
        )
    store = PgDirect(dsn, tmp_path, password=PASSWORD)
    message = store.reader().queue.load("Q1")
    store.close()
    assert _version(dsn) == str(SCHEMA_VERSION)
    assert message is not None
    [rcpt] = message.recipients
    assert (rcpt.address, rcpt.next_attempt, rcpt.lease_node, rcpt.lease_until) == (
        "r@y.test",
        5.0,
        None,
        None,
    )


def test_nodes_opening_together_migrate_once(dsn: str, tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PgDirect(dsn, tmp_path, password=PASSWORD).close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _version(dsn) == str(SCHEMA_VERSION)


def test_unreachable_database_is_one_line_without_the_password(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    secret = "never-to-be-seen"
    wrong = f"postgresql://postroom_test:{secret}@127.0.0.1:{postgres_server.port}/postgres"
    with pytest.raises(StorageFailure) as refused:
        PgDirect(wrong, tmp_path)
    text = str(refused.value)
    assert secret not in text and "\n" not in text
    assert "password" in text and f"127.0.0.1:{postgres_server.port}/postgres" in text
    missing = postgres_server.dsn("no_such_database")
    with pytest.raises(StorageFailure, match="createdb"):
        PgStore(missing, tmp_path / "data", password=PASSWORD).open()


def test_a_failing_job_undoes_only_its_own_changes(store: PgStore) -> None:
    def add(tx: PgTx, address: str) -> int:
        return tx.accounts.add_user(address, "h", "s")

    def add_then_fail(tx: PgTx) -> None:
        tx.accounts.add_user("carol@example.test", "h", "s")
        tx.accounts.add_user("alice@example.test", "h", "s")  # exists: StoreError

    def broken_sql(tx: PgTx) -> None:
        tx.conn.execute("SELECT no_such_column FROM users")

    async def batch() -> list[object]:
        return await asyncio.gather(
            store.write(lambda tx: add(tx, "alice@example.test")),
            store.write(add_then_fail),
            store.write(broken_sql),
            store.write(lambda tx: add(tx, "bob@example.test")),
            return_exceptions=True,
        )

    sizes: list[int] = []
    store.on_commit = sizes.append
    alice, failed, broken, bob = asyncio.run(batch())
    assert isinstance(alice, int) and isinstance(bob, int)
    assert isinstance(failed, StoreError)
    assert isinstance(broken, psycopg.errors.UndefinedColumn)
    users = asyncio.run(store.read(lambda tx: [u.address for u in tx.accounts.list_users()]))
    assert users == ["alice@example.test", "bob@example.test"]  # carol went with her job
    assert sum(sizes) == 4


def test_writes_are_answered_after_their_commit(store: PgStore, dsn: str) -> None:
    """What a write returns is visible to another connection by the time it is answered."""

    async def run() -> list[bool]:
        seen = []
        for n in range(20):
            await store.write(lambda tx, n=n: tx.secrets.get_or_create(f"k{n}", lambda: b"v"))
            with psycopg.connect(dsn, password=PASSWORD) as other:
                row = other.execute("SELECT 1 FROM secrets WHERE name = %s", (f"k{n}",))
                seen.append(row.fetchone() is not None)
        return seen

    assert all(asyncio.run(run()))


def test_early_and_not_durable_writes_commit(store: PgStore) -> None:
    async def run() -> tuple[int, bool]:
        result, committed = await store.write_early(
            lambda tx: tx.accounts.add_user("early@example.test", "h", "s")
        )
        await committed
        await store.write(lambda tx: tx.secrets.get_or_create("lazy", lambda: b"x"), durable=False)
        found = await store.read(lambda tx: tx.secrets.get("lazy") == b"x")
        return result, found

    user_id, found = asyncio.run(run())
    assert user_id > 0 and found


def test_then_runs_after_the_commit_and_its_failure_stays_its_own(store: PgStore) -> None:
    def follow(tx: PgTx, user_id: int) -> None:
        tx.secrets.get_or_create(f"made-for-{user_id}", lambda: b"1")

    def fail(tx: PgTx, user_id: int) -> None:
        tx.secrets.get_or_create("never", lambda: b"1")
        raise RuntimeError("derived work failed")

    async def run() -> tuple[int, int]:
        first = await store.write(
            lambda tx: tx.accounts.add_user("a@example.test", "h", "s"), then=follow
        )
        second = await store.write(
            lambda tx: tx.accounts.add_user("b@example.test", "h", "s"), then=fail
        )
        return first, second

    first, _ = asyncio.run(run())
    kept = asyncio.run(
        store.read(lambda tx: (tx.secrets.get(f"made-for-{first}"), tx.secrets.get("never")))
    )
    assert kept == (b"1", None)
    users = asyncio.run(store.read(lambda tx: len(tx.accounts.list_users())))
    assert users == 2


def test_a_read_sees_one_snapshot(store: PgStore, dsn: str) -> None:
    def two_looks(tx: PgTx) -> tuple[int, int]:
        before = len(tx.accounts.list_users())
        with psycopg.connect(dsn, password=PASSWORD, autocommit=True) as other:
            other.execute(
                "INSERT INTO users(address, password_hash, scram, created) VALUES"
                " ('late@example.test', 'h', 's', 0)"
            )
        return before, len(tx.accounts.list_users())

    assert asyncio.run(store.read(two_looks)) == (0, 0)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        asyncio.run(store.read(lambda tx: tx.accounts.add_user("x@example.test", "h", "s")))


def test_contents_are_chunked_and_copied_from_spill_files(
    store: PgStore, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_blobs, "CHUNK_SIZE", 1000)
    large = bytes(range(256)) * 2000  # past the buffer's memory limit: a spill file
    small = b"Subject: hi\r\n\r\nbody\r\n"

    async def put(data: bytes) -> tuple[int, Path | None]:
        buffer = store.new_buffer(f"in-{len(data)}")
        for start in range(0, len(data), 65536):
            buffer.write(data[start : start + 65536])
        spilled = buffer.path
        blob_id = await store.write_content(buffer, lambda tx, blob_id: blob_id)
        return blob_id, spilled

    large_id, spill = asyncio.run(put(large))
    small_id, small_spill = asyncio.run(put(small))
    assert spill is not None and not spill.exists()  # the spill file is gone
    assert small_spill is None
    assert asyncio.run(store.read(lambda tx: tx.blobs.read(large_id))) == large
    assert asyncio.run(store.read(lambda tx: tx.blobs.read(small_id))) == small
    with psycopg.connect(dsn, password=PASSWORD) as conn:
        rows = conn.execute(
            "SELECT count(*), max(length(data)) FROM blob_chunks WHERE blob_id = %s", (large_id,)
        ).fetchone()
    assert rows == (len(large) // 1000, 1000)

    def reference_twice_release_twice(tx: PgTx) -> list[bool]:
        tx.blobs.add_reference(large_id)
        tx.blobs.add_reference(large_id)
        tx.blobs.release(large_id)
        still = tx.blobs.exists(large_id)
        tx.blobs.release(large_id)
        return [still, tx.blobs.exists(large_id)]

    assert asyncio.run(store.write(reference_twice_release_twice)) == [True, False]
    with pytest.raises(StoreError, match="missing"):
        asyncio.run(store.read(lambda tx: tx.blobs.read(large_id)))
    with psycopg.connect(dsn, password=PASSWORD) as conn:
        left = conn.execute("SELECT count(*) FROM blob_chunks WHERE blob_id = %s", (large_id,))
        assert left.fetchone() == (0,)


def test_a_server_that_goes_away_fails_writes_as_storage_failures(store: PgStore, dsn: str) -> None:
    """A connection the server ended while idle is noticed and replaced before it is used (the
    next write succeeds); one ended during a job is a StorageFailure for the jobs on it, and
    the next write connects again."""

    def add(n: int) -> Callable[[PgTx], int]:
        return lambda tx: tx.accounts.add_user(f"u{n}@x.test", "h", "")

    def ended_during(tx: PgTx) -> None:
        tx.accounts.add_user("lost@x.test", "h", "")
        tx.conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    async def write(job: Callable[[PgTx], object]) -> object:
        try:
            return await store.write(job)
        except StorageFailure as failure:
            return failure

    assert isinstance(asyncio.run(write(add(1))), int)  # the writer has its connection
    with psycopg.connect(dsn, password=PASSWORD, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        wait = time.monotonic() + 10
        while admin.execute(  # the backends are gone, their goodbyes sent
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchone() != (0,):
            assert time.monotonic() < wait, "the backends did not end"
            time.sleep(0.05)
    assert isinstance(asyncio.run(write(add(2))), int)  # noticed and replaced: no failure
    failed = asyncio.run(write(ended_during))
    assert isinstance(failed, StorageFailure), failed
    assert isinstance(asyncio.run(write(add(3))), int)
    users = asyncio.run(store.read(lambda tx: [u.address for u in tx.accounts.list_users()]))
    assert sorted(users) == ["u1@x.test", "u2@x.test", "u3@x.test"]  # nothing of the lost job


def test_commits_wait_for_the_wal_whatever_the_server_default(
    postgres_server: PostgresServer, store: PgStore
) -> None:
    """Even where the server's default is synchronous_commit=off, a durable write's COMMIT
    waits for the WAL flush (the store's connections turn it on); flag-like writes do not."""
    postgres_server.admin_execute("ALTER SYSTEM SET synchronous_commit = off")
    postgres_server.admin_execute("SELECT pg_reload_conf()")
    try:

        def setting(tx: PgTx) -> str:
            row = tx.conn.execute("SHOW synchronous_commit").fetchone()
            assert row is not None
            return str(row[0])

        async def run() -> tuple[str, str]:
            return await store.write(setting), await store.write(setting, durable=False)

        assert asyncio.run(run()) == ("on", "off")
    finally:
        postgres_server.admin_execute("ALTER SYSTEM RESET synchronous_commit")
        postgres_server.admin_execute("SELECT pg_reload_conf()")


def test_a_summary_a_reader_makes_is_kept_by_the_writer(store: PgStore, dsn: str) -> None:
    """Delivery makes no IMAP summary; the first FETCH makes it and the writer keeps it."""
    message = b"Subject: =?utf-8?q?caf=C3=A9?=\r\nFrom: a@x.test\r\n\r\nbody\r\n"

    def deliver(tx: PgTx) -> tuple[int, int]:
        user = tx.accounts.add_user("s@example.test", "h", "s")
        inbox = tx.mailboxes.require(user, "INBOX").id
        blob = tx.blobs.add(message)
        tx.messages.append(inbox, blob, size=len(message), internal_date=1.0)
        return inbox, blob

    inbox, blob = asyncio.run(store.write(deliver))

    def kept() -> int:
        with psycopg.connect(dsn, password=PASSWORD) as conn:
            row = conn.execute(
                "SELECT count(*) FROM blob_summaries s JOIN blob_subjects t USING (blob_id)"
                " WHERE blob_id = %s AND t.subject LIKE %s",
                (blob, "%café%"),
            ).fetchone()
            assert row is not None
            return int(row[0])

    assert kept() == 0
    rows = asyncio.run(
        store.read(lambda tx: tx.messages.fetch_rows(inbox, [1], summary=True, content=False))
    )
    assert rows[0].summary is not None
    deadline = time.monotonic() + 10
    while kept() == 0:  # the writer keeps it as derived work, once the read is answered
        assert time.monotonic() < deadline, "the summary the reader made was not kept"
        asyncio.run(store.write(lambda tx: None))  # a commit: derived work follows it
    assert kept() == 1


def test_a_crash_of_postgresql_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Writers keep appending while PostgreSQL stops as a crash would and starts again: writes
    meanwhile fail as StorageFailure (a temporary error for the client), the pool reconnects,
    and every write that was answered is there after the recovery."""
    server = PostgresServer()  # its own: this one is crashed
    try:
        server.start()
        database = server.new_database()
        store = PgStore(server.dsn(database), tmp_path / "data", password=PASSWORD)
        store.open()
        try:
            inbox = asyncio.run(store.write(_user_with_inbox))
            acknowledged, failures, later = asyncio.run(
                _append_through_a_crash(store, server, inbox)
            )
            assert failures > 0 and later > 0  # refused during the outage, answered after it
            stored = asyncio.run(store.read(lambda tx: [s.uid for s in tx.messages.states(inbox)]))
            assert set(acknowledged) <= set(stored)
        finally:
            store.close()
    finally:
        server.stop()


def _user_with_inbox(tx: PgTx) -> int:
    user = tx.accounts.add_user("load@example.test", "h", "s")
    return tx.mailboxes.require(user, "INBOX").id


async def _append_through_a_crash(
    store: PgStore, server: PostgresServer, inbox: int
) -> tuple[list[int], int, int]:
    """(the UIDs answered, the writes refused, the writes answered once the server was back)."""
    acknowledged: list[int] = []
    failures = later = 0
    enough = asyncio.Event()  # some writes answered before the crash
    crashed = asyncio.Event()

    def one(tx: PgTx) -> int:
        blob = tx.blobs.add(b"Subject: load\r\n\r\nbody\r\n")
        return tx.messages.append(inbox, blob, size=23, internal_date=1.0)

    async def writer() -> None:
        nonlocal failures, later
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and later < 100:
            try:
                acknowledged.append(await store.write(one))
            except StorageFailure:
                failures += 1
                continue
            if crashed.is_set():
                later += 1
            if len(acknowledged) >= 100:
                enough.set()

    async def crash() -> None:
        await asyncio.wait_for(enough.wait(), timeout=30)
        await asyncio.to_thread(server.crash_and_restart)
        crashed.set()

    await asyncio.gather(crash(), *(writer() for _ in range(8)))
    return acknowledged, failures, later


def test_a_database_down_at_start_is_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`open` tries again while PostgreSQL does not answer (one warning each time, without the
    password), and opens once it does; past `start_wait` it is one line with the fix."""
    server = PostgresServer()
    try:
        server.start()
        database = server.new_database()
        server.halt()
        with pytest.raises(StorageFailure, match="check that PostgreSQL runs"):
            PgStore(server.dsn(database), tmp_path / "a", password=PASSWORD, start_wait=1).open()
        caplog.clear()
        store = PgStore(server.dsn(database), tmp_path / "b", password=PASSWORD, start_wait=30)
        opened: list[BaseException | None] = []
        opener = threading.Thread(target=lambda: opened.append(_open(store)))
        opener.start()
        deadline = time.monotonic() + 20
        while "trying again" not in caplog.text:  # it waits: bring the server back
            assert time.monotonic() < deadline and opener.is_alive(), caplog.text
            time.sleep(0.05)
        server.resume()
        opener.join(timeout=40)
        try:
            assert opened == [None]
            assert asyncio.run(store.write(_user_with_inbox)) > 0
        finally:
            store.close()
        assert PASSWORD not in caplog.text
    finally:
        server.stop()


def _open(store: PgStore) -> BaseException | None:
    try:
        store.open()
    except BaseException as error:
        return error
    return None


def test_two_nodes_appending_to_one_mailbox_never_share_a_uid_or_modseq(
    dsn: str, tmp_path: Path
) -> None:
    """Two stores on one database (two nodes), each with several writers appending to the same
    INBOX at once: the UIDs and MODSEQs handed out are all different, and together they are
    exactly 1..N (UIDNEXT and HIGHESTMODSEQ are taken in the appending transaction, under the
    mailbox row's lock, RFC 3501 §2.3.1.1, RFC 7162 §3.1.1)."""
    nodes = [PgStore(dsn, tmp_path / name, password=PASSWORD) for name in ("a", "b")]
    for node in nodes:
        node.open()
    try:
        inbox = asyncio.run(nodes[0].write(_user_with_inbox))
        per_writer, writers = 40, 4

        def one(tx: PgTx) -> int:
            blob = tx.blobs.add(b"Subject: both\r\n\r\nbody\r\n")
            return tx.messages.append(inbox, blob, size=23, internal_date=1.0)

        async def load(node: PgStore) -> list[int]:
            async def writer() -> list[int]:
                return [await node.write(one) for _ in range(per_writer)]

            return [
                uid
                for uids in await asyncio.gather(*(writer() for _ in range(writers)))
                for uid in uids
            ]

        answered: list[list[int]] = [[], []]
        threads = [
            threading.Thread(target=lambda i=i: answered[i].extend(asyncio.run(load(nodes[i]))))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        total = 2 * writers * per_writer
        assert sorted(answered[0] + answered[1]) == list(range(1, total + 1))
        assert answered[0] and answered[1]
        states = asyncio.run(nodes[1].read(lambda tx: tx.messages.states(inbox)))
        assert [s.uid for s in states] == list(range(1, total + 1))
        assert len({s.modseq for s in states}) == total
        info = asyncio.run(nodes[1].read(lambda tx: tx.mailboxes.get(inbox)))
        assert info is not None and info.uidnext == total + 1
        assert info.highestmodseq == max(s.modseq for s in states)
    finally:
        for node in nodes:
            node.close()


def test_a_cli_store_makes_the_data_dir_its_signals_need(dsn: str, tmp_path: Path) -> None:
    """`postroom user add` on a new PostgreSQL installation, before any server ran: the data
    directory for the signal stamps is made (0700), so the command does not fail after its
    commit."""
    data_dir = tmp_path / "new" / "data"
    direct = PgDirect(dsn, data_dir, password=PASSWORD)
    try:
        with direct.transaction() as tx:
            tx.accounts.add_user("new@example.test", "h", "s")
        direct.signals.mark("accounts")
    finally:
        direct.close()
    assert (data_dir / "accounts.changed").exists()
    assert data_dir.stat().st_mode & 0o777 == 0o700
