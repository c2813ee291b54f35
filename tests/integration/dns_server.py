"""A REAL authoritative DNS server (NSD) for tests, serving zone files written under tmp_path.

`run_dns_server(directory, zones)` writes one zone file per origin plus an nsd.conf, starts
`nsd -d` on 127.0.0.1 with a free port (the same number for UDP and TCP), polls with SOA queries
until every zone answers (against a deadline, no fixed sleeps) and stops nsd on exit. The
`dns_server` fixture is a factory around it; a test module shares it with
`dns_server = dns_server_module.dns_server` (importing the name and using it as an argument
trips ruff's F811).

When nsd is missing the test is skipped, or fails under POSTROOM_TEST_STRICT=1 (`require_program`).
The CI installs the Debian package `nsd`.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from .conftest import require_program

DNS_HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


@dataclass
class DnsServer:
    """A running nsd: where it listens and what it serves."""

    host: str
    port: int
    zones: tuple[str, ...]
    directory: Path
    proc: subprocess.Popen[bytes]

    @property
    def nameserver(self) -> str:
        """The `host:port` form postroom's `[dns] nameservers` setting takes."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "nsd.log"

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def free_udp_tcp_port(host: str = DNS_HOST) -> int:
    """A port number free for both UDP and TCP on `host` (released before returning)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for both UDP and TCP")


def _write_config(directory: Path, port: int, zones: Mapping[str, str]) -> Path:
    zone_dir = directory / "zones"
    zone_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "server:",
        f'    ip-address: "{DNS_HOST}@{port}"',
        f"    port: {port}",
        "    do-ip4: yes",
        "    do-ip6: no",
        "    server-count: 1",
        "    verbosity: 2",
        '    username: ""',
        '    chroot: ""',
        '    database: ""',
        f'    zonesdir: "{zone_dir}"',
        f'    pidfile: "{directory / "nsd.pid"}"',
        f'    logfile: "{directory / "nsd.log"}"',
        f'    xfrdfile: "{directory / "xfrd.state"}"',
        f'    xfrdir: "{directory}"',
        f'    zonelistfile: "{directory / "zone.list"}"',
        "    hide-version: yes",
        "",
        "remote-control:",
        "    control-enable: no",
        "",
    ]
    for origin, records in zones.items():
        name = origin.rstrip(".")
        (zone_dir / f"{name}.zone").write_text(records, encoding="utf-8")
        lines += ["zone:", f'    name: "{name}"', f'    zonefile: "{name}.zone"', ""]
    config = directory / "nsd.conf"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config


def _answers(host: str, port: int, zone: str) -> bool:
    """True when the server gives an authoritative SOA answer for `zone`, over UDP and TCP."""
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    try:
        for send in (dns.query.udp, dns.query.tcp):
            response = send(query, host, port=port, timeout=0.5)
            if response.rcode() != dns.rcode.NOERROR or not response.answer:
                return False
    except (OSError, dns.exception.DNSException):
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def run_dns_server(directory: Path, zones: Mapping[str, str]) -> Iterator[DnsServer]:
    """Serve `zones` ({origin: zone file text}) from nsd until the block exits."""
    nsd = require_program("nsd")
    checkzone = require_program("nsd-checkzone")
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = free_udp_tcp_port()
        config = _write_config(directory, port, zones)
        for origin in zones:
            name = origin.rstrip(".")
            check = subprocess.run(
                [checkzone, name, str(directory / "zones" / f"{name}.zone")],
                capture_output=True,
                text=True,
                check=False,
            )
            assert check.returncode == 0, f"zone {name} rejected:\n{check.stdout}{check.stderr}"
        with (directory / "nsd.stderr").open("ab") as stderr:
            proc = subprocess.Popen(
                [nsd, "-d", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
            )
        server = DnsServer(DNS_HOST, port, tuple(zones), directory, proc)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            pending = [origin.rstrip(".") for origin in zones]
            while pending:
                if proc.poll() is not None:
                    output = (directory / "nsd.stderr").read_text(errors="replace")
                    raise AssertionError(
                        f"nsd exited with {proc.returncode}\n{output}\n{server.log()}"
                    )
                pending = [zone for zone in pending if not _answers(DNS_HOST, port, zone)]
                if pending and time.monotonic() >= deadline:
                    raise AssertionError(
                        f"nsd did not answer for {pending} within {START_TIMEOUT:g}s\n"
                        f"{server.log()}"
                    )
                if pending:
                    time.sleep(0.02)
        except AssertionError as error:
            _stop(proc)
            # Someone else may take the port between our probe and nsd's bind: retry then only.
            if "already in use" in str(error) and attempt < 2:
                continue
            raise
        try:
            yield server
        finally:
            _stop(proc)
        return


DnsServerFactory = Callable[[Mapping[str, str]], DnsServer]


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[DnsServerFactory]:
    """Factory: `dns_server({"example.net": ZONE_TEXT})` starts an nsd; all stop at teardown."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(zones: Mapping[str, str]) -> DnsServer:
            nonlocal count
            count += 1
            return stack.enter_context(run_dns_server(tmp_path / f"nsd{count}", zones))

        yield start
