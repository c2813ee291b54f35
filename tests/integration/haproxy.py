"""A private HAProxy (Debian's) for the tests, and postroom configs that accept its PROXY header.

`start_haproxy` writes the given configuration under a test's directory, runs `haproxy -db`
(foreground, no daemon) and waits until every frontend port is bound, read from /proc/net/tcp:
a probe connection would itself be relayed to postroom. `Balancer.stop` stops it by its PID
(SIGTERM, then SIGKILL). `accept_proxy` makes a Postroom's config name its listeners in
`[listen] proxy_protocol` with HAProxy's source address in `proxy_trusted` (issue 16 §2), also
when the conftest writes the config again on new ports.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from .conftest import Postroom, require_program

BALANCER = "127.0.0.66"  # HAProxy's source address towards postroom: the trusted one
TIMEOUT = 15.0
K = TypeVar("K")


@dataclass
class Balancer(Generic[K]):
    """A running HAProxy: its process, its frontend ports (by the caller's keys), its log."""

    proc: subprocess.Popen[bytes]
    ports: dict[K, int]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_haproxy(root: Path, config: str, ports: Mapping[K, int]) -> Balancer[K]:
    """Run HAProxy with `config` (whose frontends bind 127.0.0.1 on `ports`) until stopped."""
    haproxy = require_program("haproxy")
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "haproxy.cfg"
    config_path.write_text(config, encoding="utf-8")
    log_path = root / "haproxy.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [haproxy, "-db", "-f", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    balancer = Balancer(proc, dict(ports), log_path)
    try:
        wait_listening(balancer)
    except BaseException:
        balancer.stop()
        raise
    return balancer


def wait_listening(balancer: Balancer[K]) -> None:
    """Until every frontend port of 127.0.0.1 is bound."""
    deadline = time.monotonic() + TIMEOUT
    wanted = {f"0100007F:{port:04X}" for port in balancer.ports.values()}
    while True:
        if balancer.proc.poll() is not None:
            raise AssertionError(f"haproxy exited: {balancer.log()}")
        with open("/proc/net/tcp", encoding="ascii") as table:
            listening = {row.split()[1] for row in table.readlines()[1:] if row.split()[3] == "0A"}
        if wanted <= listening:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"haproxy did not listen: {balancer.log()}")
        time.sleep(0.05)


def accept_proxy(server: Postroom, services: Iterable[str], trusted: str = BALANCER) -> None:
    """Name `services` in the server's `[listen] proxy_protocol`, trusting `trusted` alone."""
    names = ", ".join(f'"{name}"' for name in services)
    keys = f'proxy_protocol = [{names}]\nproxy_trusted = ["{trusted}/32"]\n'
    write = server.write_config

    def write_config() -> None:
        write()
        text = server.config_path.read_text(encoding="utf-8")
        server.config_path.write_text(
            text.replace("[listen]\n", "[listen]\n" + keys, 1), encoding="utf-8"
        )

    server.write_config = write_config  # type: ignore[method-assign]
    write_config()
