"""A database that cannot be used stops `serve` and every CLI command with one line naming the
path and the fix, exit status 1, never a traceback; and changes nothing.

The failures are real, and made without relying on file modes (root ignores them): the
database path is a directory; the file is not a SQLite database; the database file, or the
whole data_dir, is mounted read-only for the command alone (tests/integration/mounts.py).
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ALICE, Postroom, postroom_executable
from .mounts import read_only

COMMANDS = {
    "serve": ("serve",),
    "user list": ("user", "list"),
    "user add": ("user", "add", "carol@example.test", "--password", "carol-secret"),
    "alias list": ("alias", "list"),
    "mailbox status": ("mailbox", "status", ALICE),
    "queue list": ("queue", "list"),
}
EMPTY = hashlib.sha256(b"").hexdigest()
# What the line must say, besides the path: the problem, then the fix.
CASES = {
    "a directory": ("unable to open database file", "must be a file postroom can create"),
    "not a database": ("file is not a database", "restore it from a backup"),
    "read-only": ("readonly database", "writable by the user postroom runs as"),
    "read-only data_dir": ("unable to open database file", "must be a file postroom can create"),
}


def digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CASES)
def test_an_unusable_database_is_one_line(
    postroom_factory: Callable[..., Postroom], case: str, command: str
) -> None:
    server = postroom_factory(start=False)
    database = server.data_dir / "postroom.db"
    prefix: tuple[str, ...] = ()
    named = database
    problem, fix = CASES[case]
    if case == "a directory":
        database.unlink()
        database.mkdir()
    elif case == "not a database":
        database.write_bytes(b"this is no SQLite database\n" * 200)
    elif case == "read-only":
        prefix = read_only(str(database))
    else:
        prefix = read_only(str(server.data_dir))
        if command == "serve":  # its pid file comes first
            named = server.data_dir / "postroom.pid"
            problem = "cannot open the pid file (Read-only file system)"
            fix = f"check data_dir in {server.config_path}"
    before = digest(server.data_dir)
    result = subprocess.run(
        [*prefix, postroom_executable(), "--config", str(server.config_path), *COMMANDS[command]],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 1, result
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"postroom: error: {named}: "), lines[0]
    assert problem in lines[0] and fix in lines[0], lines[0]
    assert result.stdout == ""
    after = digest(server.data_dir)
    after.pop("postroom.pid", None)  # serve takes its lock before it opens the store
    # SQLite may leave its WAL index beside a read-only database, and an empty WAL.
    after.pop("postroom.db-shm", None)
    assert after.pop("postroom.db-wal", EMPTY) == EMPTY
    assert after == before  # nothing changed, nothing added
