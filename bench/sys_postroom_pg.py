"""Benchmark postroom on PostgreSQL (issue 16): one node, then two nodes on one database.

``postroom-pg``: a private PostgreSQL (pg_server.py: fsync and synchronous_commit on) and one
``postroom serve`` with ``[storage] backend = "postgresql"``, its own data_dir (content on its
way in) and the same smtp-source load as the other systems (sys_postroom.py, without the
big-message RSS test, which belongs to the SQLite row). ``postroom-pg2``: two nodes on the same
database, each with its own data_dir and SMTP port; the load is split between them directly,
with no balancer in between: two smtp-source processes, each with half the sessions (10) and
half the messages, one per node's port, started together (HAProxy in TCP mode would add a hop
and a process on the same two cores without changing what the database does; the proxy
path is tested in tests/integration).

The rate is N / time from the first smtp-source's start until IMAP STATUS on node 1 shows all
N messages in the INBOX (either node reads the same database). Then the nodes are stopped (so
PostgreSQL flushes its statistics) and the cluster's counters give the cost per message
inside PostgreSQL (pg_server.Usage): WAL bytes, WAL fsyncs, commits, rows written and CPU ms
of the postgres processes, beside the CPU ms per message of the postroom nodes themselves.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from contextlib import ExitStack
from typing import Any

from common import BenchError, Load, check_smtp_source, rate, start_smtp_source, stop_process
from pg_server import BenchPostgres, tree_cpu_seconds
from sys_postroom import Postroom


def split(load: Load, parts: int) -> list[Load]:
    """``load`` shared out over ``parts`` load generators (sessions and messages)."""
    return [
        dataclasses.replace(
            load,
            messages=load.messages // parts + (1 if i < load.messages % parts else 0),
            sessions=max(1, load.sessions // parts + (1 if i < load.sessions % parts else 0)),
        )
        for i in range(parts)
    ]


def run(load: Load, timeout: float = 600.0) -> dict[str, Any]:
    """One postroom node on a private PostgreSQL."""
    return run_nodes(load, timeout, 1)


def run_two(load: Load, timeout: float = 600.0) -> dict[str, Any]:
    """Two postroom nodes on one private PostgreSQL, the load split between their ports."""
    return run_nodes(load, timeout, 2)


def run_nodes(load: Load, timeout: float, count: int) -> dict[str, Any]:
    n = load.messages
    with ExitStack() as stack:
        pg = stack.enter_context(BenchPostgres())
        storage = pg.storage_config()
        # The first node adds the user (in the database); the others only serve.
        nodes = [stack.enter_context(Postroom(load, storage, count_over_imap=True))]
        for _ in range(1, count):
            nodes.append(stack.enter_context(Postroom(load, storage, setup=[])))
        procs = [node.proc for node in nodes]
        pids = [proc.pid for proc in procs if proc is not None]
        nodes[0].message_count()  # log in for the polls before the clock starts
        tables = pg.rows_by_table()
        os.sync()
        before = pg.usage()
        nodes_cpu = sum(tree_cpu_seconds(pid) for pid in pids)
        loads = split(load, count)
        start = time.monotonic()
        deadline = start + timeout
        sources = [
            start_smtp_source(part, node.port, node.tmp / "smtp-source.log")
            for part, node in zip(loads, nodes, strict=True)
        ]
        for source in sources:
            stack.callback(stop_process, source)
        while any(source.poll() is None for source in sources):
            for node in nodes:
                node._check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"smtp-source did not finish in {timeout:.0f}s")
            time.sleep(0.05)
        accepted_at = time.monotonic()
        for source, node in zip(sources, nodes, strict=True):
            check_smtp_source(source, node.tmp / "smtp-source.log")
        nodes[0].wait_count(n, deadline)
        done = time.monotonic()
        nodes_cpu = sum(tree_cpu_seconds(pid) for pid in pids) - nodes_cpu
        for proc in procs:
            stop_process(proc)  # its backends exit and flush their statistics
        after = pg.usage(settled=True)
        written = {
            name: round((count - tables.get(name, 0)) / n, 2)
            for name, count in sorted(pg.rows_by_table().items())
            if count > tables.get(name, 0)
        }
        elapsed = done - start
        result: dict[str, Any] = {
            "messages": n,
            "nodes": count,
            "seconds": round(elapsed, 3),
            "msg_per_s": round(rate(n, elapsed), 1),
            "smtp_source_seconds": round(accepted_at - start, 3),
            "accept_msg_per_s": round(rate(n, accepted_at - start), 1),
            "load_split": " + ".join(f"-s {p.sessions} -m {p.messages}" for p in loads),
            "postroom_cpu_ms_per_msg": round(nodes_cpu * 1000.0 / n, 3),
            **after.per_message(before, n),
            "pg_rows_by_table_per_msg": written,
            "pg_settings": pg.settings,
            "measure": "smtp-source start until IMAP STATUS shows all messages in INBOX",
        }
        batches = [
            m.group(1)
            for node in nodes
            if (m := re.search(r"stopped; (batches=\S+ jobs=\S+ mean=\S+ max=\S+)", _log(node)))
        ]
        if batches:
            result["group_commit"] = " | ".join(batches)
        return result
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


def _log(node: Postroom) -> str:
    try:
        return node.log.read_text(errors="replace")
    except OSError:
        return ""
