"""Instructions per received message of `postroom serve`, counted by callgrind: a server with
the inbound checks off takes 100, then 600 messages over one smtplib session; the difference
divided by 500 leaves start-up and shutdown out. Deterministic where wall-clock rates on a
shared machine are not (Postfix alone swings from 400 to 700 msg/s between identical runs).

usage: .venv/bin/python bench/callgrind_receive.py [--connections] [--keep DIR] [REPO]
  REPO: a checkout with its .venv. --connections: a connection per message, as smtp-source
  makes them in `make bench` (greeting, EHLO and QUIT counted too). --keep DIR: keep the
  callgrind output files there (for callgrind_annotate).
"""

from __future__ import annotations

import argparse
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 600.0  # valgrind runs the start-up (imports) 50 times slower
BODY = ("x" * 76 + "\r\n") * 60
MESSAGE = f"From: a@remote.test\r\nTo: u@bench.test\r\nSubject: t\r\n\r\n{BODY}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def instructions(repo: Path, messages: int, connections: bool, keep: Path | None) -> int:
    """Callgrind's instruction total for a server that received `messages` messages."""
    postroom = repo / ".venv" / "bin" / "postroom"
    work = Path(tempfile.mkdtemp(prefix="callgrind-"))
    port = free_port()
    config = work / "postroom.toml"
    # A checkout from before [verify] existed knows no such table.
    checks = (
        "[verify]\nenabled = false\n"
        if "VerifyConfig" in (repo / "src" / "postroom" / "config.py").read_text()
        else ""
    )
    config.write_text(
        f'hostname = "mx.bench.test"\ndata_dir = "{work}/data"\ndomains = ["bench.test"]\n'
        f'[listen]\nsmtp = "127.0.0.1:{port}"\n[dns]\nnameservers = ["127.0.0.1:9"]\n' + checks
    )
    subprocess.run(
        [postroom, "--config", config, "user", "add", "u@bench.test", "--password", "pw12345678"],
        check=True,
        capture_output=True,
    )
    output = work / "callgrind.out"
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={output}",
            postroom,
            "--config",
            config,
            "serve",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        if connections:
            for _ in range(messages):
                with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
                    client.sendmail("a@remote.test", ["u@bench.test"], MESSAGE)
        else:
            with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
                for _ in range(messages):
                    client.sendmail("a@remote.test", ["u@bench.test"], MESSAGE)
    finally:
        server.terminate()
        server.wait(300)
    found = re.search(r"^(?:summary|totals): (\d+)", output.read_text(errors="replace"), re.M)
    assert found, f"no instruction total in {output}"
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(output, keep / f"callgrind.{messages}.out")
    return int(found[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", action="store_true")
    parser.add_argument("--keep", type=Path)
    parser.add_argument("repo", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    few = instructions(args.repo, 100, args.connections, args.keep)
    many = instructions(args.repo, 600, args.connections, args.keep)
    per = "connection and message" if args.connections else "received message"
    print(f"{args.repo}: {(many - few) / 500 / 1e6:.3f} M instructions per {per}")


if __name__ == "__main__":
    main()
