"""postroom benchmark: Postfix vs aiosmtpd vs postroom under the same smtp-source load.

Usage (from the repo root, as root, with postfix installed)::

    .venv/bin/python bench/run.py [--messages 5000] [--only postfix,aiosmtpd,postroom]

Each system gets ``smtp-source -s 20 -m N -l 5120`` on its own free 127.0.0.1
port; see the sys_*.py modules for what each rate means.  postroom is also
measured for RSS growth while 10 sessions send a 20 MiB message each.  Prints a
table and writes ``bench/results/latest.json``.  A system that fails prints its
error and the others still run; the exit status is 1 if any selected system
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
from common import BenchError, Load

SYSTEMS: dict[str, Callable[[Load, float], dict[str, Any]]] = {
    "postfix": sys_postfix.run,
    "aiosmtpd": sys_aiosmtpd.run,
    "postroom": sys_postroom.run,
}
RATIO_TARGET_VS_POSTFIX = 2.0
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
        "--timeout", type=float, default=600.0, help="seconds allowed per system run"
    )
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write results")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every server and temp dir is cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    load = Load(messages=args.messages)
    results: dict[str, dict[str, Any]] = {}
    for name in args.only:
        print(
            f"== {name}: {load.messages} messages, {load.sessions} sessions, {load.size} bytes ...",
            flush=True,
        )
        started = time.monotonic()
        try:
            results[name] = SYSTEMS[name](load, args.timeout)
            print(f"   {results[name]['msg_per_s']} msg/s", flush=True)
        except BenchError as exc:
            results[name] = {**exc.partial, "error": str(exc)}
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        if "error" in results[name]:
            print(f"   FAILED: {results[name]['error']}", flush=True)
        results[name]["wall_seconds"] = round(time.monotonic() - started, 1)
    print_table(results)
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
        "targets": {
            "postroom/postfix": RATIO_TARGET_VS_POSTFIX,
            "rss_delta_mib": sys_postroom.RSS_TARGET_MIB,
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.json}")
    return 1 if any("error" in res for res in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
