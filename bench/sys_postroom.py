"""Benchmark postroom: accept-and-deliver rate and RSS growth under big messages.

Uses only postroom's command-line contract:

* ``postroom --config CFG user add user@bench.test --password benchpw``
* ``postroom --config CFG serve`` (subprocess; SMTP on the ``[listen] smtp`` port)
* ``postroom --config CFG mailbox status user@bench.test`` printing a line with
  ``messages=N unseen=N size=N`` (or, in the receive scenario, IMAP STATUS over imaps with
  imaplib, as a mail client asks: a poll costs a round trip, not a program's start-up)

The executable is ``.venv/bin/postroom`` unless ``POSTROOM_BENCH_BIN`` names another.

Order of a run, all against one fresh server and data_dir:

1. idle RSS right after start-up (the serving process plus any children);
2. 10 concurrent smtplib sessions, each sending one 20 MiB message, while RSS
   is sampled every 50 ms: reported as peak minus idle, in MiB;
3. once those are delivered, the smtp-source load; the rate is N / time from
   smtp-source start until the mailbox shows N more messages.  Its size is
   polled back to back only after smtp-source exits (nothing can be complete
   before that), and the end time is when the successful poll returns.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import (
    HOST,
    BenchError,
    Load,
    RssSampler,
    check_smtp_source,
    free_port,
    mib,
    rate,
    start_smtp_source,
    stop_process,
    tail,
    wait_port,
)
from imap_client import client_tls_context
from sys_dovecot import make_certificate

REPO = Path(__file__).resolve().parent.parent
POSTROOM = Path(os.environ.get("POSTROOM_BENCH_BIN", REPO / ".venv" / "bin" / "postroom"))
PASSWORD = "benchpw"
BIG_SESSIONS = 10
BIG_SIZE = 20 * 2**20
RSS_TARGET_MIB = 64
STATUS_RE = re.compile(r"messages=(\d+)\s+unseen=(\d+)\s+size=(\d+)")
IMAP_STATUS_RE = re.compile(rb"\(MESSAGES (\d+)\)")

CONFIG = """\
hostname = "mx.bench.test"
data_dir = "{data}"
domains = ["bench.test"]

[listen]
smtp = "{host}:{port}"
"""


def big_message(size: int, sender: str, recipient: str) -> bytes:
    """An RFC 5322 message of exactly ``size`` bytes with 76-character body lines."""
    head = (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: postroom bench big message\r\n"
        "Message-ID: <big@bench.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJKL\r\n"
    full, rest = divmod(size - len(head), len(line))
    tail_line = b"x" * (rest - 2) + b"\r\n" if rest >= 2 else b""
    return head + line * full + tail_line


class Postroom:
    """A postroom server in a temp dir; use as a context manager."""

    def __init__(
        self,
        load: Load,
        extra_config: str = "",
        setup: Sequence[Sequence[str]] | None = None,
        *,
        count_over_imap: bool = False,
    ) -> None:
        self.load = load
        self.extra_config = extra_config  # appended to the config file (more tables)
        # CLI commands run before `serve`; by default the recipient becomes a user.
        self.setup = (
            [("user", "add", load.recipient, "--password", PASSWORD)] if setup is None else setup
        )
        self.tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-postroom-"))
        self.config = self.tmp / "postroom.toml"
        self.port = free_port()
        self.log = self.tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_status_seconds = 0.0
        # An imaps listener, and the recipient's INBOX counted with IMAP STATUS (its password
        # is PASSWORD: the default setup) instead of `mailbox status`.
        self.imaps_port = free_port() if count_over_imap else None
        self._imap: imaplib.IMAP4_SSL | None = None

    def cli(self, *args: str, timeout: float = 120.0) -> str:
        """Run a postroom CLI command; return its stdout."""
        try:
            res = subprocess.run(
                [str(POSTROOM), "--config", str(self.config), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"postroom {' '.join(args)} took more than {timeout:.0f}s") from exc
        if res.returncode != 0:
            out = (res.stdout + res.stderr).strip()
            raise BenchError(f"postroom {' '.join(args)} failed ({res.returncode}): {out}")
        return res.stdout

    def message_count(self) -> int:
        if self.imaps_port is not None:
            return self._imap_count(self.imaps_port)
        out = self.cli("mailbox", "status", self.load.recipient, timeout=60)
        match = STATUS_RE.search(out)
        if not match:
            raise BenchError(f"unexpected 'mailbox status' output: {out.strip()!r}")
        return int(match.group(1))

    def _imap_count(self, port: int) -> int:
        """Messages in the recipient's INBOX by IMAP STATUS (RFC 3501 §6.3.10), over one
        logged-in connection kept for the next poll."""
        try:
            if self._imap is None:
                client = imaplib.IMAP4_SSL(HOST, port, ssl_context=client_tls_context(), timeout=60)
                client.login(self.load.recipient, PASSWORD)
                self._imap = client
            kind, data = self._imap.status("INBOX", "(MESSAGES)")
        except (OSError, imaplib.IMAP4.error) as exc:
            raise BenchError(f"IMAP STATUS failed: {type(exc).__name__}: {exc}") from exc
        match = IMAP_STATUS_RE.search(data[0] or b"") if kind == "OK" and data else None
        if not match:
            raise BenchError(f"unexpected IMAP STATUS answer: {kind} {data!r}")
        return int(match.group(1))

    def __enter__(self) -> Postroom:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        if not POSTROOM.exists():
            raise BenchError(f"{POSTROOM} not found (make install)")
        # The receive scenarios measure receiving alone: no inbound checks (they ask DNS)
        # unless the scenario turns them on (the auth scenario does).
        checks = "" if "[verify]" in self.extra_config else "\n[verify]\nenabled = false\n"
        imaps = ""
        if self.imaps_port is not None:
            cert, key = make_certificate(self.tmp)
            imaps = f'imaps = "{HOST}:{self.imaps_port}"\n\n[tls]\ncert = "{cert}"\nkey = "{key}"\n'
        self.config.write_text(
            CONFIG.format(data=self.tmp / "data", host=HOST, port=self.port)
            + imaps
            + self.extra_config
            + checks
        )
        for command in self.setup:
            self.cli(*command)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(POSTROOM), "--config", str(self.config), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.tmp,
            )
        wait_port(self.port, timeout=60, proc=self.proc, log=self.log)

    def __exit__(self, *exc: object) -> None:
        if self._imap is not None:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                self._imap.logout()
            self._imap = None
        try:
            stop_process(self.proc)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(
                f"postroom serve exited with status {self.proc.returncode}\n{tail(self.log)}"
            )

    def wait_count(self, target: int, deadline: float) -> int:
        """Poll mailbox status back to back until it shows >= target messages."""
        count = -1
        while True:
            called = time.monotonic()
            count = self.message_count()
            self.last_status_seconds = time.monotonic() - called
            if count >= target:
                return count
            self._check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"mailbox shows {count}/{target} messages at the time limit")

    def big_messages(self, sampler: RssSampler, timeout: float) -> dict[str, Any]:
        """Idle RSS, then peak RSS while BIG_SESSIONS sessions send a 20 MiB message each."""
        time.sleep(1.0)  # let start-up settle, then take idle as the highest 1 s sample
        sampler.reset()
        time.sleep(1.0)
        idle = sampler.peak_kib
        message = big_message(BIG_SIZE, self.load.sender, self.load.recipient)
        errors: list[str] = []
        barrier = threading.Barrier(BIG_SESSIONS)

        def send() -> None:
            try:
                with smtplib.SMTP(HOST, self.port, timeout=timeout) as client:
                    barrier.wait(timeout=60)
                    client.sendmail(self.load.sender, [self.load.recipient], message)
            except (OSError, smtplib.SMTPException, threading.BrokenBarrierError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                barrier.abort()

        sampler.reset()
        start = time.monotonic()
        threads = [threading.Thread(target=send, daemon=True) for _ in range(BIG_SESSIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 60)
        elapsed = time.monotonic() - start
        peak = sampler.peak_kib
        self._check_alive()
        if errors or any(t.is_alive() for t in threads):
            raise BenchError(f"big-message sessions failed: {errors[:3] or 'timeout'}")
        delta = mib(peak - idle)
        return {
            "idle_rss_mib": mib(idle),
            "peak_rss_mib": mib(peak),
            "rss_delta_mib": delta,
            "rss_target_mib": RSS_TARGET_MIB,
            "rss_ok": delta <= RSS_TARGET_MIB,
            "big_sessions": BIG_SESSIONS,
            "big_message_bytes": BIG_SIZE,
            "big_seconds": round(elapsed, 3),
        }

    def throughput(self, sampler: RssSampler, baseline: int, timeout: float) -> dict[str, Any]:
        """Run the smtp-source load; wait for baseline + N messages in the mailbox."""
        n = self.load.messages
        log = self.tmp / "smtp-source.log"
        sampler.reset()
        start = time.monotonic()
        deadline = start + timeout
        source = start_smtp_source(self.load, self.port, log)
        try:
            while source.poll() is None:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"smtp-source did not finish in {timeout:.0f}s")
                time.sleep(0.05)
            accepted_at = time.monotonic()
            check_smtp_source(source, log)
            self.wait_count(baseline + n, deadline)
            done = time.monotonic()
        finally:
            stop_process(source)
        elapsed = done - start
        return {
            "messages": n,
            "seconds": round(elapsed, 3),
            "msg_per_s": round(rate(n, elapsed), 1),
            "smtp_source_seconds": round(accepted_at - start, 3),
            "accept_msg_per_s": round(rate(n, accepted_at - start), 1),
            "load_peak_rss_mib": mib(sampler.peak_kib),
            "last_status_call_seconds": round(self.last_status_seconds, 3),
            "measure": "smtp-source start until IMAP STATUS shows all messages in INBOX",
        }


def run(load: Load, timeout: float = 600.0) -> dict[str, Any]:
    """Measure postroom under ``load``, plus the big-message RSS test."""
    with Postroom(load, count_over_imap=True) as pr:
        assert pr.proc is not None
        sampler = RssSampler(pr.proc.pid).start()
        try:
            result: dict[str, Any] = {}
            try:
                result.update(pr.big_messages(sampler, timeout))
            except BenchError as exc:
                result["rss_error"] = str(exc)
            pr._check_alive()
            # Wait for the big messages (if any were accepted) before the throughput run.
            if "rss_error" in result:
                baseline = pr.message_count()
            else:
                baseline = pr.wait_count(BIG_SESSIONS, time.monotonic() + 120)
            result["baseline_messages"] = baseline
            os.sync()  # the big messages' pages are written out before the timed run starts
            try:
                result.update(pr.throughput(sampler, baseline, timeout))
            except BenchError as exc:
                raise BenchError(str(exc), partial=result) from exc
            # The server logs its group-commit batch sizes when it stops.
            stop_process(pr.proc)
            match = re.search(
                r"stopped; (batches=\S+ jobs=\S+ mean=\S+ max=\S+)", pr.log.read_text()
            )
            if match:
                result["group_commit"] = match.group(1)
        finally:
            sampler.stop()
    return result
