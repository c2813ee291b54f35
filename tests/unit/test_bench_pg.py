"""The PostgreSQL benchmark's pure parts: the load split between nodes, the counters per
message, the CPU of a process tree (reaped children included), the run's system names and
its tables (bench/sys_postroom_pg.py, bench/pg_server.py, bench/run.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pg_server
import run
import sys_imap
import sys_postroom_pg
from common import Load


@pytest.mark.parametrize("messages", [1, 299, 300, 5000])
def test_the_load_is_shared_out_whole(messages: int) -> None:
    parts = sys_postroom_pg.split(Load(messages=messages, sessions=20), 2)
    assert sum(p.messages for p in parts) == messages
    assert [p.sessions for p in parts] == [10, 10]
    assert max(p.messages for p in parts) - min(p.messages for p in parts) <= 1
    assert {p.recipient for p in parts} == {Load().recipient}
    assert sys_postroom_pg.split(Load(messages=7, sessions=3), 1) == [Load(messages=7, sessions=3)]


def test_counters_per_message() -> None:
    before = pg_server.Usage(1000, 10, 100, 0, 50, 2.0)
    after = pg_server.Usage(1000 + 4000 * 100, 35, 150, 2, 1050, 2.5)
    per = after.per_message(before, 100)
    assert per["pg_wal_bytes_per_msg"] == 4000
    assert per["pg_wal_syncs_per_msg"] == 0.25
    assert per["pg_commits_per_msg"] == 0.5
    assert per["pg_rollbacks"] == 2
    assert per["pg_rows_written_per_msg"] == 10.0
    assert per["pg_cpu_ms_per_msg"] == 5.0


def test_lsn_is_read_as_a_byte_position() -> None:
    assert pg_server._lsn("0/16B3740") == 0x16B3740
    assert pg_server._lsn("1/0") == 2**32


def test_tree_cpu_counts_children_that_ended() -> None:
    # The postmaster's backends come and go: a child's CPU must stay counted once reaped.
    before = pg_server.tree_cpu_seconds(os.getpid())
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
    after = pg_server.tree_cpu_seconds(os.getpid())
    assert after - before >= 0.25
    assert pg_server.tree_cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_the_postgresql_systems_are_known_names() -> None:
    args = run.parse_args(["--only", "postfix,postroom,postroom-pg,postroom-pg2,dovecot"])
    assert args.only == ["postfix", "postroom", "postroom-pg", "postroom-pg2", "dovecot"]
    assert set(run.PG_SYSTEMS) <= set(run.SYSTEMS) and set(run.PG_SYSTEMS) <= set(run.IMAP_SYSTEMS)
    assert set(sys_imap.PG_SYSTEMS) == set(run.PG_SYSTEMS)
    default = run.parse_args([]).only
    assert "postroom-pg" in default and "postroom-pg2" in default
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "postroom-pg3"])


def test_receive_table_shows_ratios_and_costs(capsys: pytest.CaptureFixture[str]) -> None:
    costs = pg_server.Usage(4000 * 200, 50, 100, 0, 2000, 0.6).per_message(
        pg_server.Usage(0, 0, 0, 0, 0, 0.0), 200
    )
    results = {
        "postfix": {"msg_per_s": 100.0, "seconds": 2.0},
        "postroom": {"msg_per_s": 400.0, "seconds": 0.5},
        "postroom-pg": {
            "msg_per_s": 200.0, "seconds": 1.0, "postroom_cpu_ms_per_msg": 4.0, **costs,
        },
        "postroom-pg2": {"error": "boom"},
    }  # fmt: skip
    run.print_table(results)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("postroom-pg ") and "4000" in x)
    assert line.split()[:8] == [
        "postroom-pg",
        "200.0",
        "2.00",
        "0.50",
        "4000",
        "0.250",
        "0.50",
        "10.0",
    ]
    assert ["postroom-pg2", "FAILED"] in [x.split() for x in out.splitlines()]
    assert run.pg_ratios(results) == {
        "postroom-pg/postfix": 2.0,
        "postroom-pg/postroom": 0.5,
        "postroom-pg2/postfix": None,  # failed: no ratio
        "postroom-pg2/postroom": None,
    }


def test_imap_table_compares_with_dovecot_and_sqlite(capsys: pytest.CaptureFixture[str]) -> None:
    res = {
        "dovecot": {"append": {"median_ms": 300.0}},
        "postroom": {"append": {"median_ms": 100.0}},
        "postroom-pg": {"append": {"median_ms": 200.0, "pg_cpu_ms": 40.0, "pg_wal_bytes": 2048}},
    }
    ratios = run.print_pg_op_table("t", res, ("append", "fetch_body"), "postroom-pg")
    assert ratios["append"] == {"dovecot": 1.5, "postroom": 0.5}
    assert ratios["fetch_body"] == {"dovecot": None, "postroom": None}
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("append"))
    assert line.split() == ["append", "300.0", "100.0", "200.0", "1.50", "0.50", "40.0", "2.0"]
