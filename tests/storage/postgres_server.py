"""A private PostgreSQL server for the tests, run from Debian's binaries (`initdb`, `pg_ctl`).

`PostgresServer.start()` makes a cluster in a temporary directory (password authentication,
fsync on, as in production), starts it on a free port of 127.0.0.1 with its socket in that
directory, and waits for it (`pg_ctl start -w`); `stop()` stops it (`pg_ctl stop`, then the
postmaster's PID is killed if it is still there) and removes the directory. `new_database()`
gives each test a database of its own, a copy of `template0` or of a template the tests made
(isolation by construction).

PostgreSQL refuses to run as root: when the tests run as root, the programs run as the
`postgres` user the Debian package makes, and the directory is given to it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

STRICT = os.environ.get("POSTROOM_TEST_STRICT") == "1"
BIN_DIR = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
SUPERUSER = "postroom_test"
PASSWORD = "test-only-password"
START_TIMEOUT = 60


def require_postgres_program(name: str) -> Path:
    """Path of one of PostgreSQL's server programs; skip (or, with POSTROOM_TEST_STRICT=1,
    fail) when it is missing."""
    path = BIN_DIR / name
    if not os.access(path, os.X_OK):
        reason = f"{path} not installed (Debian package postgresql)"
        if STRICT:
            pytest.fail(f"{reason} (POSTROOM_TEST_STRICT=1)", pytrace=False)
        pytest.skip(reason)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One cluster in a temporary directory, started and stopped by the tests."""

    def __init__(self) -> None:
        self.initdb = require_postgres_program("initdb")
        self.pg_ctl = require_postgres_program("pg_ctl")
        self.as_user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root, and there is no postgres user to run PostgreSQL as")
            self.as_user = "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="postroom-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._numbers = itertools.count(1)
        self._started = False

    def _run(self, *args: str | Path) -> None:
        done = subprocess.run(
            [str(a) for a in args],
            user=self.as_user,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 30,
            check=False,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(map(str, args))} failed: {done.stdout}{done.stderr}\n{log}"
            )

    def start(self) -> None:
        if self.as_user is not None:
            shutil.chown(self.root, self.as_user)
        password_file = self.root / "password"
        password_file.write_text(PASSWORD + "\n")
        if self.as_user is not None:
            shutil.chown(password_file, self.as_user)
        self._run(
            self.initdb,
            "-D",
            self.data,
            "-U",
            SUPERUSER,
            "--pwfile",
            password_file,
            "--auth",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale",
            "C",
        )
        password_file.unlink()
        for _ in range(5):  # a port taken between choosing and binding: another one
            self.port = _free_port()
            try:
                self._start_postmaster()
            except RuntimeError:
                if "could not bind" in self.log.read_text(errors="replace"):
                    continue
                raise
            self._started = True
            return
        raise RuntimeError(f"PostgreSQL found no free port: see {self.log}")

    def _start_postmaster(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses={HOST} -c fsync=on"
        self._run(
            self.pg_ctl, "start", "-w", "-t", str(START_TIMEOUT), "-D", self.data,
            "-l", self.log, "-o", options,
        )  # fmt: skip

    def halt(self, mode: str = "fast") -> None:
        """Stop the server (`-m fast`; `immediate`: as a crash would, recovering from the WAL
        at the next start), keeping its cluster for `resume`."""
        self._run(self.pg_ctl, "stop", "-w", "-m", mode, "-D", self.data)

    def resume(self) -> None:
        self._start_postmaster()

    def crash_and_restart(self) -> None:
        """Stop the server as a crash would (`-m immediate`: no checkpoint, recovery from the
        WAL at the next start) and start it again on the same port."""
        self._run(self.pg_ctl, "stop", "-w", "-m", "immediate", "-D", self.data)
        self._start_postmaster()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def admin_execute(self, statement: str) -> None:
        """One statement on the `postgres` database, outside a transaction."""
        with psycopg.connect(self.dsn(), password=PASSWORD, autocommit=True) as conn:
            conn.execute(statement)

    def new_database(self, template: str = "template0") -> str:
        """The name of a new database, a copy of `template` (by default an empty one)."""
        name = f"test_{os.getpid()}_{next(self._numbers)}"
        self.admin_execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    def drop_database(self, name: str) -> None:
        self.admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            if self._started:
                pid = self._postmaster_pid()
                try:
                    self._run(self.pg_ctl, "stop", "-w", "-m", "fast", "-D", self.data)
                except (RuntimeError, subprocess.TimeoutExpired):
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        _wait_gone(pid)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
