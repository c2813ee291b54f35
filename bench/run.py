"""postroom benchmark: Postfix vs aiosmtpd vs postroom under the same smtp-source load.

Usage (from the repo root, as root, with postfix installed)::

    .venv/bin/python bench/run.py [--messages 5000] [--only postfix,aiosmtpd,postroom]
                                  [--scenario receive,relay]

Each system gets ``smtp-source -s 20 -m N -l 5120`` on its own free 127.0.0.1
port; see the sys_*.py modules for what each rate means.  Two scenarios:
``receive`` (accept and deliver locally; postroom is also measured for RSS
growth while 10 sessions send a 20 MiB message each) and ``relay`` (Postfix and
postroom forward the load into smtp-sink, sys_relay.py).  Prints a table per
scenario and writes ``bench/results/latest.json``.  A system that fails prints
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

import sys_aiosmtpd
import sys_postfix
import sys_postroom
import sys_relay
from common import BenchError, Load

Runner = Callable[[Load, float], dict[str, Any]]
SYSTEMS: dict[str, Runner] = {
    "postfix": sys_postfix.run,
    "aiosmtpd": sys_aiosmtpd.run,
    "postroom": sys_postroom.run,
}
RELAY_SYSTEMS: dict[str, Runner] = {
    "postfix": sys_relay.run_postfix,
    "postroom": sys_relay.run_postroom,
}
SCENARIOS = ("receive", "relay")
RATIO_TARGET_VS_POSTFIX = 2.0
RELAY_TARGET_VS_POSTFIX = 1.0
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per system")
    parser.add_argument(
        "--only",
        default=",".join(SYSTEMS),
        help="comma-separated systems to run (default: %(default)s)",
    )
    parser.add_argument(
        "--scenario",
        default=",".join(SCENARIOS),
        help="comma-separated scenarios to run (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds allowed per system run"
    )
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write results")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    args.scenario = [name.strip() for name in args.scenario.split(",") if name.strip()]
    unknown = [name for name in args.scenario if name not in SCENARIOS]
    if unknown or not args.scenario:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    return args


def ratio(results: dict[str, dict[str, Any]], system: str) -> float | None:
    """postroom msg/s divided by ``system``'s, if both were measured."""
    ours = results.get("postroom", {}).get("msg_per_s")
    theirs = results.get(system, {}).get("msg_per_s")
    if not ours or not theirs:
        return None
    return round(float(ours) / float(theirs), 2)


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print()
    print(f"{'system':<10} {'msg/s':>10} {'seconds':>9} {'postroom/system':>16}")
    print("-" * 48)
    for name, res in results.items():
        if "error" in res:
            print(f"{name:<10} {'FAILED':>10}")
            continue
        r = None if name == "postroom" else ratio(results, name)
        print(
            f"{name:<10} {res['msg_per_s']:>10.1f} {res['seconds']:>9.2f} "
            f"{'-' if r is None else f'{r:.2f}':>16}"
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


def host_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "postfix": sys_postfix.postfix_version(),
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every server and temp dir is cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    load = Load(messages=args.messages)
    results: dict[str, dict[str, Any]] = {}
    relay: dict[str, dict[str, Any]] = {}
    if "receive" in args.scenario:
        results = run_systems("receive", SYSTEMS, args.only, load, args.timeout)
    if "relay" in args.scenario:
        names = [name for name in args.only if name in RELAY_SYSTEMS]
        if not names:
            print(f"== relay: nothing to run (it measures {', '.join(RELAY_SYSTEMS)})")
        relay = run_systems("relay", RELAY_SYSTEMS, names, load, args.timeout)
    if results:
        print_table(results)
    if relay:
        print_relay_table(relay)
    report = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": host_info(),
        "load": {
            "messages": load.messages,
            "sessions": load.sessions,
            "size": load.size,
            "sender": load.sender,
            "recipient": load.recipient,
        },
        "results": results,
        "ratios": {f"postroom/{name}": ratio(results, name) for name in results},
        "relay": {
            "results": relay,
            "ratios": {f"postroom/{name}": ratio(relay, name) for name in relay},
        },
        "targets": {
            "postroom/postfix": RATIO_TARGET_VS_POSTFIX,
            "rss_delta_mib": sys_postroom.RSS_TARGET_MIB,
            "relay postroom/postfix": RELAY_TARGET_VS_POSTFIX,
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.json}")
    every = [*results.values(), *relay.values()]
    return 1 if any("error" in res for res in every) else 0


if __name__ == "__main__":
    sys.exit(main())
