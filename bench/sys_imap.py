"""IMAP benchmark: Dovecot and postroom over the same generated mailbox, then postroom's memory.

Both servers run at once with the same self-signed certificate and are spoken to over implicit
TLS (imaps) by the same blocking client (imap_client.py).  Each gets the same N messages
(imap_corpus.py) by MULTIAPPEND over one connection, 100 per command; that load is timed but
not compared.  Then every operation runs REPS times per server, alternating servers rep by rep
so both see the same machine load, and the median is reported:

* ``login_select``: connect, TLS handshake, greeting, LOGIN, SELECT INBOX (LOGOUT not timed);
  postroom's LOGIN skips argon2 for a password it verified before (``[auth] cache_ttl``, on by
  default), Dovecot's does not, so each server's first LOGIN is printed beside the table;
* ``fetch_envelope``: ``FETCH 1:* (FLAGS ENVELOPE)``;
* ``search_subject``: ``UID SEARCH HEADER Subject zanzibar`` (1 message in 100 matches);
* ``search_phrase``: ``UID SEARCH HEADER Subject "report 2424"`` (a phrase: one message);
* ``search_and``: 50 × ``UID SEARCH HEADER Subject report 2424``: a header test that every
  message passes AND the sequence number 2424, written expensive key first (one message);
* ``search_msgid``: ``UID SEARCH HEADER Message-ID bench.2424.`` (another header; one message);
* ``search_from``: ``UID SEARCH FROM olivia`` (an address header, 1 message in 20);
* ``search_none``: ``UID SEARCH HEADER Subject "report 99999"`` (matches nothing);
* ``search_text``: ``UID SEARCH TEXT quokkas`` (a body word, 1 message in 50);
* ``fetch_body``: 200 commands ``FETCH n BODY[]``, n random (a new sample per rep);
* ``append``: 200 APPEND commands of one new message each;
* ``store_each``: 1000 commands ``STORE n +FLAGS (\\Flagged)`` (a fresh set of n per rep);
* ``store_all``: ``STORE 1:* +FLAGS ($BenchK)`` with a new keyword per rep.

Then the same again, as far as it goes, with a stock client (imap_stock.py: imaplib with its
defaults, Nagle on, synchronising literals), servers alternating the same way.

Memory (postroom only): its RSS before and after holding sessions open (imap_idlers.py in
IDLER_PROCS child processes), each on a fresh server: ``greeting`` plaintext connections on
the STARTTLS port, ``tls`` connections on imaps that stop after the greeting, and ``idle``
sessions (imaps, SCRAM login, SELECT of a 10-message INBOX, IDLE), and ``idle-plain``: the same
sessions without TLS (the server runs with ``[auth] plaintext = true``), which is what the
≤ 200 MiB target speaks of; the old estimate idle - (tls - greeting) is printed beside it.
Also on the benchmark server: the extra
RSS of BIG_SELECT_SESSIONS sessions that SELECT the INBOX (N messages plus the appended ones).
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imap_corpus as corpus
import imap_stock
from common import (
    HOST,
    BenchError,
    Load,
    RssSampler,
    free_port,
    medians,
    mib,
    tree_rss_kib,
    wait_port,
)
from imap_client import ImapClient, client_tls_context
from pg_server import BenchPostgres, Usage
from sys_dovecot import Dovecot, make_certificate
from sys_postroom import Postroom

USER = "user@bench.test"
IDLE_USER = "idle@bench.test"
PASSWORD = "benchpw"
REPS = 5
FETCH_BODIES = 200
APPENDS = 200
STORES = 1000
LOAD_BATCH = 100
IDLE_INBOX = 10
BIG_SELECT_SESSIONS = 20
IDLER_PROCS = 2
IDLE_DEADLINE = 100.0
RSS_TARGET_MIB = 200
SYSTEMS = ("dovecot", "postroom", "postroom-pg", "postroom-pg2")
PG_SYSTEMS = ("postroom-pg", "postroom-pg2")
OPS = (
    "login_select",
    "fetch_envelope",
    "search_subject",
    "search_phrase",
    "search_and",
    "search_msgid",
    "search_from",
    "search_none",
    "search_text",
    "fetch_body",
    "append",
    "store_each",
    "store_all",
)
HERE = Path(__file__).resolve().parent


@dataclass
class Server:
    name: str
    port: int
    pid: int
    client: ImapClient | None = None  # logged in, INBOX selected
    loaded: int = 0
    load_port: int | None = None  # another node to fill the INBOX through (postroom-pg2)
    pg: BenchPostgres | None = None  # the store's PostgreSQL, whose cost per op is measured


TLS = client_tls_context()


def connect(server: Server, user: str = USER, port: int | None = None) -> ImapClient:
    client = ImapClient(HOST, port or server.port, TLS)
    client.login(user, PASSWORD)
    return client


def load_mailbox(server: Server, messages: list[corpus.Message]) -> dict[str, Any]:
    """Fill the INBOX (untimed in the comparison); leaves a selected session on ``server``.

    Also times the server's first LOGIN (connection and TLS included): the only one that
    verifies argon2 in postroom, which remembers a verified password ([auth] cache_ttl), while
    Dovecot's verifies it at every LOGIN (its auth_cache, off here, re-verifies the hash too).
    """
    started = time.perf_counter()
    client = connect(server, port=server.load_port)
    first_login = time.perf_counter() - started
    started = time.perf_counter()
    batch = LOAD_BATCH if "MULTIAPPEND" in client.capabilities else 1
    for first in range(0, len(messages), batch):
        chunk = messages[first : first + batch]
        client.append("INBOX", [(m.data, m.internal_date) for m in chunk])
    seconds = time.perf_counter() - started
    if server.load_port is not None:  # loaded through one node, read through the other
        client.close()
        client = connect(server)
    selected = client.command(b"SELECT INBOX")
    exists = [int(line.split()[1]) for line in selected.untagged if line.endswith(b" EXISTS\r\n")]
    if exists != [len(messages)]:
        raise BenchError(f"{server.name}: INBOX shows {exists} messages after loading")
    server.client, server.loaded = client, len(messages)
    cipher = client.sock.cipher()
    return {
        "first_login_ms": round(first_login * 1000.0, 1),
        "load_seconds": round(seconds, 2),
        "load_msg_per_s": round(len(messages) / seconds),
        "append_batch": batch,
        "tls": f"{client.sock.version()} {cipher[0] if cipher else ''}",
    }


def _search_hits(untagged: list[bytes]) -> int:
    return sum(len(line.split()) - 2 for line in untagged if line.startswith(b"* SEARCH"))


def run_op(
    op: str, server: Server, rep: int, appends: list[list[corpus.Message]]
) -> dict[str, Any]:
    """Run one rep of one operation; returns what to check (bytes, hits)."""
    client = server.client
    assert client is not None
    n = server.loaded
    if op == "login_select":
        fresh = ImapClient(HOST, server.port, TLS)
        try:
            fresh.login(USER, PASSWORD)
            received = fresh.command(b"SELECT INBOX").received
        finally:
            fresh.close()
        return {"bytes": received}
    if op == "fetch_envelope":
        res = client.command(b"FETCH 1:* (FLAGS ENVELOPE)")
        return {"bytes": res.received, "fetched": sum(b" FETCH " in u for u in res.untagged)}
    query = corpus.search_queries(n).get(op)
    if query is not None:
        for _ in range(corpus.SEARCH_REPEAT.get(op, 1)):
            res = client.command(b"UID SEARCH " + query)
        return {"hits": _search_hits(res.untagged)}
    if op == "fetch_body":
        total = 0
        for seq in random.Random(rep).sample(range(1, n + 1), min(FETCH_BODIES, n)):
            total += client.command(b"FETCH %d BODY[]" % seq).received
        return {"bytes": total}
    if op == "append":
        for message in appends[rep]:
            client.append("INBOX", [(message.data, message.internal_date)])
        return {"appended": len(appends[rep])}
    if op == "store_each":
        order = random.Random(-1).sample(range(1, n + 1), n)
        for j in range(STORES):
            client.command(b"STORE %d +FLAGS (\\Flagged)" % order[(rep * STORES + j) % n])
        return {"stored": STORES}
    if op == "store_all":
        res = client.command(b"STORE 1:* +FLAGS ($Bench%d)" % rep)
        return {"fetched": len(res.untagged)}
    raise ValueError(op)


def run_ops(servers: list[Server], appends: list[list[corpus.Message]]) -> dict[str, Any]:
    """Every op REPS times per server, servers alternating; medians in ms. For a server on
    PostgreSQL also what its cluster spent per rep (CPU ms, WAL bytes: pg_cost)."""
    times: dict[str, dict[str, list[float]]] = {s.name: {op: [] for op in OPS} for s in servers}
    checks: dict[str, dict[str, Any]] = {s.name: {} for s in servers}
    for op in OPS:
        print(f"   {op} ...", flush=True)
        for rep in range(REPS):
            for server in servers:
                before = server.pg.usage() if server.pg is not None else None
                started = time.perf_counter()
                info = run_op(op, server, rep, appends)
                times[server.name][op].append((time.perf_counter() - started) * 1000.0)
                check = checks[server.name].setdefault(op, {})
                if server.pg is not None and before is not None:
                    _add_cost(check, before, server.pg.usage())
                check.update({k: v for k, v in info.items() if k not in check})  # the first rep's
    for server in servers:
        for op in OPS:
            check = checks[server.name][op]
            if "pg_cpu_ms" in check:  # totals over the reps -> per rep
                check["pg_cpu_ms"] = round(check["pg_cpu_ms"] / REPS, 1)
                check["pg_wal_bytes"] = round(check["pg_wal_bytes"] / REPS)
    return medians(times, checks)


def _add_cost(check: dict[str, Any], before: Usage, after: Usage) -> None:
    """Add one rep's PostgreSQL CPU (ms) and WAL (bytes) to an operation's totals. The CPU is
    read from /proc in clock ticks (10 ms), so only sums over reps say much for short ops."""
    cpu_ms = (after.cpu_seconds - before.cpu_seconds) * 1000.0
    check["pg_cpu_ms"] = check.get("pg_cpu_ms", 0.0) + cpu_ms
    check["pg_wal_bytes"] = check.get("pg_wal_bytes", 0) + after.wal_lsn - before.wal_lsn


def run_stock_ops(servers: list[Server], first_append: int) -> dict[str, Any]:
    """imap_stock.OPS REPS times per server with imaplib, servers alternating; medians in ms."""
    appends = imap_stock.append_messages(first_append, REPS)
    times: dict[str, dict[str, list[float]]] = {
        s.name: {op: [] for op in imap_stock.OPS} for s in servers
    }
    checks: dict[str, dict[str, Any]] = {s.name: {} for s in servers}
    clients = {s.name: imap_stock.StockClient(HOST, s.port, TLS, USER, PASSWORD) for s in servers}
    try:
        for op in imap_stock.OPS:
            print(f"   imaplib {op} ...", flush=True)
            for rep in range(REPS):
                for server in servers:
                    client = clients[server.name]
                    started = time.perf_counter()
                    info = imap_stock.run_op(op, client, server.loaded, rep, appends)
                    times[server.name][op].append((time.perf_counter() - started) * 1000.0)
                    checks[server.name].setdefault(op, info)
    finally:
        for client in clients.values():
            client.close()
    return medians(times, checks)


def raise_fd_limit(want: int) -> dict[str, int]:
    """Raise this process's soft RLIMIT_NOFILE (children, postroom included, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        soft = min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return {"soft": soft, "hard": hard}


def open_files_limit(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return " ".join(line.split()[3:5])
    except OSError:
        pass
    return "?"


def settled_rss(pid: int, seconds: float = 1.0) -> int:
    """Highest RSS over a short window (KiB), once allocation has quietened down."""
    deadline = time.monotonic() + seconds
    peak = 0
    while time.monotonic() < deadline:
        peak = max(peak, tree_rss_kib(pid))
        time.sleep(0.1)
    return peak


@contextmanager
def held_sessions(port: int, count: int, mode: str, user: str = "") -> Iterator[dict[str, Any]]:
    """Hold ``count`` connections open (imap_idlers.py children) for the body of the with."""
    procs: list[subprocess.Popen[str]] = []
    report: dict[str, Any] = {"opened": 0, "failed": 0, "seconds": 0.0, "errors": []}
    try:
        for i in range(IDLER_PROCS):
            share = count // IDLER_PROCS + (1 if i < count % IDLER_PROCS else 0)
            command = [
                sys.executable, str(HERE / "imap_idlers.py"), "--port", str(port),
                "--count", str(share), "--mode", mode, "--user", user,
                "--password", PASSWORD, "--deadline", str(IDLE_DEADLINE),
            ]  # fmt: skip
            procs.append(
                subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise BenchError(f"imap_idlers.py exited with status {proc.wait()}")
            part = json.loads(line)
            report["opened"] += part["opened"]
            report["failed"] += part["failed"]
            report["seconds"] = max(report["seconds"], part["seconds"])
            report["errors"] += part["errors"]
        yield report
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure_sessions(
    server_pid: int, port: int, count: int, mode: str, user: str = ""
) -> dict[str, Any]:
    """RSS of the server before and while ``count`` sessions of ``mode`` are held open."""
    before = settled_rss(server_pid)
    sampler = RssSampler(server_pid, interval=0.2).start()
    try:
        with held_sessions(port, count, mode, user) as report:
            time.sleep(2.0)  # let the last sessions settle into their wait
            after = settled_rss(server_pid)
    finally:
        sampler.stop()
    opened = report["opened"]
    return {
        "mode": mode,
        "sessions": count,
        **report,
        "rss_before_mib": mib(before),
        "rss_after_mib": mib(after),
        "rss_peak_mib": mib(sampler.peak_kib),
        "rss_delta_mib": mib(after - before),
        "kib_per_session": round((after - before) / opened, 1) if opened else None,
    }


def postroom_config(imap_port: int, imaps_port: int, cert: Path, key: Path, conns: int) -> str:
    """Lines appended to sys_postroom's config: they continue its [listen] table."""
    return (
        f'imap = "{HOST}:{imap_port}"\nimaps = "{HOST}:{imaps_port}"\n\n'
        f'[tls]\ncert = "{cert}"\nkey = "{key}"\n\n'
        f"[limits]\nconnections = {conns}\nconnections_per_ip = {conns}\n"
        f"imap_sessions_per_user = {conns}\n\n"
        # Only the idle-plain memory run logs in without TLS; timed runs all use imaps.
        "[auth]\nplaintext = true\n"
    )


@contextmanager
def postroom_server(
    cert: Path, key: Path, conns: int, storage: str = "", add_users: bool = True
) -> Iterator[tuple[Postroom, int, int]]:
    """A postroom with IMAP listeners; ``storage`` is its `[storage]` table (default SQLite),
    ``add_users`` false for a second node on a database that has them already."""
    imap_port, imaps_port = free_port(), free_port()
    users = (USER, IDLE_USER) if add_users else ()
    setup = [("user", "add", u, "--password", PASSWORD) for u in users]
    extra = postroom_config(imap_port, imaps_port, cert, key, conns) + storage
    with Postroom(Load(), extra_config=extra, setup=setup) as pr:
        assert pr.proc is not None
        wait_port(imaps_port, timeout=30, proc=pr.proc, log=pr.log)
        yield pr, imap_port, imaps_port


def memory(cert: Path, key: Path, sessions: int, tls_sessions: int) -> dict[str, Any]:
    """postroom's RSS with many concurrent sessions, each mode on a fresh server."""
    limits = raise_fd_limit(sessions + 1024)
    result: dict[str, Any] = {"bench_nofile": limits, "target_mib": RSS_TARGET_MIB}
    plan = (
        ("greeting", sessions),
        ("tls", tls_sessions),
        ("idle", sessions),
        ("idle-plain", sessions),
    )
    for mode, count in plan:
        print(f"   memory: {count} '{mode}' sessions ...", flush=True)
        with postroom_server(cert, key, sessions + 100) as (pr, imap_port, imaps_port):
            assert pr.proc is not None
            result["postroom_nofile"] = open_files_limit(pr.proc.pid)
            if mode.startswith("idle"):
                client = connect(Server("postroom", imaps_port, pr.proc.pid), IDLE_USER)
                client.append("INBOX", [(corpus.message(i).data, "") for i in range(IDLE_INBOX)])
                client.close()
            port = imap_port if mode in ("greeting", "idle-plain") else imaps_port
            result[mode] = measure_sessions(pr.proc.pid, port, count, mode, IDLE_USER)
    idle, tls, plain = result["idle"], result["tls"], result["greeting"]
    if idle["kib_per_session"] and tls["kib_per_session"] and plain["kib_per_session"]:
        tls_cost = tls["kib_per_session"] - plain["kib_per_session"]
        result["tls_kib_per_session"] = round(tls_cost, 1)
        without = idle["rss_after_mib"] - mib(tls_cost * idle["opened"])
        result["idle_without_tls_estimate_mib"] = round(without, 1)
    result["idle_rss_ok"] = result["idle-plain"]["rss_after_mib"] <= RSS_TARGET_MIB
    return result


def run(names: list[str], messages: int, sessions: int, tls_sessions: int) -> dict[str, Any]:
    """The whole IMAP scenario; ``names`` is a subset of SYSTEMS."""
    out: dict[str, Any] = {"messages": messages, "reps": REPS, "results": {}, "errors": {}}
    tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-imap-"))
    try:
        cert, key = make_certificate(tmp)
        print(f"== imap: generating {messages} + {REPS * APPENDS} messages ...", flush=True)
        started = time.perf_counter()
        mailbox = [corpus.message(i) for i in range(messages)]
        appends = [
            [corpus.message(messages + rep * APPENDS + j) for j in range(APPENDS)]
            for rep in range(REPS)
        ]
        out["corpus"] = {
            "bytes": sum(len(m.data) for m in mailbox),
            "multipart": sum(b"multipart/" in m.data for m in mailbox),
            "subject_marked": sum(m.subject_marked for m in mailbox),
            "body_marked": sum(m.body_marked for m in mailbox),
            "generate_seconds": round(time.perf_counter() - started, 1),
        }
        servers: list[Server] = []
        with ExitStack() as stack:
            starters: dict[str, Callable[[], Server]] = {
                "dovecot": lambda: _start_dovecot(stack, cert, key),
                "postroom": lambda: _start_postroom(stack, cert, key),
                "postroom-pg": lambda: _start_postroom_pg(stack, cert, key, 1),
                "postroom-pg2": lambda: _start_postroom_pg(stack, cert, key, 2),
            }
            for name in names:
                print(f"== imap {name}: start and load {messages} messages ...", flush=True)
                try:
                    server = starters[name]()
                    out.setdefault("load", {})[name] = load_mailbox(server, mailbox)
                    servers.append(server)
                    print(f"   {out['load'][name]}", flush=True)
                except (BenchError, OSError) as exc:
                    out["errors"][name] = str(exc)
                    print(f"   FAILED: {exc}", flush=True)
            if servers:
                print("== imap: operations", flush=True)
                out["results"] = run_ops(servers, appends)
                print("== imap: operations with imaplib", flush=True)
                out["stock"] = run_stock_ops(servers, messages + REPS * APPENDS)
            for server in servers:
                if server.name == "postroom":
                    out["postroom_rss_after_ops_mib"] = mib(tree_rss_kib(server.pid))
                    print(f"   memory: {BIG_SELECT_SESSIONS} sessions on the big INBOX ...")
                    out["big_select"] = measure_sessions(
                        server.pid, server.port, BIG_SELECT_SESSIONS, "idle", USER
                    )
                    out["big_select"]["inbox_messages"] = messages + REPS * APPENDS
                if server.client is not None:
                    server.client.close()
        if "postroom" in names and sessions > 0:
            try:
                out["memory"] = memory(cert, key, sessions, tls_sessions)
            except (BenchError, OSError) as exc:
                out["errors"]["memory"] = str(exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _start_dovecot(stack: ExitStack, cert: Path, key: Path) -> Server:
    dovecot = stack.enter_context(Dovecot({USER: PASSWORD}, cert, key))
    assert dovecot.proc is not None
    return Server("dovecot", dovecot.port, dovecot.proc.pid)


def _start_postroom(stack: ExitStack, cert: Path, key: Path) -> Server:
    pr, _, imaps_port = stack.enter_context(postroom_server(cert, key, 1000))
    assert pr.proc is not None
    return Server("postroom", imaps_port, pr.proc.pid)


def _start_postroom_pg(stack: ExitStack, cert: Path, key: Path, nodes: int) -> Server:
    """postroom on a private PostgreSQL (pg_server.py). With two nodes on the database the
    INBOX is filled through the first and every timed operation goes to the second, which
    must read what the first wrote."""
    pg = stack.enter_context(BenchPostgres())
    storage = pg.storage_config()
    first, _, first_port = stack.enter_context(postroom_server(cert, key, 1000, storage))
    assert first.proc is not None
    if nodes == 1:
        return Server("postroom-pg", first_port, first.proc.pid, pg=pg)
    second, _, port = stack.enter_context(postroom_server(cert, key, 1000, storage, False))
    assert second.proc is not None
    return Server("postroom-pg2", port, second.proc.pid, load_port=first_port, pg=pg)
