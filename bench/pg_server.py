"""A private PostgreSQL for the benchmark, and what it spends: WAL, fsyncs, commits, CPU.

`BenchPostgres` makes a cluster with Debian's binaries (`initdb`, `pg_ctl`) in a temporary
directory, starts it on a free 127.0.0.1 port with its socket in that directory, and stops it
by the postmaster's PID (`pg_ctl stop`, then SIGKILL if it is still there), removing the
directory. As root the programs run as the `postgres` user of the Debian package (PostgreSQL
refuses to run as root). Password authentication (scram-sha-256); postroom reads the password
from a file, as `[storage] password_file` says.

Settings: durable as in production, since postroom's 250 and APPEND OK promise the mail is
on disk once PostgreSQL has committed it: `fsync`, `synchronous_commit` and `full_page_writes`
stay on (the defaults, written out so a reader sees them). Tuned for a short benchmark only
where durability does not depend on it: `shared_buffers = 256MB` (the stock 128 MB is sized
for small machines), `max_wal_size = 4GB` and `checkpoint_timeout = 30min` (no forced
checkpoint in the middle of a run; a checkpoint's cost belongs to long runs, and crash
recovery stays correct, only longer), `wal_level = replica` (the default: a production
primary feeds a standby). No `commit_delay`: postroom already puts the jobs of many sessions
into one transaction (group commit).

`Usage` reads, before and after a run, what the cluster did per message: WAL written
(`pg_current_wal_lsn()`), WAL fsyncs (`pg_stat_wal.wal_sync`), transactions committed and
rolled back in the benchmark's database (`pg_stat_database`), rows written, and the CPU
seconds of the postgres processes (utime + stime of the postmaster and every live child from
/proc, plus the postmaster's cutime + cstime: the backends that exited and were reaped).
PostgreSQL's statistics are flushed by a backend when it ends a transaction, at most once a
second, and when it exits: read them after postroom has stopped (its connections closed).

The tests have their own starter (tests/storage/postgres_server.py: it skips or fails through
pytest when a program is missing, and holds the crash and restart helpers of the fault tests);
this one stands alone so the benchmark depends on no test code, and adds the tuning and the
counters.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import HOST, BenchError, free_port, tail

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
SUPERUSER = "postroom_bench"
PASSWORD = "bench-only-password"
DATABASE = "postroom"
START_TIMEOUT = 60
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "wal_level": "replica",
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "max_connections": "200",
}


def postgres_program(name: str) -> Path:
    """The newest installed PostgreSQL's `name` (initdb, pg_ctl, postgres)."""
    for directory in BIN_DIRS:
        if os.access(directory / name, os.X_OK):
            return directory / name
    raise BenchError(f"{name} not found under /usr/lib/postgresql (apt-get install postgresql)")


def postgres_version() -> str:
    try:
        done = subprocess.run(
            [str(postgres_program("postgres")), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (BenchError, OSError, subprocess.TimeoutExpired):
        return "not installed"
    return done.stdout.strip()


@dataclass(frozen=True)
class Usage:
    """Cumulative counters of one cluster at one moment (see the module docstring)."""

    wal_lsn: int  # bytes since the cluster began
    wal_syncs: int
    commits: int
    rollbacks: int
    rows_written: int  # inserted + updated + deleted
    cpu_seconds: float

    def per_message(self, before: Usage, messages: int) -> dict[str, Any]:
        """What happened between ``before`` and this, per message (and in total)."""
        n = max(messages, 1)
        cpu = self.cpu_seconds - before.cpu_seconds
        return {
            "pg_wal_bytes_per_msg": round((self.wal_lsn - before.wal_lsn) / n),
            "pg_wal_syncs_per_msg": round((self.wal_syncs - before.wal_syncs) / n, 3),
            "pg_commits_per_msg": round((self.commits - before.commits) / n, 2),
            "pg_rollbacks": self.rollbacks - before.rollbacks,
            "pg_rows_written_per_msg": round((self.rows_written - before.rows_written) / n, 1),
            "pg_cpu_ms_per_msg": round(cpu * 1000.0 / n, 3),
            "pg_cpu_seconds": round(cpu, 2),
            "pg_wal_mib": round((self.wal_lsn - before.wal_lsn) / 2**20, 1),
        }


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _proc_stat(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name may hold blanks or parentheses: the fields start after the last ')'.
    return stat[stat.rfind(b")") + 2 :].split()


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of ``root`` and its live descendants, plus ``root``'s reaped children's."""
    fields = _proc_stat(root)
    if fields is None:
        return 0.0
    # Fields after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    children: dict[int, list[int]] = {}
    stats: dict[int, list[bytes]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        ticks += int(stats[pid][11]) + int(stats[pid][12])
        stack.extend(children.get(pid, []))
    return ticks / CLK_TCK


class BenchPostgres:
    """One cluster in a temp dir with one database, DATABASE; a context manager."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.settings = {**SETTINGS, **(settings or {})}
        self.as_user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise BenchError("running as root and there is no postgres user") from exc
            self.as_user = "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="postroom-bench-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.password_file = self.root / "password"  # for postroom's [storage] password_file
        self.port = 0
        self.pid: int | None = None

    def __enter__(self) -> BenchPostgres:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
            raise BenchError(
                f"{' '.join(map(str, args))} failed: {done.stdout}{done.stderr}\n{tail(self.log)}"
            )

    def _start(self) -> None:
        self.password_file.write_text(PASSWORD + "\n")
        self.password_file.chmod(0o600)
        if self.as_user is not None:
            shutil.chown(self.root, self.as_user)
            shutil.chown(self.password_file, self.as_user)
        self._run(
            postgres_program("initdb"), "-D", self.data, "-U", SUPERUSER,
            "--pwfile", self.password_file, "--auth", "scram-sha-256", "-E", "UTF8",
            "--locale", "C",
        )  # fmt: skip
        options = " ".join(f"-c {key}={value}" for key, value in self.settings.items())
        for _ in range(5):  # a port taken between choosing and binding: another one
            self.port = free_port()
            try:
                self._run(
                    postgres_program("pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT),
                    "-D", self.data, "-l", self.log,
                    "-o", f"-p {self.port} -k {self.root} -c listen_addresses={HOST} {options}",
                )  # fmt: skip
            except BenchError:
                if "could not bind" in tail(self.log, 50):
                    continue
                raise
            self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
            self.execute(f"CREATE DATABASE {DATABASE}", database="postgres")
            return
        raise BenchError(f"PostgreSQL found no free port: {tail(self.log)}")

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def storage_config(self) -> str:
        """postroom's `[storage]` table for this cluster's database."""
        return (
            f'\n[storage]\nbackend = "postgresql"\ndsn = "{self.dsn()}"\n'
            f'password_file = "{self.password_file}"\n'
        )

    def execute(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg  # in postroom's venv, which runs the benchmark

        with psycopg.connect(self.dsn(database), password=PASSWORD, autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def usage(self, settled: bool = False) -> Usage:
        """The cluster's counters now (read from the `postgres` database, so the benchmark's
        own queries are not counted as the benchmark database's commits). ``settled``: first
        wait until no client is connected to DATABASE any more, so every backend that served
        one has flushed its statistics on exit."""
        assert self.pid is not None
        if settled:
            self.wait_disconnected()
        rows = self.execute(
            "SELECT pg_current_wal_lsn()::text, w.wal_sync, d.xact_commit, d.xact_rollback,"
            " d.tup_inserted + d.tup_updated + d.tup_deleted"
            f" FROM pg_stat_wal w, pg_stat_database d WHERE d.datname = '{DATABASE}'"
        )
        lsn, syncs, commits, rollbacks, rows_written = rows[0]
        return Usage(
            wal_lsn=_lsn(lsn),
            wal_syncs=int(syncs),
            commits=int(commits),
            rollbacks=int(rollbacks),
            rows_written=int(rows_written),
            cpu_seconds=tree_cpu_seconds(self.pid),
        )

    def rows_by_table(self) -> dict[str, int]:
        """Rows inserted, updated and deleted so far in each of DATABASE's tables (this query
        is a transaction of DATABASE's: one commit more in its count)."""
        rows = self.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables",
            database=DATABASE,
        )
        return {str(name): int(count) for name, count in rows}

    def wait_disconnected(self, timeout: float = 30.0) -> None:
        """Wait until no client backend is connected to DATABASE and its statistics are all
        in (see below)."""
        deadline = time.monotonic() + timeout
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            f" WHERE datname = '{DATABASE}' AND backend_type = 'client backend'"
        )
        while self.execute(query)[0][0]:
            if time.monotonic() > deadline:
                raise BenchError(f"clients still connected to {DATABASE} after {timeout:.0f}s")
            time.sleep(0.05)
        # The last backends flush their statistics as they exit, beside leaving the view:
        # the commit count of DATABASE (only its clients change it) must hold still.
        query = f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{DATABASE}'"
        last = self.execute(query)[0][0]
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.execute(query)[0][0]
            if now == last:
                return
            last = now

    def stop(self) -> None:
        try:
            if self.pid is not None:
                try:
                    self._run(
                        postgres_program("pg_ctl"), "stop", "-w", "-m", "fast", "-D", self.data
                    )
                except (BenchError, subprocess.TimeoutExpired):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
                # `pg_ctl stop -w` returns once postmaster.pid is gone, a moment before the
                # postmaster itself.
                _wait_gone(self.pid)
                self.pid = None
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, gone but not yet reaped, is not)."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != b"Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
