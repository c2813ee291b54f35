"""The PostgreSQL schema of the store, as versioned migrations postroom applies itself.

`MIGRATIONS[n]` takes a database from version n-1 to n; a new database runs them all. The
version lives in `meta` (key 'schema_version'). `migrate` runs in one transaction under an
advisory lock, so nodes starting together migrate once, one after the other, and a database
newer than this postroom is refused rather than used.

Text that is sorted or compared as a key is `COLLATE "C"` (byte order, as SQLite's BINARY), so
listings come out in the same order whatever collation the database was created with. Times
are Unix seconds as double precision, as the SQLite store keeps them.

Message contents are `blobs` rows counted by their references, their bytes split into
`blob_chunks` of CHUNK_SIZE bytes (`bytea`), written and read a chunk at a time.
"""

from __future__ import annotations

import psycopg

SCHEMA_VERSION = 2
# pg_advisory_xact_lock key taken while migrating ("postroom" in ASCII, as a bigint).
MIGRATION_LOCK = 0x706F7374726F6F6D

_VERSION_1 = """
CREATE TABLE meta (
    key   text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address       text COLLATE "C" NOT NULL UNIQUE,
    password_hash text NOT NULL,
    scram         text NOT NULL,
    created       double precision NOT NULL,
    admin         boolean NOT NULL DEFAULT false
);

CREATE TABLE aliases (
    address text COLLATE "C" NOT NULL,
    target  text COLLATE "C" NOT NULL,
    PRIMARY KEY (address, target)
);

-- A message's content, counted by the queue entries and mailbox copies that reference it.
CREATE TABLE blobs (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    size bigint NOT NULL,
    refs integer NOT NULL
);
CREATE TABLE blob_chunks (
    blob_id bigint NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
    seq     integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (blob_id, seq)
);

-- RFC 3501 §5.1: UIDVALIDITY, UIDNEXT; RFC 7162: HIGHESTMODSEQ.
CREATE TABLE mailboxes (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          text COLLATE "C" NOT NULL,
    uidvalidity   bigint NOT NULL,
    uidnext       bigint NOT NULL DEFAULT 1,
    highestmodseq bigint NOT NULL DEFAULT 1,
    special_use   text NOT NULL DEFAULT '',
    recent_uid    bigint NOT NULL DEFAULT 1,
    UNIQUE (user_id, name)
);

-- RFC 3501 §6.3.6: a subscription is a name; it may outlive (or precede) its mailbox.
CREATE TABLE subscriptions (
    user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name    text COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE mailbox_messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailbox_id    bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid           bigint NOT NULL,
    modseq        bigint NOT NULL,
    flags         text NOT NULL DEFAULT '',
    seen          boolean NOT NULL DEFAULT false,
    internal_date double precision NOT NULL,
    size          bigint NOT NULL,
    blob_id       bigint NOT NULL REFERENCES blobs(id),
    prefix        bytea NOT NULL,
    UNIQUE (mailbox_id, uid)
);
CREATE INDEX mailbox_messages_blob ON mailbox_messages(blob_id);
CREATE INDEX mailbox_messages_modseq ON mailbox_messages(mailbox_id, modseq);

-- UIDs expunged from a mailbox, with the MODSEQ of their expunge (RFC 7162 §3.2.10 VANISHED).
CREATE TABLE mailbox_vanished (
    mailbox_id bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid        bigint NOT NULL,
    modseq     bigint NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX mailbox_vanished_modseq ON mailbox_vanished(mailbox_id, modseq);

-- IMAP's view of a blob (storage/summary.py), and its decoded, case-folded Subject: lines
-- (what SEARCH SUBJECT reads), made when it first enters a mailbox.
CREATE TABLE blob_summaries (
    blob_id bigint PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE,
    summary bytea NOT NULL
);
CREATE TABLE blob_subjects (
    blob_id bigint PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE,
    subject text NOT NULL
);

CREATE TABLE queue_messages (
    id          text COLLATE "C" PRIMARY KEY,
    blob_id     bigint NOT NULL REFERENCES blobs(id),
    prefix      bytea NOT NULL,              -- trace headers stamped on arrival (Received, ...)
    sender      text NOT NULL,               -- "" is the null reverse-path
    size        bigint NOT NULL,             -- len(prefix) + blob size
    params      text NOT NULL,               -- JSON: SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH
    arrival     double precision NOT NULL,
    client_addr text NOT NULL,
    client_helo text NOT NULL,
    protocol    text NOT NULL,               -- SMTP/ESMTP/ESMTPS/ESMTPA/ESMTPSA (RFC 3848)
    tls         text NOT NULL,
    auth_user   text NOT NULL,
    held        boolean NOT NULL DEFAULT false,
    auth        text NOT NULL DEFAULT '',    -- the inbound checks ("spf=pass dkim=pass ...")
    junk        boolean NOT NULL DEFAULT false
);

CREATE TABLE queue_recipients (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id        text COLLATE "C" NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,
    address           text NOT NULL,         -- final address (after alias expansion)
    original          text NOT NULL,         -- the RCPT TO address as given
    orcpt             text,                  -- RFC 3461 ORCPT, "addr-type;address"
    notify            text,                  -- RFC 3461 NOTIFY, comma-separated
    user_id           bigint,                -- local user, NULL for remote
    state             text NOT NULL,         -- queued|deferred|delivered|failed|held
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt      double precision NOT NULL,
    last_reply        text NOT NULL DEFAULT '',
    delay_notified    boolean NOT NULL DEFAULT false,
    scheduled_attempt double precision,      -- planned attempt a manual retry left in place
    early_attempts    integer NOT NULL DEFAULT 0, -- manual ones, not counted by the schedule
    spam_score        integer NOT NULL DEFAULT 0, -- the junk filter's RFC 5235 score
    junk              boolean NOT NULL DEFAULT false
);
CREATE INDEX queue_recipients_message ON queue_recipients(message_id);
CREATE INDEX queue_recipients_due ON queue_recipients(state, next_attempt);

-- Report lines of one message gathered while its deliveries to several destinations run, so
-- the sender gets ONE report per kind (RFC 3464 allows many recipients per report).
CREATE TABLE queue_reports_pending (
    message_id text COLLATE "C" NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,
    kind       text NOT NULL,                -- failure|delay|success
    entry      text NOT NULL                 -- JSON of one ReportRecipient
);
CREATE INDEX queue_reports_pending_message ON queue_reports_pending(message_id);

-- Delivery history, kept after a message leaves the queue until [queue] keep_history: each
-- accepted message's envelope, its events (one row each: inserted, never rewritten) and the
-- keys it is found by (its addresses, "a:...", and Message-ID, "m:..."). Queue IDs begin with
-- their arrival time, so the oldest go by a range of IDs.
CREATE TABLE message_history (
    id          text COLLATE "C" PRIMARY KEY,
    arrival     double precision NOT NULL,
    sender      text NOT NULL,
    size        bigint NOT NULL,
    client_addr text NOT NULL,
    client_helo text NOT NULL,
    protocol    text NOT NULL,
    auth_user   text NOT NULL,
    auth        text NOT NULL DEFAULT '',
    reception   text NOT NULL DEFAULT ''     -- JSON: TLS, Message-ID, verdict, recipients
);
CREATE TABLE history_events (
    message_id text COLLATE "C" NOT NULL REFERENCES message_history(id) ON DELETE CASCADE,
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    moment     double precision NOT NULL,
    line       text NOT NULL,       -- JSON: [time, recipient, event, reply, relay(, details)]
    PRIMARY KEY (message_id, seq)
);
CREATE INDEX history_events_moment ON history_events(moment);
CREATE TABLE history_keys (
    key        text COLLATE "C" NOT NULL,
    message_id text COLLATE "C" NOT NULL REFERENCES message_history(id) ON DELETE CASCADE,
    PRIMARY KEY (key, message_id)
);
CREATE INDEX history_keys_message ON history_keys(message_id);

-- DMARC aggregate reports other receivers sent about our domains: the parsed summary, its
-- rows as JSON (a report is read whole), one per reporter and report ID.
CREATE TABLE dmarc_reports (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reporter    text COLLATE "C" NOT NULL,   -- org_name
    email       text NOT NULL,
    report_id   text COLLATE "C" NOT NULL,
    begin_time  bigint NOT NULL,             -- the period, Unix seconds
    end_time    bigint NOT NULL,
    domain      text COLLATE "C" NOT NULL,   -- the policy domain
    policy      text NOT NULL,               -- the policy published, "p=reject; adkim=r; ..."
    schema      text NOT NULL,               -- rfc7489|dmarcbis
    errors      text NOT NULL,               -- JSON array of the report's error elements
    received    double precision NOT NULL,
    message_id  text NOT NULL,               -- Message-ID of the mail that carried it
    messages    bigint NOT NULL,             -- the sum of the rows' counts
    rows        text NOT NULL,               -- JSON: one array per row
    UNIQUE (reporter, report_id)
);
CREATE INDEX dmarc_reports_domain ON dmarc_reports(domain, begin_time);

-- What our inbound checks evaluated, for the aggregate reports we send: counted per UTC day,
-- source IP, Author Domain and results (a JSON array), so a flood of one kind is one row.
CREATE TABLE dmarc_evaluations (
    policy_domain text COLLATE "C" NOT NULL,
    day           bigint NOT NULL,           -- start of the UTC day, Unix seconds
    source_ip     text COLLATE "C" NOT NULL,
    header_from   text COLLATE "C" NOT NULL,
    results       text COLLATE "C" NOT NULL, -- JSON: result, disposition, alignment, ...
    count         bigint NOT NULL,
    last_seen     double precision NOT NULL,
    record        text NOT NULL,             -- the DMARC record applied (the latest seen)
    rua           text NOT NULL,             -- JSON array of its rua URIs
    wants_reports boolean NOT NULL,
    PRIMARY KEY (policy_domain, day, source_ip, header_from, results)
);

CREATE TABLE secrets (
    name  text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

-- RFC 6376 key pairs (ed25519: RFC 8463), one per selector of a domain.
CREATE TABLE dkim_keys (
    domain        text COLLATE "C" NOT NULL,
    selector      text COLLATE "C" NOT NULL,
    algorithm     text NOT NULL,
    private_key   bytea NOT NULL,
    public_key    text NOT NULL,
    created       double precision NOT NULL,
    state         text NOT NULL CHECK (state IN ('announced', 'active', 'retired')),
    state_changed double precision NOT NULL,
    PRIMARY KEY (domain, selector)
);

CREATE TABLE junk_tokens (
    user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token   text COLLATE "C" NOT NULL,
    ham     integer NOT NULL DEFAULT 0,
    spam    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, token)
);
CREATE TABLE junk_totals (
    user_id bigint PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    ham     integer NOT NULL DEFAULT 0,
    spam    integer NOT NULL DEFAULT 0
);
CREATE TABLE junk_trained (
    user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    digest  bytea NOT NULL,
    spam    boolean NOT NULL,
    PRIMARY KEY (user_id, digest)
);

-- RFC 5228 scripts, at most one active (RFC 5804 §1.1); RFC 5230 §4.2 vacation replies and
-- RFC 7352 duplicate IDs, each until its period ends.
CREATE TABLE sieve_scripts (
    user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name    text COLLATE "C" NOT NULL,
    source  text NOT NULL,
    active  boolean NOT NULL DEFAULT false,
    changed double precision NOT NULL,
    PRIMARY KEY (user_id, name)
);
CREATE UNIQUE INDEX sieve_scripts_one_active ON sieve_scripts(user_id) WHERE active;
CREATE TABLE sieve_replies (
    user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender  text COLLATE "C" NOT NULL,
    handle  text COLLATE "C" NOT NULL,
    until   double precision NOT NULL,
    PRIMARY KEY (user_id, sender, handle)
);
CREATE TABLE sieve_duplicates (
    user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key     text COLLATE "C" NOT NULL,
    until   double precision NOT NULL,
    PRIMARY KEY (user_id, key)
);

CREATE TABLE greylist_triplets (
    key        text COLLATE "C" PRIMARY KEY,
    first_seen double precision NOT NULL
);
CREATE TABLE greylist_networks (
    network   text COLLATE "C" PRIMARY KEY,
    last_seen double precision NOT NULL
);
CREATE TABLE abuse_blocks (
    kind    text COLLATE "C" NOT NULL,
    client  text COLLATE "C" NOT NULL,
    account text COLLATE "C" NOT NULL,
    until   double precision NOT NULL,
    reason  text NOT NULL,
    PRIMARY KEY (kind, client, account)
);
CREATE TABLE sending_counts (
    account      text COLLATE "C" PRIMARY KEY,
    window_start double precision NOT NULL,
    messages     integer NOT NULL,
    recipients   integer NOT NULL
);

-- The web admin: sessions and API tokens by the SHA-256 of their secret; app passwords.
CREATE TABLE web_sessions (
    id_hash   bytea PRIMARY KEY,
    user_id   bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf      text NOT NULL,
    created   double precision NOT NULL,
    last_seen double precision NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions(user_id);
CREATE TABLE api_tokens (
    id_hash bytea PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name    text NOT NULL,
    created double precision NOT NULL
);
CREATE TABLE app_passwords (
    user_id       bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          text COLLATE "C" NOT NULL,
    password_hash text NOT NULL,
    created       double precision NOT NULL,
    PRIMARY KEY (user_id, name)
)
"""

# Queue leases (issue 16 §2): the node delivering a recipient and when its lease ends. A
# recipient is due at `coalesce(lease_until, next_attempt)`: a lease makes it due to nobody
# until it ends, then to every node, whatever its next attempt (its holder died).
_VERSION_2 = """
ALTER TABLE queue_recipients ADD COLUMN lease_node text;
ALTER TABLE queue_recipients ADD COLUMN lease_until double precision;
CREATE INDEX queue_recipients_lease ON queue_recipients(lease_node) WHERE lease_node IS NOT NULL;
CREATE INDEX queue_recipients_due_at
    ON queue_recipients(state, (coalesce(lease_until, next_attempt))) WHERE user_id IS NULL;
"""

MIGRATIONS: dict[int, str] = {1: _VERSION_1, 2: _VERSION_2}


class NewerSchema(Exception):
    """The database was migrated by a newer postroom than this one."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"the database's schema is version {found}, newer than this postroom's"
            f" ({SCHEMA_VERSION}): run the postroom that migrated it, or a newer one"
        )
        self.found = found


def stored_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The schema version of the database (0: postroom never migrated it)."""
    row = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return 0 if found is None else int(str(found[0]))


def migrate(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Bring the database to SCHEMA_VERSION (`conn` in autocommit mode); the version it had.
    NewerSchema when it is ahead of this postroom."""
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        found = stored_version(conn)
        if found > SCHEMA_VERSION:
            raise NewerSchema(found)
        for version in range(found + 1, SCHEMA_VERSION + 1):
            conn.execute(MIGRATIONS[version])
        if found < SCHEMA_VERSION:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found
