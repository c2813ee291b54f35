"""A REAL ACME server for tests: Let's Encrypt's `pebble` (Debian package `pebble`).

`run_pebble(directory, http_port=..., dns=...)` writes a pebble config under `directory`
(its own HTTPS certificate from a trustme CA, which the client trusts through `[acme]
ca_file`), starts pebble on free loopback ports with real validation (PEBBLE_VA_ALWAYS_VALID=0,
no artificial sleeps) and its DNS questions sent to the test's nsd, polls the directory until
it answers (against a deadline) and stops pebble on exit. Pebble rejects 20 % of good nonces
(its default is 5 %): an order of some 30 signed requests passes only when the client retries
a badNonce (RFC 8555 §6.5).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from .conftest import free_ports, require_program

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass
class Pebble:
    """A running pebble: its directory URL, the CA file for its HTTPS, its management API."""

    directory_url: str
    ca_file: Path
    management: str
    root: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        path = self.root / "pebble.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _management_get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(f"{self.management}{path}", context=context) as answer:
            body: bytes = answer.read()
            return body

    def issuing_root(self) -> Path:
        """The root of the chains pebble issues (made anew at each start), as a PEM file."""
        path = self.root / "issuing-root.pem"
        path.write_bytes(self._management_get("/roots/0"))
        return path

    def intermediate_pem(self) -> bytes:
        return self._management_get("/intermediates/0")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


def _answers(url: str, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def run_pebble(
    root: Path,
    *,
    http_port: int,
    dns: str,
    validity: int | None = None,
    tls_port: int | None = None,
) -> Iterator[Pebble]:
    """Pebble validating http-01 on `http_port` and tls-alpn-01 on `tls_port` (default: a
    free port nothing listens on), resolving names at `dns` (host:port), issuing certificates
    valid for `validity` seconds (pebble's default: five years)."""
    pebble = require_program("pebble")
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="pebble-listener-test-ca")
    served = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = root / "listener-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    served.private_key_pem.write_to_path(str(root / "listener-key.pem"))
    served.cert_chain_pems[0].write_to_path(str(root / "listener-cert.pem"))
    acme_port, management_port, free_tls_port = free_ports(3)
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(root / "listener-cert.pem"),
            "privateKey": str(root / "listener-key.pem"),
            "httpPort": http_port,
            "tlsPort": free_tls_port if tls_port is None else tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    if validity is not None:
        config["pebble"]["certificateValidityPeriod"] = validity
    (root / "pebble.json").write_text(json.dumps(config), encoding="utf-8")
    env = {**os.environ, "PEBBLE_VA_ALWAYS_VALID": "0", "PEBBLE_VA_NOSLEEP": "1"}
    env["PEBBLE_WFE_NONCEREJECT"] = "20"
    with (root / "pebble.log").open("ab") as log:
        proc = subprocess.Popen(
            [pebble, "-config", str(root / "pebble.json"), "-dnsserver", dns],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
    server = Pebble(
        f"https://127.0.0.1:{acme_port}/dir",
        ca_file,
        f"https://127.0.0.1:{management_port}",
        root,
        proc,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(server.directory_url, ca_file):
            if proc.poll() is not None:
                raise AssertionError(f"pebble exited with {proc.returncode}\n{server.log()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"pebble did not answer within {START_TIMEOUT:g}s")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
