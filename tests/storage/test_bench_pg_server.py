"""The benchmark's private PostgreSQL (bench/pg_server.py) is durable and counts what it does.

Its figures go into the note on how far one PostgreSQL carries postroom, so they are checked
on a real cluster: fsync, synchronous_commit and full_page_writes are on as in production;
after one committed insert the counters show the WAL written and flushed, the commit and the
row; stopping it ends the postmaster and removes its directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .postgres_server import require_postgres_program

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pg_server


def test_bench_postgres_is_durable_and_counts_a_commit() -> None:
    require_postgres_program("initdb")
    with pg_server.BenchPostgres() as pg:
        settings = {
            name: pg.execute(f"SHOW {name}")[0][0]
            for name in ("fsync", "synchronous_commit", "full_page_writes")
        }
        assert settings == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
        assert pg.storage_config().count(pg.dsn()) == 1
        assert pg.password_file.read_text().strip() == pg_server.PASSWORD
        pg.execute("CREATE TABLE t (b bytea)", database=pg_server.DATABASE)
        before = pg.usage()
        pg.execute(
            "INSERT INTO t SELECT convert_to(repeat('x', 5000), 'UTF8')",
            database=pg_server.DATABASE,
        )
        after = pg.usage(settled=True)  # once the inserting backend's statistics are in
        per = after.per_message(before, 1)
        assert per["pg_wal_bytes_per_msg"] > 0
        assert per["pg_wal_syncs_per_msg"] >= 1
        assert per["pg_commits_per_msg"] >= 1
        assert per["pg_rows_written_per_msg"] >= 1
        assert per["pg_cpu_ms_per_msg"] >= 0
        pid, root = pg.pid, pg.root
        assert pid is not None and root.is_dir()
    assert not pg_server.alive(pid)
    assert not root.exists()
