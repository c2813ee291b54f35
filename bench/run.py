"""postroom benchmark: Postfix vs aiosmtpd vs postroom under the same smtp-source load.

Usage (from the repo root, as root, with postfix installed)::

    .venv/bin/python bench/run.py [--messages 5000] [--rounds 3]
                                  [--only postfix,aiosmtpd,dovecot,postroom,
                                          postroom-pg,postroom-pg2]
                                  [--scenario receive,relay,imap,stock,auth]
                                  [--auth-messages 600]
                                  [--imap-messages 10000] [--imap-sessions 10000]

Each system gets ``smtp-source -s 20 -m N -l 5120`` on its own free 127.0.0.1
port; see the sys_*.py modules for what each rate means.  In ``receive`` every
system runs ``--rounds`` times, in turn and in alternating order, and its median
round is reported (one run of a system swings by a quarter between identical
runs on a shared machine).  Five scenarios:
``receive`` (accept and deliver locally; postroom is also measured for RSS
growth while 10 sessions send a 20 MiB message each; postroom-pg and postroom-pg2 are one and
two postroom nodes on a private PostgreSQL, sys_postroom_pg.py, with its cost per message),
``relay`` (Postfix and postroom forward the load into smtp-sink, sys_relay.py), ``imap``
(Dovecot and postroom, on SQLite and on PostgreSQL, over the same generated mailbox, with
its own client and with imaplib, then postroom's RSS with many idle sessions, sys_imap.py) and
``stock`` (smtplib against Postfix and postroom, poplib against Dovecot and
postroom, sys_stock.py) and ``auth`` (DKIM-signed mail from a remote domain verified by
Postfix with opendkim and opendmarc and by postroom, and postroom's submission rate with
and without DKIM signing, sys_auth.py).  Prints a table per scenario and writes
``bench/results/latest.json``.  A system that fails prints
its error and the others still run; the exit status is 1 if any selected system
failed, else 0 (missing a target does not fail the run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import imap_stock
import pg_server
import sys_aiosmtpd
import sys_auth
import sys_dovecot
import sys_imap
import sys_postfix
import sys_postroom
import sys_postroom_pg
import sys_relay
import sys_stock
from common import BenchError, Load

Runner = Callable[[Load, float], dict[str, Any]]
SYSTEMS: dict[str, Runner] = {
    "postfix": sys_postfix.run,
    "aiosmtpd": sys_aiosmtpd.run,
    "postroom": sys_postroom.run,
    "postroom-pg": sys_postroom_pg.run,
    "postroom-pg2": sys_postroom_pg.run_two,
}
PG_SYSTEMS = ("postroom-pg", "postroom-pg2")
RELAY_SYSTEMS: dict[str, Runner] = {
    "postfix": sys_relay.run_postfix,
    "postroom": sys_relay.run_postroom,
}
IMAP_SYSTEMS = sys_imap.SYSTEMS
SCENARIOS = ("receive", "relay", "imap", "stock", "auth")
STOCK_SYSTEMS = ("postfix", "dovecot", "postroom")
RATIO_TARGET_VS_POSTFIX = 2.0
RELAY_TARGET_VS_POSTFIX = 1.0
IMAP_TARGET_VS_DOVECOT = 1.0
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per system")
    parser.add_argument(
        "--only",
        default=",".join([*SYSTEMS, "dovecot"]),  # every system: IMAP_SYSTEMS are these
        help="comma-separated systems to run (default: %(default)s)",
    )
    parser.add_argument(
        "--scenario",
        default=",".join(SCENARIOS),
        help="comma-separated scenarios to run (default: %(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of each system in the receive scenario; the median is reported",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds allowed per system run"
    )
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write results")
    parser.add_argument(
        "--imap-messages", type=int, default=10000, help="messages in the IMAP test mailbox"
    )
    parser.add_argument(
        "--imap-sessions",
        type=int,
        default=10000,
        help="concurrent idle IMAP sessions for postroom's memory test (0: skip it)",
    )
    parser.add_argument(
        "--imap-tls-sessions",
        type=int,
        default=2000,
        help="TLS-only connections used to estimate TLS's share of that memory",
    )
    parser.add_argument(
        "--auth-messages",
        type=int,
        default=sys_auth.MESSAGES,
        help="signed messages per system and algorithm in the auth scenario (plus a warm-up)",
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    known = [*SYSTEMS, *(name for name in IMAP_SYSTEMS if name not in SYSTEMS)]
    unknown = [name for name in args.only if name not in known]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    args.scenario = [name.strip() for name in args.scenario.split(",") if name.strip()]
    unknown = [name for name in args.scenario if name not in SCENARIOS]
    if unknown or not args.scenario:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    if args.auth_messages < 1:
        parser.error("--auth-messages must be at least 1")
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.imap_messages < 1 or args.imap_sessions < 0 or args.imap_tls_sessions < 1:
        parser.error("--imap-messages and --imap-tls-sessions must be at least 1")
    return args


def ratio(
    results: dict[str, dict[str, Any]], system: str, ours_name: str = "postroom"
) -> float | None:
    """``ours_name``'s msg/s (postroom's by default) divided by ``system``'s, if both were
    measured."""
    ours = results.get(ours_name, {}).get("msg_per_s")
    theirs = results.get(system, {}).get("msg_per_s")
    if not ours or not theirs:
        return None
    return round(float(ours) / float(theirs), 2)


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print()
    print(f"{'system':<13} {'msg/s':>10} {'seconds':>9} {'postroom/system':>16}")
    print("-" * 51)
    for name, res in results.items():
        if "error" in res:
            print(f"{name:<13} {'FAILED':>10}")
            continue
        r = None if name == "postroom" else ratio(results, name)
        rounds = res.get("rounds_msg_per_s", [])
        each = f"   rounds: {' '.join(f'{rate:.1f}' for rate in rounds)}" if len(rounds) > 1 else ""
        print(
            f"{name:<13} {res['msg_per_s']:>10.1f} {res['seconds']:>9.2f} "
            f"{'-' if r is None else f'{r:.2f}':>16}{each}"
        )
    r = ratio(results, "postfix")
    verdict = "n/a" if r is None else ("OK" if r >= RATIO_TARGET_VS_POSTFIX else "MISSED")
    print(f"\npostroom/postfix target >= {RATIO_TARGET_VS_POSTFIX}: {verdict}")
    pr = results.get("postroom", {})
    if "rss_delta_mib" in pr:
        print(
            f"postroom RSS: idle {pr['idle_rss_mib']} MiB, peak {pr['peak_rss_mib']} MiB with "
            f"{pr['big_sessions']} x 20 MiB sessions -> +{pr['rss_delta_mib']} MiB "
            f"(target <= {pr['rss_target_mib']}: {'OK' if pr['rss_ok'] else 'MISSED'})"
        )
    elif "rss_error" in pr:
        print(f"postroom RSS: FAILED ({pr['rss_error'].splitlines()[0]})")
    if "group_commit" in pr:
        print(f"postroom group commit: {pr['group_commit']}")
    print_pg_table(results)


def pg_ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each PostgreSQL system's msg/s over Postfix's and over postroom's on SQLite."""
    return {
        f"{name}/{other}": ratio(results, other, name)
        for name in PG_SYSTEMS
        if name in results
        for other in ("postfix", "postroom")
        if other in results
    }


def print_pg_table(results: dict[str, dict[str, Any]]) -> None:
    """postroom on PostgreSQL against Postfix and postroom on SQLite, and what PostgreSQL
    spent per message (sys_postroom_pg.py, pg_server.Usage)."""
    names = [name for name in PG_SYSTEMS if name in results and "error" not in results[name]]
    if not names:
        return
    print("\npostroom on PostgreSQL (fsync and synchronous_commit on; per message inside it)")
    print(
        f"{'system':<13} {'msg/s':>8} {'/postfix':>9} {'/sqlite':>8} {'WAL B':>7} "
        f"{'fsyncs':>7} {'commits':>8} {'rows':>6} {'pg cpu ms':>10} {'node cpu ms':>12}"
    )
    print("-" * 96)
    for name in names:
        res = results[name]
        shown = [ratio(results, other, name) for other in ("postfix", "postroom")]
        vs = ["-" if r is None else f"{r:.2f}" for r in shown]
        print(
            f"{name:<13} {res['msg_per_s']:>8.1f} {vs[0]:>9} {vs[1]:>8} "
            f"{res['pg_wal_bytes_per_msg']:>7} {res['pg_wal_syncs_per_msg']:>7.3f} "
            f"{res['pg_commits_per_msg']:>8.2f} {res['pg_rows_written_per_msg']:>6.1f} "
            f"{res['pg_cpu_ms_per_msg']:>10.3f} {res['postroom_cpu_ms_per_msg']:>12.3f}"
        )
    print(
        "/postfix, /sqlite = the system's msg/s over Postfix's and postroom-on-SQLite's; "
        "WAL B, fsyncs (pg_stat_wal.wal_sync),\ncommits (pg_stat_database.xact_commit), rows "
        "(inserted+updated+deleted), pg cpu ms (the postgres processes)\nand node cpu ms (the "
        "postroom nodes) are per message, over the timed load"
    )
    for name in names:
        if "group_commit" in results[name]:
            print(f"{name} group commit: {results[name]['group_commit']}")
        tables = results[name].get("pg_rows_by_table_per_msg")
        if tables:
            each = ", ".join(f"{table} {rows:g}" for table, rows in tables.items())
            print(f"{name} rows written per message: {each}")


def host_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "postfix": sys_postfix.postfix_version(),
        "dovecot": sys_dovecot.dovecot_version(),
        "postgresql": pg_server.postgres_version(),
    }


def print_relay_table(results: dict[str, dict[str, Any]]) -> None:
    print("\nrelay into smtp-sink (smtp-source start until the sink has every message)")
    print(f"{'system':<10} {'msg/s':>10} {'seconds':>9} {'accepted/s':>11} {'tail s':>7}")
    print("-" * 51)
    for name, res in results.items():
        if "error" in res:
            print(f"{name:<10} {'FAILED':>10}")
            continue
        print(
            f"{name:<10} {res['msg_per_s']:>10.1f} {res['seconds']:>9.2f} "
            f"{res['accept_msg_per_s']:>11.1f} {res['tail_seconds']:>7.2f}"
        )
    r = ratio(results, "postfix")
    verdict = "n/a" if r is None else ("OK" if r >= RELAY_TARGET_VS_POSTFIX else "MISSED")
    shown = "-" if r is None else f"{r:.2f}"
    print(f"\nrelay postroom/postfix = {shown} (target >= {RELAY_TARGET_VS_POSTFIX}): {verdict}")
    pr = results.get("postroom", {})
    if "peak_rss_mib" in pr:
        idle, peak = pr["idle_rss_mib"], pr["peak_rss_mib"]
        print(f"postroom RSS while relaying: idle {idle} MiB, peak {peak} MiB")


def print_op_table(
    title: str, res: dict[str, Any], ops: tuple[str, ...], reference: str
) -> dict[str, float | None]:
    """One line per operation: ``reference``'s and postroom's median ms and their ratio."""
    ref, ours = res.get(reference, {}), res.get("postroom", {})
    print(f"\n{title}")
    print(f"{'operation':<16} {reference + ' ms':>11} {'postroom ms':>12} {'ratio':>7}  check")
    print("-" * 60)
    ratios: dict[str, float | None] = {}
    for op in ops:
        d, p = ref.get(op, {}), ours.get(op, {})
        dm, pm = d.get("median_ms"), p.get("median_ms")
        r = ratios[op] = round(dm / pm, 2) if dm and pm else None
        check = " ".join(
            f"{k}={d.get(k, '-')}/{p.get(k, '-')}" for k in ("hits", "bytes") if k in d or k in p
        )
        shown = ["-" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}" for v in (dm, pm)]
        verdict = "-" if r is None else f"{r:.2f}" + ("" if r >= IMAP_TARGET_VS_DOVECOT else " <")
        print(f"{op:<16} {shown[0]:>11} {shown[1]:>12} {verdict:>7}  {check}")
    print(f"ratio = {reference} ms / postroom ms (target >= {IMAP_TARGET_VS_DOVECOT}; '<' missed)")
    return ratios


def print_pg_op_table(
    title: str, res: dict[str, Any], ops: tuple[str, ...], name: str
) -> dict[str, dict[str, float | None]]:
    """One line per operation: Dovecot's, postroom-on-SQLite's and ``name``'s median ms, the
    ratios Dovecot/``name`` and SQLite/``name``, and what PostgreSQL spent per run of it."""
    ref, sqlite, ours = res.get("dovecot", {}), res.get("postroom", {}), res.get(name, {})
    print(f"\n{title}")
    print(
        f"{'operation':<16} {'dovecot ms':>11} {'sqlite ms':>10} {'pg ms':>9} "
        f"{'dovecot/pg':>11} {'sqlite/pg':>10} {'pg cpu ms':>10} {'WAL KiB':>8}"
    )
    print("-" * 92)
    ratios: dict[str, dict[str, float | None]] = {}
    for op in ops:
        dm, sm, pm = (r.get(op, {}).get("median_ms") for r in (ref, sqlite, ours))
        vs = ratios[op] = {
            "dovecot": round(dm / pm, 2) if dm and pm else None,
            "postroom": round(sm / pm, 2) if sm and pm else None,
        }
        cost = ours.get(op, {})
        wal = cost.get("pg_wal_bytes")
        cells = [
            "-" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}"
            for v in (dm, sm, pm, vs["dovecot"], vs["postroom"], cost.get("pg_cpu_ms"))
        ]
        print(
            f"{op:<16} {cells[0]:>11} {cells[1]:>10} {cells[2]:>9} {cells[3]:>11} "
            f"{cells[4]:>10} {cells[5]:>10} {'-' if wal is None else f'{wal / 1024:.1f}':>8}"
        )
    print("ratio = the other's ms / pg ms; pg cpu ms and WAL KiB: PostgreSQL's, per run")
    return ratios


def print_imap_table(imap: dict[str, Any]) -> None:
    runs = f"{imap['messages']} messages, median of {imap['reps']} runs"
    imap["ratios"] = print_op_table(
        f"IMAP over TLS, {runs}", imap.get("results", {}), sys_imap.OPS, "dovecot"
    )
    if imap.get("stock"):
        imap["stock_ratios"] = print_op_table(
            f"IMAP over TLS with imaplib (stock client, Nagle on), {runs}",
            imap["stock"],
            imap_stock.OPS,
            "dovecot",
        )
    for name in sys_imap.PG_SYSTEMS:
        if name not in imap.get("results", {}):
            continue
        imap.setdefault("pg_ratios", {})[name] = print_pg_op_table(
            f"IMAP over TLS on PostgreSQL: {name}, {runs}", imap["results"], sys_imap.OPS, name
        )
        if imap.get("stock"):
            imap["pg_ratios"][name + " stock"] = print_pg_op_table(
                f"imaplib on PostgreSQL: {name}", imap["stock"], imap_stock.OPS, name
            )
    for name, load in imap.get("load", {}).items():
        print(f"load {name}: {load['load_seconds']} s ({load['load_msg_per_s']} msg/s, untimed)")
        print(f"first LOGIN {name} (argon2 in both, untimed): {load['first_login_ms']} ms")
    for name, error in imap.get("errors", {}).items():
        print(f"{name}: FAILED ({error.splitlines()[0] if error else ''})")
    big = imap.get("big_select")
    if big:
        print(
            f"postroom: {big['opened']} sessions with the {big['inbox_messages']}-message INBOX "
            f"selected: +{big['rss_delta_mib']} MiB ({big['kib_per_session']} KiB each)"
        )
    mem = imap.get("memory")
    if mem:
        for mode in ("greeting", "tls", "idle", "idle-plain"):
            m = mem[mode]
            print(
                f"postroom RSS, {m['opened']}/{m['sessions']} '{mode}' sessions: "
                f"{m['rss_before_mib']} -> {m['rss_after_mib']} MiB "
                f"({m['kib_per_session']} KiB each, opened in {m['seconds']} s)"
            )
        idle, plain = mem["idle"], mem["idle-plain"]
        verdict = "OK" if mem["idle_rss_ok"] else "missed"
        print(
            f"idle sessions without TLS: {plain['rss_after_mib']} MiB (target <= "
            f"{mem['target_mib']} MiB: {verdict}); over TLS: {idle['rss_after_mib']} MiB "
            f"(estimate without TLS from the TLS cost: "
            f"{mem.get('idle_without_tls_estimate_mib', '-')} MiB)"
        )


def print_stock_table(stock: dict[str, Any]) -> None:
    stock["ratios"] = print_op_table(
        f"stock clients (smtplib, poplib: Nagle on), median of {stock['reps']} runs",
        sys_stock.reference_view(stock.get("results", {})),
        sys_stock.OPS,
        "reference",
    )
    print("reference: Postfix for smtp_*, Dovecot for pop3_*")
    for name, error in stock.get("errors", {}).items():
        print(f"{name}: FAILED ({error.splitlines()[0] if error else ''})")


def run_systems(
    scenario: str, runners: dict[str, Runner], names: list[str], load: Load, timeout: float
) -> dict[str, dict[str, Any]]:
    """Run each named system of a scenario in turn; a failure is recorded, not raised."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        print(
            f"== {scenario} {name}: {load.messages} messages, {load.sessions} sessions, "
            f"{load.size} bytes ...",
            flush=True,
        )
        # What the last run left for the disk (its mail, its deleted temp dir) is written out
        # now, not charged to this one.
        os.sync()
        started = time.monotonic()
        try:
            results[name] = runners[name](load, timeout)
            print(f"   {results[name]['msg_per_s']} msg/s", flush=True)
        except BenchError as exc:
            results[name] = {**exc.partial, "error": str(exc)}
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        if "error" in results[name]:
            print(f"   FAILED: {results[name]['error']}", flush=True)
        results[name]["wall_seconds"] = round(time.monotonic() - started, 1)
    return results


def run_rounds(
    scenario: str,
    runners: dict[str, Runner],
    names: list[str],
    load: Load,
    timeout: float,
    rounds: int,
) -> dict[str, dict[str, Any]]:
    """`run_systems` `rounds` times, the order reversed every other round; each system's
    result is its median round (by msg/s) with every round's rate beside it. A system that
    failed in any round is reported by its first failure."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for number in range(rounds):
        order = names if number % 2 == 0 else names[::-1]
        if rounds > 1:
            print(f"== {scenario} round {number + 1} of {rounds}", flush=True)
        for name, result in run_systems(scenario, runners, order, load, timeout).items():
            runs[name].append(result)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        failed = [result for result in runs[name] if "error" in result]
        if failed:
            results[name] = failed[0]
            continue
        ranked = sorted(runs[name], key=lambda result: float(result["msg_per_s"]))
        median = ranked[(len(ranked) - 1) // 2]
        results[name] = {**median, "rounds_msg_per_s": [r["msg_per_s"] for r in runs[name]]}
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every server and temp dir is cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    load = Load(messages=args.messages)
    results: dict[str, dict[str, Any]] = {}
    relay: dict[str, dict[str, Any]] = {}
    if "receive" in args.scenario:
        names = [name for name in args.only if name in SYSTEMS]
        results = run_rounds("receive", SYSTEMS, names, load, args.timeout, args.rounds)
    if "relay" in args.scenario:
        names = [name for name in args.only if name in RELAY_SYSTEMS]
        if not names:
            print(f"== relay: nothing to run (it measures {', '.join(RELAY_SYSTEMS)})")
        relay = run_systems("relay", RELAY_SYSTEMS, names, load, args.timeout)
    if results:
        print_table(results)
    if relay:
        print_relay_table(relay)
    imap: dict[str, Any] = {}
    if "imap" in args.scenario:
        names = [name for name in IMAP_SYSTEMS if name in args.only]
        imap = sys_imap.run(names, args.imap_messages, args.imap_sessions, args.imap_tls_sessions)
        print_imap_table(imap)
    stock: dict[str, Any] = {}
    if "stock" in args.scenario:
        stock = sys_stock.run([name for name in STOCK_SYSTEMS if name in args.only])
        print_stock_table(stock)
    auth: dict[str, Any] = {}
    if "auth" in args.scenario:
        names = [name for name in ("postfix", "postroom") if name in args.only]
        auth = sys_auth.run(names, args.auth_messages, args.timeout)
        sys_auth.print_table(auth)
    report = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": host_info(),
        "load": {
            "rounds": args.rounds,
            "messages": load.messages,
            "sessions": load.sessions,
            "size": load.size,
            "sender": load.sender,
            "recipient": load.recipient,
        },
        "results": results,
        "ratios": {
            **{f"postroom/{name}": ratio(results, name) for name in results},
            **pg_ratios(results),
        },
        "relay": {
            "results": relay,
            "ratios": {f"postroom/{name}": ratio(relay, name) for name in relay},
        },
        "targets": {
            "postroom/postfix": RATIO_TARGET_VS_POSTFIX,
            "rss_delta_mib": sys_postroom.RSS_TARGET_MIB,
            "relay postroom/postfix": RELAY_TARGET_VS_POSTFIX,
            "imap dovecot/postroom": IMAP_TARGET_VS_DOVECOT,
            "imap idle sessions rss_mib": sys_imap.RSS_TARGET_MIB,
            "auth postroom/postfix": sys_auth.TARGET_VS_POSTFIX,
        },
        "imap": imap,
        "stock": stock,
        "auth": auth,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.json}")
    every = [*results.values(), *relay.values()]
    failed = imap.get("errors") or stock.get("errors") or auth.get("errors")
    return 1 if any("error" in res for res in every) or failed else 0


if __name__ == "__main__":
    sys.exit(main())
