"""`postroom send` and `postroom doctor` when the server serves a certificate from ACME (a real
pebble, names resolved by a real nsd): `send` submits to the server's own port verifying the
certificate it serves (pebble's chain, whose root no system trusts); `doctor` judges the
certificate a TLS listener presents, falls back to the ACME files when the server is down,
and says when the server presents another certificate than its [tls] files hold.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509

from . import dns_server as dns_server_module
from .conftest import ALICE, BOB, DOMAIN, HOSTNAME, Factory, Postroom, wait_until
from .pebble import Pebble
from .test_acme import ISSUE_TIMEOUT, ZONE, acme_world, served_leaf
from .wire import new_token

dns_server = dns_server_module.dns_server


@pytest.fixture
def world(
    postroom_factory: Factory, dns_server: dns_server_module.DnsServerFactory, tmp_path: Path
) -> Iterator[tuple[Postroom, Pebble]]:
    with acme_world(postroom_factory, dns_server, tmp_path, ZONE) as (server, pebble):
        intermediate = x509.load_pem_x509_certificate(pebble.intermediate_pem())

        def issued() -> bool:
            server.check_alive()
            return served_leaf(server, "submissions").issuer == intermediate.subject

        wait_until(issued, ISSUE_TIMEOUT, "the pebble certificate on submissions", interval=0.2)
        yield server, pebble


def certificate_checks(server: Postroom) -> list[dict[str, Any]]:
    """The doctor's certificate checks (its DNS checks fail here: no records for them)."""
    result = server.run_cli("doctor", "--json", check=False, timeout=120)
    checks = json.loads(result.stdout)
    return [c for c in checks if c["check"] == "certificate"]


@pytest.mark.timeout(300)
def test_send_verifies_the_acme_certificate_the_server_serves(
    world: tuple[Postroom, Pebble],
) -> None:
    server, _ = world
    token = new_token()
    result = server.run_cli(
        "send",
        "--from",
        ALICE,
        "--to",
        BOB,
        "--subject",
        token,
        "--auth",
        ALICE,
        "--password-stdin",
        check=False,
        input=server.passwords[ALICE] + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("250 "), result.stdout
    server.wait_for_messages(BOB, 1)
    assert any(token.encode() in message for message in server.export(BOB))


@pytest.mark.timeout(300)
def test_doctor_judges_the_presented_acme_certificate_then_its_files(
    world: tuple[Postroom, Pebble],
) -> None:
    server, _ = world
    leaf = served_leaf(server, "submissions")
    where = f"submissions at 127.0.0.1:{server.ports['submissions']}"
    [check] = certificate_checks(server)
    assert check["status"] == "ok", check
    until = f"{leaf.not_valid_after_utc:%Y-%m-%d}"
    assert check["detail"] == (
        f"the certificate {where} presents is valid for {HOSTNAME} until {until} "
        "(ACME, 2 in the chain)"
    )

    # The server down: the ACME files it would serve, and why they were read.
    server.stop()
    [check] = certificate_checks(server)
    cert_path = server.data_dir / "acme" / "cert.pem"
    assert check["status"] == "ok", check
    assert check["detail"].startswith(
        f"{cert_path} is valid for {HOSTNAME} until {until} (ACME, 2 in the chain); "
        f"{where} did not present it ("
    ), check


def test_doctor_says_when_the_server_presents_other_than_its_tls_files(
    postroom_factory: Factory, tmp_path: Path
) -> None:
    ca = trustme.CA()
    names = (HOSTNAME, f"mta-sts.{DOMAIN}")

    def pair(name: str) -> dict[str, str]:
        issued = ca.issue_cert(*names)
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        return {"cert": str(cert), "key": str(key)}

    served = pair("served")
    server = postroom_factory(services=("smtp", "imaps"), tls=served)
    [check] = certificate_checks(server)
    assert check["status"] == "ok", check
    where = f"imaps at 127.0.0.1:{server.ports['imaps']}"
    assert check["detail"].startswith(f"the certificate {where} presents is valid for"), check
    assert check["detail"].endswith(f"({served['cert']}, 1 in the chain)"), check
    # The files replaced, the server not told: it still presents the old one.
    newer = pair("newer")
    shutil.copyfile(newer["cert"], served["cert"])
    shutil.copyfile(newer["key"], served["key"])
    checks = certificate_checks(server)
    stale = [c for c in checks if c["subject"] == f"{HOSTNAME} files"]
    assert len(stale) == 1 and stale[0]["status"] == "warn", checks
    assert f"{served['cert']} holds serial" in stale[0]["detail"]
    assert "SIGHUP" in stale[0]["fix"]
