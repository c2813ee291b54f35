"""A store written by an older postroom (schema 1 to 4) opens with the current code: the columns
and tables IMAP needs are added (and the DKIM keys table), subscriptions and subjects carried
over, and nothing stored is lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from postroom.model.queue import new_queue_id
from postroom.storage.sqlite.connection import SqliteTx
from postroom.storage.sqlite.schema import SCHEMA_VERSION

VERSION_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (id INTEGER PRIMARY KEY, address TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL, scram TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE blobs (id INTEGER PRIMARY KEY, size INTEGER NOT NULL, refs INTEGER NOT NULL,
    data BLOB, path TEXT);
CREATE TABLE mailboxes (id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE, name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL, uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1, special_use TEXT NOT NULL DEFAULT '',
    subscribed INTEGER NOT NULL DEFAULT 1, UNIQUE (user_id, name));
CREATE TABLE mailbox_messages (id INTEGER PRIMARY KEY,
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL, modseq INTEGER NOT NULL, flags TEXT NOT NULL DEFAULT '',
    seen INTEGER NOT NULL DEFAULT 0, internal_date REAL NOT NULL, size INTEGER NOT NULL,
    blob_id INTEGER NOT NULL REFERENCES blobs(id), prefix BLOB NOT NULL,
    UNIQUE (mailbox_id, uid));
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO users VALUES (1, 'alice@example.test', 'h', 's', 0);
INSERT INTO blobs VALUES (1, 23, 1, X'5375626A6563743A2068690D0A0D0A626F64790D0A2E2E2E', NULL);
INSERT INTO mailboxes VALUES (1, 1, 'INBOX', 100, 2, 2, '', 1);
INSERT INTO mailboxes VALUES (2, 1, 'Old', 101, 1, 1, '', 0);
INSERT INTO mailbox_messages VALUES (1, 1, 1, 2, '\\Seen', 1, 0, 23, 1, X'');
"""


def test_version_1_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "postroom.db"
    conn = sqlite3.connect(path)
    conn.executescript(VERSION_1)
    conn.close()
    db = SqliteTx(path.parent)
    try:
        version = db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION)
        subscribed = db.conn.execute("SELECT name FROM subscriptions").fetchall()
        assert subscribed == [("INBOX",)]  # "Old" was not subscribed
        columns = {row[1] for row in db.conn.execute("PRAGMA table_info(mailboxes)")}
        assert "recent_uid" in columns and "subscribed" not in columns
        assert db.conn.execute("SELECT count(*) FROM blob_summaries").fetchone() == (0,)
        row = db.conn.execute("SELECT uid, flags FROM mailbox_messages").fetchone()
        assert row == (1, "\\Seen")
    finally:
        db.close()
    # Opening again is a no-op: the migration ran once.
    SqliteTx(path.parent).close()


def test_version_2_store_keeps_its_subjects_in_their_own_table(tmp_path: Path) -> None:
    path = tmp_path / "postroom.db"
    SqliteTx(path.parent).close()
    conn = sqlite3.connect(path)
    # Back to schema 2: the subject lived in blob_summaries.
    conn.executescript(
        """
        DROP TABLE blob_subjects;
        ALTER TABLE blob_summaries ADD COLUMN subject TEXT NOT NULL DEFAULT '';
        UPDATE meta SET value = '2' WHERE key = 'schema_version';
        INSERT INTO blobs VALUES (7, 4, 1, X'41424344', NULL);
        INSERT INTO blob_summaries(blob_id, summary, subject) VALUES (7, X'00', 'quarterly');
        """
    )
    conn.close()
    db = SqliteTx(path.parent)
    try:
        version = db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION)
        assert db.conn.execute("SELECT blob_id, subject FROM blob_subjects").fetchall() == [
            (7, "quarterly")
        ]
        columns = {row[1] for row in db.conn.execute("PRAGMA table_info(blob_summaries)")}
        assert columns == {"blob_id", "summary"}
        assert db.conn.execute("SELECT summary FROM blob_summaries").fetchall() == [(b"\x00",)]
    finally:
        db.close()


def test_version_3_store_keeps_its_attempts_as_history(tmp_path: Path) -> None:
    path = tmp_path / "postroom.db"
    SqliteTx(tmp_path).close()
    conn = sqlite3.connect(path)
    # Back to schema 3: attempts lived in queue_attempts, gone with their queue entry.
    conn.executescript(
        """
        DELETE FROM message_history;
        ALTER TABLE queue_messages DROP COLUMN auth;
        ALTER TABLE queue_messages DROP COLUMN junk;
        ALTER TABLE message_history DROP COLUMN auth;
        ALTER TABLE queue_recipients DROP COLUMN scheduled_attempt;
        ALTER TABLE queue_recipients DROP COLUMN early_attempts;
        CREATE TABLE queue_attempts (
            recipient_id INTEGER NOT NULL REFERENCES queue_recipients(id) ON DELETE CASCADE,
            time REAL NOT NULL, reply TEXT NOT NULL);
        UPDATE meta SET value = '3' WHERE key = 'schema_version';
        INSERT INTO blobs VALUES (1, 4, 1, X'41424344', NULL);
        INSERT INTO queue_messages(id, blob_id, prefix, sender, size, params, arrival,
            client_addr, client_helo, protocol, tls, auth_user)
            VALUES ('Q1', 1, X'', 'a@example.test', 4, '{}', 100.0, '127.0.0.1', 'h', 'ESMTP',
            '', '');
        INSERT INTO queue_recipients(id, message_id, address, original, state, attempts,
            next_attempt) VALUES (5, 'Q1', 'b@remote.test', 'b@remote.test', 'deferred', 2, 900);
        INSERT INTO queue_attempts VALUES (5, 200.0, '451 4.3.0 try later');
        INSERT INTO queue_attempts VALUES (5, 300.0, '421 4.4.2 timeout');
        """
    )
    conn.close()
    db = SqliteTx(tmp_path)
    try:
        tables = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master")}
        assert "queue_attempts" not in tables
        trace = db.history.trace("Q1")
        assert trace is not None and trace.sender == "a@example.test"
        assert [(e.time, e.recipient, e.event, e.reply) for e in trace.events] == [
            (200.0, "b@remote.test", "deferred", "451 4.3.0 try later"),
            (300.0, "b@remote.test", "deferred", "421 4.4.2 timeout"),
        ]
        message = db.queue.load("Q1")
        assert message is not None and message.recipients[0].attempts == 2
    finally:
        db.close()


def test_version_4_store_gains_the_inbound_checks_columns(tmp_path: Path) -> None:
    path = tmp_path / "postroom.db"
    SqliteTx(tmp_path).close()
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        ALTER TABLE queue_messages DROP COLUMN auth;
        ALTER TABLE queue_messages DROP COLUMN junk;
        ALTER TABLE message_history DROP COLUMN auth;
        UPDATE meta SET value = '4' WHERE key = 'schema_version';
        INSERT INTO blobs VALUES (1, 4, 1, X'41424344', NULL);
        INSERT INTO queue_messages(id, blob_id, prefix, sender, size, params, arrival,
            client_addr, client_helo, protocol, tls, auth_user)
            VALUES ('Q1', 1, X'', 'a@example.test', 4, '{}', 100.0, '127.0.0.1', 'h', 'ESMTP',
            '', '');
        INSERT INTO message_history(id, arrival, sender, size, client_addr, client_helo,
            protocol, auth_user) VALUES ('Q1', 100.0, 'a@example.test', 4, '127.0.0.1', 'h',
            'ESMTP', '');
        """
    )
    conn.close()
    db = SqliteTx(tmp_path)
    try:
        message = db.queue.load("Q1")
        assert message is not None
        assert message.envelope.auth == "" and message.envelope.junk is False
        trace = db.history.trace("Q1")
        assert trace is not None and trace.auth == ""
    finally:
        db.close()


def test_version_5_store_gets_the_dkim_keys_table(tmp_path: Path) -> None:
    path = tmp_path / "postroom.db"
    SqliteTx(tmp_path).close()
    conn = sqlite3.connect(path)
    # Back to schema 5: no DKIM keys yet.
    conn.executescript(
        """
        DROP TABLE dkim_keys;
        UPDATE meta SET value = '5' WHERE key = 'schema_version';
        INSERT INTO users(id, address, password_hash, scram, created)
            VALUES (1, 'alice@example.test', 'h', 's', 0);
        """
    )
    conn.close()
    db = SqliteTx(tmp_path)
    try:
        version = db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION)
        assert db.dkim_keys.keys() == []
        assert db.accounts.get_user("alice@example.test") is not None
    finally:
        db.close()


def test_version_9_store_keeps_its_history_findable_by_trace(tmp_path: Path) -> None:
    path = tmp_path / "postroom.db"
    SqliteTx(tmp_path).close()
    conn = sqlite3.connect(path)
    queue_id = new_queue_id(100.0)
    # Back to schema 9: no reception column, no trace keys; events of five fields.
    conn.executescript(
        f"""
        DROP TABLE trace_keys;
        ALTER TABLE message_history DROP COLUMN reception;
        UPDATE meta SET value = '9' WHERE key = 'schema_version';
        INSERT INTO message_history(id, arrival, sender, size, client_addr, client_helo,
            protocol, auth_user, events, auth) VALUES ('{queue_id}', 100.0, 'A@example.test', 4,
            '192.0.2.1', 'h', 'ESMTP', '',
            '[200.0, "b@remote.test", "deferred", "451 4.3.0 later", "mx.remote.test"]'
            || char(10), 'spf=pass');
        """
    )
    conn.close()
    db = SqliteTx(tmp_path)
    try:
        version = db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION)
        assert db.history.with_address("a@example.test", 50) == [queue_id]
        assert db.history.with_address("B@remote.test", 50) == [queue_id]
        trace = db.history.trace(queue_id)
        assert trace is not None and trace.reception is None and trace.auth == "spf=pass"
        (event,) = trace.events
        assert (event.event, event.reply, event.relay) == (
            "deferred",
            "451 4.3.0 later",
            "mx.remote.test",
        )
        assert (event.ip, event.tls, event.next_attempt) == ("", "", None)
        # Pruning removes what the migration added.
        assert db.history.prune(10**10) == 1
        assert db.history.with_address("b@remote.test", 50) == []
    finally:
        db.close()


def test_version_10_store_gets_the_admin_flag_and_web_sessions(tmp_path: Path) -> None:
    path = tmp_path / "postroom.db"
    SqliteTx(tmp_path).close()
    conn = sqlite3.connect(path)
    # Back to schema 10: no admin flag, no web sessions or API tokens.
    conn.executescript(
        """
        DROP TABLE web_sessions;
        DROP TABLE api_tokens;
        ALTER TABLE users DROP COLUMN admin;
        UPDATE meta SET value = '10' WHERE key = 'schema_version';
        INSERT INTO users VALUES (1, 'alice@example.test', 'h', 's', 0);
        """
    )
    conn.close()
    db = SqliteTx(tmp_path)
    try:
        version = db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION)
        user = db.accounts.get_user("alice@example.test")
        assert user is not None and user.admin is False
        db.accounts.set_admin("alice@example.test", True)
        db.web.add_session(b"h" * 32, user.id, "csrf", 10.0)
        session = db.web.session(b"h" * 32)
        assert session is not None and session.user.admin and session.csrf == "csrf"
    finally:
        db.close()


def test_version_11_store_gets_app_passwords(tmp_path: Path) -> None:
    path = tmp_path / "postroom.db"
    SqliteTx(tmp_path).close()
    conn = sqlite3.connect(path)
    # Back to schema 11: no app passwords.
    conn.executescript(
        """
        DROP TABLE app_passwords;
        UPDATE meta SET value = '11' WHERE key = 'schema_version';
        INSERT INTO users VALUES (1, 'alice@example.test', 'h', 's', 0, 0);
        """
    )
    conn.close()
    db = SqliteTx(tmp_path)
    try:
        version = db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION)
        assert db.web.app_passwords(1) == []
        assert db.web.add_app_password(1, "phone", "hash", 5.0)
        assert not db.web.add_app_password(1, "phone", "other", 6.0)
        assert db.web.app_passwords(1) == [("phone", 5.0)]
        assert db.web.app_password_hashes(1) == ["hash"]
        assert db.web.delete_app_password(1, "phone")
        assert not db.web.delete_app_password(1, "phone")
    finally:
        db.close()


def test_version_12_store_gets_queue_leases(tmp_path: Path) -> None:
    path = tmp_path / "postroom.db"
    SqliteTx(tmp_path).close()
    conn = sqlite3.connect(path)
    # Back to schema 12: no lease columns, one deferred recipient queued.
    conn.executescript(
        """
        ALTER TABLE queue_recipients DROP COLUMN lease_node;
        ALTER TABLE queue_recipients DROP COLUMN lease_until;
        UPDATE meta SET value = '12' WHERE key = 'schema_version';
        INSERT INTO blobs(id, size, refs, data) VALUES (1, 1, 1, X'78');
        INSERT INTO queue_messages(id, blob_id, prefix, sender, size, params, arrival,
            client_addr, client_helo, protocol, tls, auth_user)
            VALUES ('Q1', 1, X'', 's@x.test', 1, '{}', 1, '', '', 'ESMTP', '', '');
        INSERT INTO queue_recipients(message_id, address, original, state, next_attempt)
            VALUES ('Q1', 'r@y.test', 'r@y.test', 'deferred', 5);
        """
    )
    conn.close()
    db = SqliteTx(tmp_path)
    try:
        version = db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION)
        message = db.queue.load("Q1")
        assert message is not None
        [rcpt] = message.recipients
        assert (rcpt.next_attempt, rcpt.lease_node, rcpt.lease_until) == (5.0, None, None)
    finally:
        db.close()
