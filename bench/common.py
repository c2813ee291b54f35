"""Shared helpers for the postroom benchmark.

Free loopback ports, waiting for a listener, running ``smtp-source`` with the
common load, stopping subprocesses, and sampling the resident memory (VmRSS)
of a process tree from ``/proc``.  Stdlib only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/lib/postfix/sbin")


class BenchError(Exception):
    """A system under test could not be measured; ``partial`` keeps what was."""

    def __init__(self, message: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.partial: dict[str, Any] = partial or {}


@dataclass(frozen=True)
class Load:
    """The smtp-source load every system gets."""

    messages: int = 5000
    sessions: int = 20
    size: int = 5120
    sender: str = "bench@example.test"
    recipient: str = "user@bench.test"


def find_tool(name: str) -> str:
    """Return the path of an executable, also looking in the sbin directories."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    found = shutil.which(name, path=path)
    if not found:
        raise BenchError(f"{name} not found (apt-get install postfix)")
    return found


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 20) -> str:
    """Return the last lines of a log file, or '' if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_port(
    port: int,
    timeout: float = 30.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            detail = tail(log) if log else ""
            raise BenchError(f"server exited with status {proc.returncode}\n{detail}".rstrip())
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listening on {HOST}:{port} after {timeout:.0f}s")


def smtp_source_cmd(load: Load, port: int) -> list[str]:
    """The smtp-source command line for the common load."""
    return [
        find_tool("smtp-source"),
        "-s", str(load.sessions),
        "-m", str(load.messages),
        "-l", str(load.size),
        "-f", load.sender,
        "-t", load.recipient,
        f"{HOST}:{port}",
    ]  # fmt: skip


def start_smtp_source(load: Load, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start smtp-source in its own session, output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            smtp_source_cmd(load, port),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def check_smtp_source(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Raise if a finished smtp-source reported failure."""
    if proc.returncode != 0:
        raise BenchError(f"smtp-source exited with status {proc.returncode}\n{tail(log)}".rstrip())


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Stop a subprocess started with start_new_session=True: TERM, then KILL."""
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def rate(messages: int, seconds: float) -> float:
    """Messages per second, 0 if no time elapsed."""
    return messages / seconds if seconds > 0 else 0.0


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may contain spaces or parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _vmrss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` plus all its descendants, in KiB (0 if it is gone)."""
    total = _vmrss_kib(pid)
    if total == 0:
        return 0
    children = _children_map()
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        total += _vmrss_kib(child)
        stack.extend(children.get(child, []))
    return total


class RssSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread.

    ``peak_kib`` is the highest sample since the last ``reset()``.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._peak = 0
        self._last = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = tree_rss_kib(self.pid)
            with self._lock:
                self._last = value
                self._peak = max(self._peak, value)
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        with self._lock:
            self._peak = self._last

    @property
    def peak_kib(self) -> int:
        with self._lock:
            return self._peak

    @property
    def last_kib(self) -> int:
        with self._lock:
            return self._last


def mib(kib: float) -> float:
    """KiB to MiB, rounded to 0.1."""
    return round(kib / 1024.0, 1)


def medians(
    times: dict[str, dict[str, list[float]]], checks: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Each system's and operation's median and runs in ms, with its checks."""
    return {
        name: {
            op: {
                "median_ms": round(statistics.median(samples), 2),
                "runs_ms": [round(t, 2) for t in samples],
                **checks[name][op],
            }
            for op, samples in per_op.items()
        }
        for name, per_op in times.items()
    }
