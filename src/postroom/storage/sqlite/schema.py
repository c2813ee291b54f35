"""The SQLite schema of the embedded store: accounts, the queue, history, mailboxes, blobs and
DKIM keys.

One message body is one blob, referenced (and counted) by the queue entry and by every mailbox
copy; the per-copy trace headers (Received, Return-Path) live in a small `prefix` beside the
reference, so delivering to many users never copies the body.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from postroom.storage.sqlite.history import history_keys, keys_text

SCHEMA_VERSION = 13

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY,
    address       TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    scram         TEXT NOT NULL,
    created       REAL NOT NULL,
    admin         INTEGER NOT NULL DEFAULT 0  -- may use /admin/ and the admin API (schema 10)
);

CREATE TABLE IF NOT EXISTS aliases (
    address TEXT NOT NULL,
    target  TEXT NOT NULL,
    PRIMARY KEY (address, target)
);

CREATE TABLE IF NOT EXISTS blobs (
    id   INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    refs INTEGER NOT NULL,
    data BLOB,          -- the content, when small
    path TEXT           -- file under data_dir/blobs, when large
);

-- IMAP's view of a blob (ENVELOPE, BODYSTRUCTURE, header block, sort keys), made when it first
-- enters a mailbox. A table of its own: reading it never walks the pages of a large `data`.
CREATE TABLE IF NOT EXISTS blob_summaries (
    blob_id INTEGER PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE,
    summary BLOB NOT NULL
);

-- Every Subject: of a blob, decoded and case-folded, written with its summary: SEARCH SUBJECT
-- reads these narrow rows (a hundred to a page) instead of the summaries (a few to a page).
CREATE TABLE IF NOT EXISTS blob_subjects (
    blob_id INTEGER PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE,
    subject TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS queue_messages (
    id          TEXT PRIMARY KEY,
    blob_id     INTEGER NOT NULL REFERENCES blobs(id),
    prefix      BLOB NOT NULL,       -- trace headers stamped on arrival (Received, ...)
    sender      TEXT NOT NULL,       -- "" is the null reverse-path
    size        INTEGER NOT NULL,    -- len(prefix) + blob size
    params      TEXT NOT NULL,       -- JSON: SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH
    arrival     REAL NOT NULL,
    client_addr TEXT NOT NULL,
    client_helo TEXT NOT NULL,
    protocol    TEXT NOT NULL,       -- SMTP/ESMTP/ESMTPS/ESMTPA/ESMTPSA (RFC 3848)
    tls         TEXT NOT NULL,       -- cipher description or ""
    auth_user   TEXT NOT NULL,       -- "" when not authenticated
    held        INTEGER NOT NULL DEFAULT 0,
    -- auth: the inbound checks ("spf=pass dkim=pass ..."); junk: local copies go to Junk
    auth        TEXT NOT NULL DEFAULT '',
    junk        INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS queue_recipients (
    id            INTEGER PRIMARY KEY,
    message_id    TEXT NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,
    address       TEXT NOT NULL,     -- final address (after alias expansion)
    original      TEXT NOT NULL,     -- the RCPT TO address as given
    orcpt         TEXT,              -- RFC 3461 ORCPT, "addr-type;address"
    notify        TEXT,              -- RFC 3461 NOTIFY, comma-separated
    user_id       INTEGER,           -- local user, NULL for remote
    state         TEXT NOT NULL,     -- queued|deferred|delivered|failed|held
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  REAL NOT NULL,
    last_reply    TEXT NOT NULL DEFAULT '',
    delay_notified INTEGER NOT NULL DEFAULT 0,
    scheduled_attempt REAL,            -- planned attempt a manual retry left in place
    early_attempts INTEGER NOT NULL DEFAULT 0, -- manual ones, not counted by the schedule
    spam_score    INTEGER NOT NULL DEFAULT 0,  -- the junk filter's RFC 5235 score, 0: not tested
    junk          INTEGER NOT NULL DEFAULT 0,  -- this local copy goes to the user's Junk
    lease_node    TEXT,              -- the node delivering it now (queue leases, issue 16)
    lease_until   REAL               -- when that lease ends: due at coalesce(this, next_attempt)
);
CREATE INDEX IF NOT EXISTS queue_recipients_message ON queue_recipients(message_id);
CREATE INDEX IF NOT EXISTS queue_recipients_due ON queue_recipients(state, next_attempt);

-- Delivery history, kept after a message leaves the queue (for `queue show` and traces) until
-- [queue] keep_history: each accepted message's envelope and its recipients' events (delivered,
-- deferred, failed, ...) appended as lines of JSON. One b-tree, no other index: queue IDs begin
-- with their time, so the oldest are pruned by a range of IDs (every accepted message writes
-- here: each index would cost every commit a page).
CREATE TABLE IF NOT EXISTS secrets (
    name        TEXT PRIMARY KEY,
    value       BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS message_history (
    id          TEXT PRIMARY KEY,
    arrival     REAL NOT NULL,
    sender      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    client_addr TEXT NOT NULL,
    client_helo TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    auth_user   TEXT NOT NULL,
    -- events: [time, recipient, event, reply, relay(, details)] per line; auth: the inbound
    -- checks; reception: JSON of how it was received (TLS, Message-ID, verdict, recipients)
    events      TEXT NOT NULL DEFAULT '',
    auth        TEXT NOT NULL DEFAULT '',
    reception   TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

-- Report lines of one message gathered while its deliveries to several destinations run, so
-- the sender gets ONE report per kind (RFC 3464 allows many recipients per report).
CREATE TABLE IF NOT EXISTS queue_reports_pending (
    message_id TEXT NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,       -- failure|delay|success
    entry      TEXT NOT NULL        -- JSON of one ReportRecipient
);
CREATE INDEX IF NOT EXISTS queue_reports_pending_message ON queue_reports_pending(message_id);

-- DMARC aggregate reports other receivers sent about our domains: the parsed summary, its
-- rows as JSON (a report is read whole), one per reporter and report ID.
CREATE TABLE IF NOT EXISTS dmarc_reports (
    id          INTEGER PRIMARY KEY,
    reporter    TEXT NOT NULL,       -- org_name
    email       TEXT NOT NULL,
    report_id   TEXT NOT NULL,
    begin_time  INTEGER NOT NULL,    -- the period, Unix seconds
    end_time    INTEGER NOT NULL,
    domain      TEXT NOT NULL,       -- the policy domain
    policy      TEXT NOT NULL,       -- the policy published, as "p=reject; adkim=r; ..."
    schema      TEXT NOT NULL,       -- rfc7489|dmarcbis
    errors      TEXT NOT NULL,       -- JSON array of the report's error elements
    received    REAL NOT NULL,
    message_id  TEXT NOT NULL,       -- Message-ID of the mail that carried it
    messages    INTEGER NOT NULL,    -- the sum of the rows' counts
    rows        TEXT NOT NULL,       -- JSON: one array per row (storage/sqlite/dmarc.py)
    UNIQUE (reporter, report_id)
);
CREATE INDEX IF NOT EXISTS dmarc_reports_domain ON dmarc_reports(domain, begin_time);

-- What our inbound checks evaluated, for the aggregate reports we send: counted per UTC day,
-- source IP, Author Domain and results (a JSON array), so a flood of one kind is one row.
CREATE TABLE IF NOT EXISTS dmarc_evaluations (
    policy_domain TEXT NOT NULL,
    day           INTEGER NOT NULL,  -- start of the UTC day, Unix seconds
    source_ip     TEXT NOT NULL,
    header_from   TEXT NOT NULL,
    results       TEXT NOT NULL,     -- JSON: result, disposition, override, alignment, spf, dkim
    count         INTEGER NOT NULL,
    last_seen     REAL NOT NULL,
    record        TEXT NOT NULL,     -- the DMARC record applied (the latest seen)
    rua           TEXT NOT NULL,     -- JSON array of its rua URIs
    wants_reports INTEGER NOT NULL,
    PRIMARY KEY (policy_domain, day, source_ip, header_from, results)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS mailboxes (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    uidvalidity   INTEGER NOT NULL,
    uidnext       INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    special_use   TEXT NOT NULL DEFAULT '',
    recent_uid    INTEGER NOT NULL DEFAULT 1, -- UIDs from here on are Recent to the next SELECT
    UNIQUE (user_id, name)
);

-- RFC 3501 §6.3.6: a subscription is a name; it may outlive (or precede) its mailbox.
CREATE TABLE IF NOT EXISTS subscriptions (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE IF NOT EXISTS mailbox_messages (
    id            INTEGER PRIMARY KEY,
    mailbox_id    INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid           INTEGER NOT NULL,
    modseq        INTEGER NOT NULL,
    flags         TEXT NOT NULL DEFAULT '',   -- space-separated system flags and keywords
    seen          INTEGER NOT NULL DEFAULT 0,
    internal_date REAL NOT NULL,
    size          INTEGER NOT NULL,
    blob_id       INTEGER NOT NULL REFERENCES blobs(id),
    prefix        BLOB NOT NULL,              -- Return-Path + trace headers of this copy
    UNIQUE (mailbox_id, uid)
);
CREATE INDEX IF NOT EXISTS mailbox_messages_modseq ON mailbox_messages(mailbox_id, modseq);

-- UIDs expunged from a mailbox, with the MODSEQ of their expunge (RFC 7162 §3.2.10 VANISHED).
CREATE TABLE IF NOT EXISTS mailbox_vanished (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid        INTEGER NOT NULL,
    modseq     INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX IF NOT EXISTS mailbox_vanished_modseq ON mailbox_vanished(mailbox_id, modseq);
"""

# Schema 6. One statement (a migration step runs it as it is, and it must stay idempotent).
DKIM_KEYS = """
-- DKIM key pairs (RFC 6376; ed25519 per RFC 8463), one per selector of a domain. The private
-- key is a secret: the database file is 0600 in a 0700 data_dir (storage/private.py).
CREATE TABLE IF NOT EXISTS dkim_keys (
    domain        TEXT NOT NULL,
    selector      TEXT NOT NULL,
    algorithm     TEXT NOT NULL,     -- ed25519|rsa
    private_key   BLOB NOT NULL,     -- as dkimpy takes it: PEM (rsa), base64 of the seed (ed25519)
    public_key    TEXT NOT NULL,     -- the p= value of its record
    created       REAL NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('announced', 'active', 'retired')),
    state_changed REAL NOT NULL,     -- when it got its state (a retired key goes a week later)
    PRIMARY KEY (domain, selector)
) WITHOUT ROWID
"""

SCHEMA += DKIM_KEYS + ";\n"

JUNK = """
-- The junk filter's training, per user: in how many of the ham and of the spam messages the
-- user trained each token occurs; the totals; and which messages (by a digest of their bytes)
-- were trained as what, so training again is idempotent and a change of mind moves the counts.
CREATE TABLE IF NOT EXISTS junk_tokens (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token   TEXT NOT NULL,
    ham     INTEGER NOT NULL DEFAULT 0,
    spam    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, token)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS junk_totals (
    user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    ham     INTEGER NOT NULL DEFAULT 0,
    spam    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS junk_trained (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    digest  BLOB NOT NULL,
    spam    INTEGER NOT NULL,
    PRIMARY KEY (user_id, digest)
) WITHOUT ROWID
"""
SCHEMA += JUNK + ";\n"

SIEVE = """
-- Each user's Sieve scripts (RFC 5228), at most one active (RFC 5804 §1.1); vacation replies
-- sent (RFC 5230 §4.2: one per sender and handle per period) and duplicate tracking (RFC 7352),
-- each kept until its period ends.
CREATE TABLE IF NOT EXISTS sieve_scripts (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    source  TEXT NOT NULL,
    active  INTEGER NOT NULL DEFAULT 0,
    changed REAL NOT NULL,
    PRIMARY KEY (user_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sieve_replies (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender  TEXT NOT NULL,
    handle  TEXT NOT NULL,
    until   REAL NOT NULL,
    PRIMARY KEY (user_id, sender, handle)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sieve_duplicates (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key     TEXT NOT NULL,
    until   REAL NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID
"""
SCHEMA += SIEVE + ";\n"
# Schema 9: the abuse defences' state (services/antispam.py, services/limits.py). Statements
# separated by ";" (a migration step runs each), all idempotent.
ABUSE = """
-- Greylisting (client network, sender, recipient) triplets, and the networks that passed.
CREATE TABLE IF NOT EXISTS greylist_triplets (
    key        TEXT PRIMARY KEY,
    first_seen REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS greylist_networks (
    network   TEXT PRIMARY KEY,
    last_seen REAL NOT NULL
) WITHOUT ROWID;
-- Temporary blocks (login guessing, recipient guessing) that outlive a restart.
CREATE TABLE IF NOT EXISTS abuse_blocks (
    kind    TEXT NOT NULL,
    client  TEXT NOT NULL,
    account TEXT NOT NULL,
    until   REAL NOT NULL,
    reason  TEXT NOT NULL,
    PRIMARY KEY (kind, client, account)
) WITHOUT ROWID;
-- What each authenticated user sent in the current hour ([limits] messages_per_hour, ...).
CREATE TABLE IF NOT EXISTS sending_counts (
    account      TEXT PRIMARY KEY,
    window_start REAL NOT NULL,
    messages     INTEGER NOT NULL,
    recipients   INTEGER NOT NULL
) WITHOUT ROWID
"""

SCHEMA += ABUSE + ";\n"

# Schema 10: the delivery trace (services/trace.py, `postroom trace`).
TRACE = """
-- What each message kept in message_history is found by, one per line: "a:" + an address
-- (its sender, each recipient as given and as delivered), "m:" + its Message-ID (lower case,
-- without <>). Written with the history row, pruned with it (storage/sqlite/history.py). By
-- queue ID, so new rows are appended; a lookup scans from the newest.
CREATE TABLE IF NOT EXISTS trace_keys (
    message_id TEXT PRIMARY KEY,
    keys       TEXT NOT NULL
) WITHOUT ROWID
"""
SCHEMA += TRACE + ";\n"

# Schema 11: the web admin (web/auth.py). Statements separated by ";", all idempotent.
WEB_ADMIN = """
-- Logged-in browser sessions: the SHA-256 of the cookie's random 256-bit ID (the ID itself is
-- never stored), the session's CSRF token, and when it began and was last used.
CREATE TABLE IF NOT EXISTS web_sessions (
    id_hash   BLOB PRIMARY KEY,
    user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf      TEXT NOT NULL,
    created   REAL NOT NULL,
    last_seen REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions(user_id);
-- API bearer tokens (`postroom user token`): the SHA-256 of the token, whose it is, its name.
CREATE TABLE IF NOT EXISTS api_tokens (
    id_hash   BLOB PRIMARY KEY,
    user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    created   REAL NOT NULL
) WITHOUT ROWID
"""
SCHEMA += WEB_ADMIN + ";\n"

# Schema 12: app passwords (services/app_passwords.py): named, random, kept as argon2 hashes;
# they log in to IMAP, POP3, SMTP AUTH and ManageSieve, never to the web pages.
APP_PASSWORDS = """
CREATE TABLE IF NOT EXISTS app_passwords (
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created       REAL NOT NULL,
    PRIMARY KEY (user_id, name)
) WITHOUT ROWID
"""
SCHEMA += APP_PASSWORDS + ";\n"


def _add_admin_flag(conn: sqlite3.Connection) -> None:
    """Schema 11: accounts get the admin flag (a new store has it from SCHEMA)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
    if "admin" not in present:
        conn.execute("ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0")


def _move_subjects(conn: sqlite3.Connection) -> None:
    """Schema 3: subjects leave blob_summaries for blob_subjects (a schema 1 store, whose
    blob_summaries was just made in the new shape, has none to move)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(blob_summaries)")}
    if "subject" in columns:
        conn.execute(
            "INSERT OR REPLACE INTO blob_subjects(blob_id, subject)"
            " SELECT blob_id, subject FROM blob_summaries"
        )
        conn.execute("ALTER TABLE blob_summaries DROP COLUMN subject")


def _keep_history(conn: sqlite3.Connection) -> None:
    """Schema 4: attempts move from queue_attempts (gone with their queue entry) to the
    history tables, and recipients get the columns that keep a manual retry off the schedule."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(queue_recipients)")}
    if "scheduled_attempt" not in columns:
        conn.execute("ALTER TABLE queue_recipients ADD COLUMN scheduled_attempt REAL")
        conn.execute(
            "ALTER TABLE queue_recipients ADD COLUMN early_attempts INTEGER NOT NULL DEFAULT 0"
        )
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "queue_attempts" not in tables:
        return
    conn.execute(
        "INSERT OR IGNORE INTO message_history(id, arrival, sender, size, client_addr,"
        " client_helo, protocol, auth_user) SELECT id, arrival, sender, size, client_addr,"
        " client_helo, protocol, auth_user FROM queue_messages"
    )
    attempts = conn.execute(
        "SELECT r.message_id, a.time, r.address, a.reply FROM queue_attempts a"
        " JOIN queue_recipients r ON r.id = a.recipient_id ORDER BY a.time, a.rowid"
    ).fetchall()
    for message_id, moment, address, reply in attempts:
        kind = {"2": "delivered", "5": "failed"}.get(str(reply)[:1], "deferred")
        line = json.dumps([moment, address, kind, reply, None]) + "\n"
        conn.execute(
            "UPDATE message_history SET events = events || ? WHERE id = ?", (line, message_id)
        )
    conn.execute("DROP TABLE queue_attempts")


def _add_inbound_checks(conn: sqlite3.Connection) -> None:
    """Schema 5: the inbound checks kept with each message, and its Junk mark (the tables may
    be new, created by this version's SCHEMA when an older store lacked them)."""
    for table, column, kind in (
        ("queue_messages", "auth", "TEXT NOT NULL DEFAULT ''"),
        ("queue_messages", "junk", "INTEGER NOT NULL DEFAULT 0"),
        ("message_history", "auth", "TEXT NOT NULL DEFAULT ''"),
    ):
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _add_recipient_scores(conn: sqlite3.Connection) -> None:
    """Schema 7: each queued recipient keeps its junk filter score and its Junk mark (the junk
    tables themselves are made by SCHEMA)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(queue_recipients)")}
    for column in ("spam_score", "junk"):
        if column not in present:
            conn.execute(
                f"ALTER TABLE queue_recipients ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
            )


def _add_trace(conn: sqlite3.Connection) -> None:
    """Schema 10: the history keeps how each message was received (none for the messages it
    kept already), and what it is found by (their senders and recipients, from the events)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(message_history)")}
    if "reception" not in present:
        conn.execute("ALTER TABLE message_history ADD COLUMN reception TEXT NOT NULL DEFAULT ''")
    rows = conn.execute("SELECT id, sender, events FROM message_history")
    conn.executemany(
        "INSERT OR IGNORE INTO trace_keys(message_id, keys) VALUES (?, ?)",
        [(row[0], keys_text(history_keys(row[1], row[2]))) for row in rows],
    )


def _add_leases(conn: sqlite3.Connection) -> None:
    """Schema 13: queue leases, the node delivering a recipient and until when (storage.api
    Queue.claim_due)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(queue_recipients)")}
    for column, kind in (("lease_node", "TEXT"), ("lease_until", "REAL")):
        if column not in present:
            conn.execute(f"ALTER TABLE queue_recipients ADD COLUMN {column} {kind}")


# Steps from one schema version to the next, for stores created by an older postroom: SQL
# statements, or functions of the connection.
MIGRATIONS: dict[int, tuple[str | Callable[[sqlite3.Connection], None], ...]] = {
    2: (
        "ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 1",
        "INSERT OR IGNORE INTO subscriptions(user_id, name)"
        " SELECT user_id, name FROM mailboxes WHERE subscribed = 1",
        "ALTER TABLE mailboxes DROP COLUMN subscribed",
    ),
    3: (_move_subjects,),
    4: (_keep_history,),
    5: (_add_inbound_checks,),
    6: (DKIM_KEYS,),
    7: (_add_recipient_scores,),
    9: tuple(statement for statement in ABUSE.split(";") if statement.strip()),
    10: (_add_trace,),
    11: (_add_admin_flag, *(s for s in WEB_ADMIN.split(";") if s.strip())),
    12: (APP_PASSWORDS,),
    13: (_add_leases,),
}
