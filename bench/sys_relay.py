"""Relay benchmark (issue 3): Postfix and postroom forwarding the load into smtp-sink.

Each system gets the common smtp-source load for ``user@bench.test``, which it
aliases to ``user@relay.example`` and forwards to Postfix's ``smtp-sink`` on a
free 127.0.0.1 port, through a fixed next hop (no DNS):

* Postfix: a private instance (see sys_postfix.py) with
  ``virtual_alias_maps`` for the alias and ``transport_maps`` sending
  ``relay.example`` to ``smtp:[127.0.0.1]:SINKPORT``; queue on disk, stock
  smtp(8) and qmgr(8) concurrency settings;
* postroom: ``postroom alias add user@bench.test user@relay.example`` and
  ``[routes] "relay.example" = "127.0.0.1:SINKPORT"``, default ``[delivery]``.

smtp-sink runs with ``-c -M N``: it counts messages and exits as soon as it has
received the N-th one (the relaying server then sees that last connection
drop, which does not matter here).  The rate is N / time from smtp-source start
until smtp-sink exits.  postroom's RSS (serving process plus children) is
sampled every 50 ms during the run and its peak reported.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sys_postfix
import sys_postroom
from common import (
    HOST,
    BenchError,
    Load,
    RssSampler,
    check_smtp_source,
    find_tool,
    free_port,
    mib,
    rate,
    start_smtp_source,
    stop_process,
    tail,
    wait_port,
)

RELAY_DOMAIN = "relay.example"
SINK_USER = "nobody"  # smtp-sink refuses to run as root without -u
POLL = 0.01
COUNTER_RE = re.compile(rb"mesg=(\d+)")


def relay_address(load: Load) -> str:
    """Where the load's recipient is forwarded to."""
    return f"{load.recipient.split('@', 1)[0]}@{RELAY_DOMAIN}"


class Sink:
    """``smtp-sink -c -M N`` on a free loopback port, output in a temp dir; a context manager."""

    def __init__(self, messages: int) -> None:
        self.messages = messages
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-sink-"))
        self.log = self.tmp / "smtp-sink.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sink:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        # -c: print counters as messages arrive; -M N: exit after the N-th message.
        command = [
            find_tool("smtp-sink"), "-u", SINK_USER, "-c", "-M", str(self.messages),
            f"{HOST}:{self.port}", "256",
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port(self.port, timeout=30, proc=self.proc, log=self.log)

    def __exit__(self, *exc: object) -> None:
        try:
            stop_process(self.proc)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def received(self) -> int:
        """The sink's message counter as last printed (0 before the first)."""
        try:
            counts = COUNTER_RE.findall(self.log.read_bytes())
        except OSError:
            return 0
        return int(counts[-1]) if counts else 0

    def finished(self) -> bool:
        """True once smtp-sink exited after its N-th message; raise if it failed."""
        assert self.proc is not None
        if self.proc.poll() is None:
            return False
        if self.proc.returncode != 0:
            raise BenchError(
                f"smtp-sink exited with status {self.proc.returncode}\n{tail(self.log)}".rstrip()
            )
        return True


def measure(
    load: Load,
    tmp: Path,
    port: int,
    sink: Sink,
    timeout: float,
    check_alive: Callable[[], None],
    server_log: Path,
) -> dict[str, Any]:
    """Run smtp-source against ``port``; time until ``sink`` has all N messages."""
    n = load.messages
    log = tmp / "smtp-source.log"
    start = time.monotonic()
    source = start_smtp_source(load, port, log)
    accepted_at: float | None = None
    try:
        while not sink.finished():
            now = time.monotonic()
            if accepted_at is None and source.poll() is not None:
                accepted_at = now
                check_smtp_source(source, log)
            check_alive()
            if now - start > timeout:
                raise BenchError(
                    f"the sink received only {sink.received()}/{n} messages after "
                    f"{timeout:.0f}s\n{tail(server_log)}".rstrip()
                )
            time.sleep(POLL)
        done = time.monotonic()
    finally:
        stop_process(source)
    if accepted_at is None:  # everything relayed before we saw smtp-source exit
        check_smtp_source(source, log)
        accepted_at = done
    elapsed = done - start
    return {
        "messages": n,
        "seconds": round(elapsed, 3),
        "msg_per_s": round(rate(n, elapsed), 1),
        "smtp_source_seconds": round(accepted_at - start, 3),
        "accept_msg_per_s": round(rate(n, accepted_at - start), 1),
        "tail_seconds": round(done - accepted_at, 3),  # relaying left when smtp-source ended
        "measure": "smtp-source start until smtp-sink has received all messages",
    }


def postfix_settings(load: Load, sink_port: int) -> str:
    """main.cf lines turning the private Postfix into a relay towards the sink."""
    return (
        "# Relay benchmark: forward the load to smtp-sink.\n"
        f"virtual_alias_maps = inline:{{ {{ {load.recipient} = {relay_address(load)} }} }}\n"
        f"transport_maps = inline:{{ {{ {RELAY_DOMAIN} = smtp:[{HOST}]:{sink_port} }} }}\n"
    )


def run_postfix(load: Load, timeout: float = 600.0) -> dict[str, Any]:
    """Measure a private Postfix relaying ``load`` into smtp-sink."""
    with (
        Sink(load.messages) as sink,
        sys_postfix.PrivatePostfix(load, postfix_settings(load, sink.port)) as pf,
    ):
        # Postfix's master restarts a dead daemon; a stuck instance shows as a timeout.
        result = measure(load, pf.tmp, pf.port, sink, timeout, lambda: None, pf.tmp / "maillog")
    result["version"] = sys_postfix.postfix_version()
    return result


def run_postroom(load: Load, timeout: float = 600.0) -> dict[str, Any]:
    """Measure postroom relaying ``load`` into smtp-sink, with its peak RSS."""
    alias = ("alias", "add", load.recipient, relay_address(load))
    with Sink(load.messages) as sink:
        routes = f'\n[routes]\n"{RELAY_DOMAIN}" = "{HOST}:{sink.port}"\n'
        with sys_postroom.Postroom(load, routes, [alias]) as pr:
            assert pr.proc is not None
            sampler = RssSampler(pr.proc.pid).start()
            try:
                time.sleep(0.5)  # start-up settles: idle is the highest sample of 0.5 s
                sampler.reset()
                time.sleep(0.5)
                idle = sampler.peak_kib
                result = measure(load, pr.tmp, pr.port, sink, timeout, pr._check_alive, pr.log)
                result["idle_rss_mib"] = mib(idle)
                result["peak_rss_mib"] = mib(sampler.peak_kib)
            finally:
                sampler.stop()
    return result
