"""PostgreSQL's errors as the store's `StorageFailure` (storage/records.py).

What the server or the connection did (unreachable, shut down, out of disk, out of memory, a
lock or statement timeout, a serialization failure) is a `StorageFailure`: a temporary failure
for the client. What our own SQL did wrong (a syntax error, a broken constraint) is not: that is
a bug, and keeps its traceback. The DSN is named without its password.
"""

from __future__ import annotations

import psycopg
from psycopg import conninfo

from postroom.storage.records import StorageFailure, os_failure

# SQLSTATE classes that come from the server's state, not from the statement:
# 08 connection exception, 40 transaction rollback (serialization, deadlock), 53 insufficient
# resources, 55 object not in prerequisite state (lock not available), 57 operator
# intervention (shutdown, statement timeout), 58 system error, XX internal error.
_FAILURE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58", "XX"})
_DISK_FULL = "53100"
# A statement cancelled for waiting too long: lock_timeout (55P03), statement_timeout (57014).
_TIMEOUTS = frozenset({"55P03", "57014"})


def describe(dsn: str) -> str:
    """The database a DSN names, for messages: user@host:port/dbname, never the password."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "a DSN that is not valid"
    user = str(parts.get("user") or "")
    host = str(parts.get("host") or "localhost")
    port = str(parts.get("port") or "5432")
    name = str(parts.get("dbname") or user)
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{name}"


def as_failure(error: BaseException, where: str) -> StorageFailure | None:
    """The `StorageFailure` that `error` is, or None when it is something else; `where` is
    the database as `describe` names it."""
    if isinstance(error, StorageFailure):
        return error
    if isinstance(error, OSError):
        return os_failure(error)
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return StorageFailure(f"{where}: {_first_line(error)}", full=error.sqlstate == _DISK_FULL)
    if isinstance(error, psycopg.Error):
        state = error.sqlstate or ""
        if state[:2] in _FAILURE_CLASSES:
            return StorageFailure(f"{where}: {_first_line(error)}", full=state == _DISK_FULL)
    return None


def timed_out(error: BaseException) -> bool:
    """Whether `error` (or the psycopg error it was raised from) is a statement PostgreSQL
    cancelled at lock_timeout or statement_timeout."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, psycopg.Error) and seen.sqlstate in _TIMEOUTS:
            return True
        seen = seen.__cause__
    return False


def _refusal_fix(error: BaseException) -> str | None:
    """What to do about a database that answered but refused us (None: it did not answer,
    or is starting or stopping: waiting may help)."""
    text = _first_line(error)
    state = error.sqlstate if isinstance(error, psycopg.Error) else None
    if state == "28P01" or "password authentication failed" in text:
        return "check the user the DSN names and its password"
    if state == "3D000" or ("database" in text and "does not exist" in text):
        return "create the database (createdb), or name an existing one in the DSN"
    if state == "42501":
        return "grant the user CREATE on the database (postroom makes its tables itself)"
    return None


def worth_waiting(error: BaseException) -> bool:
    """Whether a failure to open the store may pass by itself (the server is down, starting,
    unreachable), so the server's start waits and tries again."""
    return isinstance(error, psycopg.OperationalError) and _refusal_fix(error) is None


def open_failure(error: BaseException, where: str) -> StorageFailure:
    """The `StorageFailure` for a database that cannot be used at start: one line naming it,
    what is wrong and what to do about it."""
    text = _first_line(error)
    state = error.sqlstate if isinstance(error, psycopg.Error) else None
    fix = _refusal_fix(error) or "check that PostgreSQL runs and that the DSN names it"
    return StorageFailure(f"{where}: {text}; {fix}", full=state == _DISK_FULL)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
