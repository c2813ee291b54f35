"""Instructions per received message of `postroom serve`, counted by callgrind: a server with
the inbound checks off takes 100, then 600 messages over one smtplib session; the difference
divided by 500 leaves start-up and shutdown out. Deterministic where wall-clock rates on a
shared machine are not (Postfix alone swings from 400 to 700 msg/s between identical runs).

usage: .venv/bin/python bench/callgrind_receive.py [REPO]   (REPO: a checkout with its .venv)
"""

from __future__ import annotations

import re
import smtplib
import socket
import subprocess
import sys
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


def instructions(repo: Path, messages: int) -> int:
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
        with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
            for _ in range(messages):
                client.sendmail("a@remote.test", ["u@bench.test"], MESSAGE)
    finally:
        server.terminate()
        server.wait(300)
    found = re.search(r"^(?:summary|totals): (\d+)", output.read_text(errors="replace"), re.M)
    assert found, f"no instruction total in {output}"
    return int(found[1])


def main() -> None:
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    few, many = instructions(repo, 100), instructions(repo, 600)
    print(f"{repo}: {(many - few) / 500 / 1e6:.3f} M instructions per received message")


if __name__ == "__main__":
    main()
