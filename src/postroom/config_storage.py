"""Configuration of where the store lives: the `[storage]` table.

Read by :mod:`postroom.config` (which owns the file and the error type). `backend = "sqlite"`
(the default) keeps everything in data_dir; `"postgresql"` keeps it in the database `dsn`
names (a `postgresql://user@host:port/dbname` URI, storage/postgresql/), and data_dir holds only
content on its way in and the CLI's signal files. The database password is never written in
the configuration: it comes from the file `password_file` names or, without one, from the
environment variable $POSTROOM_DB_PASSWORD (neither: libpq's own ways, such as ~/.pgpass). It
is kept out of every repr, so it is never logged.

`node` names this server among the nodes sharing one database: the holder of its queue leases
(issue 16 §2). Without it the name made once and kept in `<data_dir>/node-id` is used
(storage/node.py); two nodes must never share one.

`lock_timeout` and `statement_timeout` bound how long one statement of the server may wait for
a lock another client holds, or run at all (PostgreSQL's settings of those names, set on every
connection of the server's pool): past them the work fails as a temporary error (`451`, IMAP
`NO`) instead of holding every session behind it. `start_wait` is how long `serve` tries again
to reach a database that does not answer at start (0: not at all) before it gives up.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postroom import config_checks as checks
from postroom.config_common import Reader

BACKENDS = ("sqlite", "postgresql")
PASSWORD_VARIABLE = "POSTROOM_DB_PASSWORD"
STORAGE_KEYS = (
    "backend",
    "node",
    "dsn",
    "password_file",
    "lock_timeout",
    "statement_timeout",
    "start_wait",
)
_POSTGRESQL_ONLY = STORAGE_KEYS[2:]
# A node name: one short printable word (storage/node.py makes the default ones to this rule).
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_DSN_EXAMPLE = '"postgresql://postroom@db.example.net:5432/postroom"'


@dataclass(frozen=True)
class StorageConfig:
    """The store's backend and, for PostgreSQL, the database and its password."""

    backend: str = "sqlite"  # one of BACKENDS
    dsn: str = ""  # the PostgreSQL database (no password in it)
    password_file: Path | None = None  # absolute; its first line is the password
    password: str | None = field(default=None, repr=False)  # from password_file or the env
    node: str = ""  # this server's name in queue leases; "": the one kept in data_dir/node-id
    lock_timeout: float = 5.0  # seconds a statement may wait for another client's lock
    statement_timeout: float = 60.0  # seconds one statement may run
    start_wait: float = 60.0  # seconds `serve` tries to reach the database at start

    @property
    def database(self) -> str | None:
        """The PostgreSQL DSN when that backend is chosen, else None (SQLite in data_dir)."""
        return self.dsn if self.backend == "postgresql" else None


def read_storage(reader: Reader, doc: Mapping[str, Any]) -> StorageConfig:
    raw = reader.table(doc, "storage", STORAGE_KEYS)
    node = reader.check("storage.node", _node, raw["node"]) if "node" in raw else ""
    backend = "sqlite"
    if "backend" in raw:
        backend = reader.check("storage.backend", checks.choice, raw["backend"], BACKENDS)
    if backend == "sqlite":
        for key in _POSTGRESQL_ONLY:
            if key in raw:
                raise reader.error(
                    f"storage.{key}",
                    'is only used with backend = "postgresql"',
                    'remove it, or set storage.backend = "postgresql"',
                )
        return StorageConfig(node=node)
    if "dsn" not in raw:
        raise reader.error(
            "storage.dsn",
            'is required with backend = "postgresql"',
            f"write the database to use, such as dsn = {_DSN_EXAMPLE}",
        )
    dsn = reader.check("storage.dsn", _dsn, raw["dsn"])
    password_file = None
    if "password_file" in raw:
        password_file = reader.resolve(
            reader.check(
                "storage.password_file",
                checks.path_string,
                raw["password_file"],
                '"/etc/postroom/db-password"',
            )
        )
        password: str | None = _read_password(reader, password_file)
    else:
        password = os.environ.get(PASSWORD_VARIABLE) or None
    defaults = StorageConfig()
    lock_timeout = defaults.lock_timeout
    if "lock_timeout" in raw:
        lock_timeout = reader.check(
            "storage.lock_timeout", checks.timeout, raw["lock_timeout"], lock_timeout
        )
    statement_timeout = defaults.statement_timeout
    if "statement_timeout" in raw:
        statement_timeout = reader.check(
            "storage.statement_timeout", checks.timeout, raw["statement_timeout"], statement_timeout
        )
    start_wait = defaults.start_wait
    if "start_wait" in raw:
        start_wait = reader.check(
            "storage.start_wait", checks.duration_or_off, raw["start_wait"], start_wait
        )
    if statement_timeout < lock_timeout:
        raise reader.error(
            "storage.statement_timeout",
            f"is shorter than storage.lock_timeout ({statement_timeout:g} s < {lock_timeout:g} s)",
            "make it at least as long: a statement waiting for a lock is still running",
        )
    return StorageConfig(
        backend, dsn, password_file, password, node, lock_timeout, statement_timeout, start_wait
    )


def _node(value: object) -> str:
    fix = 'write one word of letters, digits, ".", "_" or "-" (up to 63), such as node = "mx1"'
    if not isinstance(value, str):
        raise checks.Invalid(f"must be a string, got {checks.show(value)}", fix)
    if not NODE_NAME.fullmatch(value):
        raise checks.Invalid(f"{checks.show(value)} is not a node name", fix)
    return value


def _dsn(value: object) -> str:
    fix = f"write a PostgreSQL URI such as {_DSN_EXAMPLE}"
    if not isinstance(value, str):
        raise checks.Invalid(f"must be a string, got {checks.show(value)}", fix)
    try:
        parts = urllib.parse.urlsplit(value.strip())
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError as error:
        raise checks.Invalid(f"is not a URI ({error})", fix) from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise checks.Invalid("must begin with postgresql://", fix)  # never shown: may hold secrets
    if parts.password is not None:
        # Shown without the password: the line goes to the terminal and maybe a log.
        raise checks.Invalid(
            "must not hold the password",
            f"remove it from the URI and put it in storage.password_file or ${PASSWORD_VARIABLE}",
        )
    if not parts.path.strip("/"):
        raise checks.Invalid("names no database", fix)
    return value.strip()


def _read_password(reader: Reader, path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        problem = error.strerror if isinstance(error, OSError) else "is not UTF-8 text"
        raise reader.error(
            "storage.password_file",
            f"{path}: {problem}",
            "make it a file the user postroom runs as can read, holding the password",
        ) from None
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise reader.error(
            "storage.password_file",
            f"{path}: its first line is empty",
            "write the database password on its first line",
        )
    return password
