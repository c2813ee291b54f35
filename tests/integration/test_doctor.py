"""`postroom doctor` against a real authoritative DNS server (nsd) and a real `postroom serve`.

A good zone (the records `dns records` prints, the PTR of the host's address, block lists
that do not list it) gives no failure and exit status 0; the warnings left are what a
loopback test cannot avoid (a private address, the MX listener off port 25) and the MTA-STS
record it does not publish. A broken zone (wrong MX, DKIM records missing, SPF not covering
the host, PTR naming another host, the address on a block list, a bad TLS-RPT record) gives
each failure with the exact record to publish, and exit status 1. The open-relay self-test
talks to the real server (refused) and to aiosmtpd accepting everything (an open relay).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller

from postroom.config import load_config
from postroom.services.doctor_local import open_relay
from postroom.storage.backend import direct_store

from . import dns_server as dns_server_module
from .conftest import DOMAIN, HOSTNAME, Postroom, free_ports
from .dns_server import DnsServerFactory

dns_server = dns_server_module.dns_server

SERVICES = ("smtp", "submission", "submissions")
REVERSE = "0.0.127.in-addr.arpa"
LISTS = ("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org")


def soa(origin: str) -> str:
    return (
        "$TTL 300\n"
        f"{origin}. IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 120\n"
        f"{origin}. IN NS ns.{DOMAIN}.\n"
    )


def reverse_zone(ptr: str) -> str:
    return soa(REVERSE) + f"1.{REVERSE}. IN PTR {ptr}.\n"


def list_zone(zone: str, listed: bool = False) -> str:
    entry = f"1.0.0.127.{zone}. IN A 127.0.0.2\n" if listed else ""
    return soa(zone) + f"2.0.0.127.{zone}. IN A 127.0.0.2\n" + entry  # RFC 5782 §5 test entry


def domain_zone(records: str) -> str:
    return soa(DOMAIN) + f"ns.{DOMAIN}. IN A 127.0.0.1\n{HOSTNAME}. IN A 127.0.0.1\n" + records


@pytest.fixture
def certified(tmp_path: Path) -> dict[str, str]:
    """[tls] cert and key for the host name, from a CA (not self-signed)."""
    ca = trustme.CA()
    leaf = ca.issue_cert(HOSTNAME)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.private_key_pem.write_to_path(str(key))
    with cert.open("wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
    return {"cert": str(cert), "key": str(key)}


def start_server(
    factory: Callable[..., Postroom],
    tls: dict[str, str],
    zones: Callable[[str], dict[str, str]],
    dns_server: DnsServerFactory,
) -> Postroom:
    """A server whose zone holds what `zones(records)` makes of the printed records."""
    server = factory(start=False, services=SERVICES, tls=tls)
    records = server.run_cli("dns", "records", DOMAIN).stdout
    nsd = dns_server(zones(records))
    server.extra = f'[dns]\nnameservers = ["{nsd.nameserver}"]\n'
    server.write_config()
    server.start()
    return server


def doctor(server: Postroom, *args: str) -> tuple[int, list[dict[str, str]], str]:
    result = server.run_cli("doctor", "--json", *args, check=False, timeout=120)
    assert result.stderr == "", result.stderr
    checks = json.loads(result.stdout)
    text = server.run_cli("doctor", *args, check=False, timeout=120)
    assert text.returncode == result.returncode
    return result.returncode, checks, text.stdout


def by_name(checks: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    named = {c["name"]: c for c in checks}
    assert len(named) == len(checks), "check names are unique"
    return named


def test_a_good_zone_passes_and_exits_0(
    postroom_factory: Callable[..., Postroom],
    dns_server: DnsServerFactory,
    certified: dict[str, str],
) -> None:
    def zones(records: str) -> dict[str, str]:
        return {
            DOMAIN: domain_zone(records),
            REVERSE: reverse_zone(HOSTNAME),
            **{zone: list_zone(zone) for zone in LISTS},
        }

    server = start_server(postroom_factory, certified, zones, dns_server)
    code, checks, text = doctor(server)
    named = by_name(checks)
    statuses = {name: c["status"] for name, c in named.items()}
    warned = {name for name, status in statuses.items() if status == "warn"}
    # The machine's own disk may be low wherever the test runs: that warning is its own.
    disk = f"disk {server.data_dir}"
    assert warned - {disk} == {f"addresses {HOSTNAME}", "port smtp", f"mta-sts {DOMAIN}"}, text
    assert {s for n, s in statuses.items() if n not in warned} == {"ok"}, text
    assert code == 0, text
    keys = [n for n in named if n.startswith("dkim ")]
    assert len(keys) == 2 and all("._domainkey." in n for n in keys)
    assert named["ptr 127.0.0.1"]["detail"] == f"127.0.0.1 points back to {HOSTNAME}"
    assert named[f"spf {DOMAIN}"]["detail"].startswith("'v=spf1 mx -all' passes for 127.0.0.1")
    assert named[f"spf {HOSTNAME}"]["status"] == "ok"  # the HELO name's, for bounces
    assert {f"dnsbl 127.0.0.1 {zone}" for zone in LISTS} <= set(named)
    assert "554 5.7.1" in named["open-relay"]["detail"], named["open-relay"]
    for service in SERVICES:
        assert f"127.0.0.1:{server.ports[service]}" in named[f"port {service}"]["detail"]
    assert "not a public address" in named[f"addresses {HOSTNAME}"]["detail"]
    # The text form: one line per check, the fix below each that is not ok, a summary.
    assert re.search(r"^ok    mx example\.test: MX 10 mx\.example\.test$", text, re.M), text
    assert re.search(r"^warn  port smtp: .*\n      fix: .*port 25", text, re.M), text
    assert text.rstrip().splitlines()[-1] == (
        f"{len(checks) - len(warned)} ok, {len(warned)} warnings, 0 failed, 0 skipped"
    )
    # Asked for one domain: the same checks for it.
    code, one, _ = doctor(server, DOMAIN)
    assert code == 0 and {c["name"] for c in one} == set(named)
    # A domain that is not local: one line naming the fix.
    wrong = server.run_cli("doctor", "example.org", check=False)
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert wrong.stderr.startswith("postroom: error: example.org is not a local domain; add it")
    assert len(wrong.stderr.splitlines()) == 1


def test_a_broken_zone_reports_each_failure_with_its_fix_and_exits_1(
    postroom_factory: Callable[..., Postroom],
    dns_server: DnsServerFactory,
    certified: dict[str, str],
) -> None:
    def zones(records: str) -> dict[str, str]:
        kept = [
            line
            for line in records.splitlines()
            if not re.match(r"\S+ \d+ IN (MX|TXT)", line)  # no MX, SPF, DKIM, DMARC, TLS-RPT
        ]
        broken = (
            f"{DOMAIN}. 3600 IN MX 10 mail.elsewhere.example.\n"
            f'{DOMAIN}. 3600 IN TXT "v=spf1 ip4:192.0.2.1 -all"\n'
            f'_dmarc.{DOMAIN}. 3600 IN TXT "v=DMARC1; p=none"\n'
            f'_smtp._tls.{DOMAIN}. 3600 IN TXT "v=TLSRPTv1; rua=ftp://reports.example"\n'
        )
        return {
            DOMAIN: domain_zone("\n".join(kept) + "\n" + broken),
            REVERSE: reverse_zone("host-1.provider.example"),
            LISTS[0]: list_zone(LISTS[0], listed=True),
            LISTS[2]: list_zone(LISTS[2]),
            # bl.spamcop.net is not served: nsd refuses the question, a warning.
        }

    server = start_server(postroom_factory, certified, zones, dns_server)
    code, checks, text = doctor(server)
    assert code == 1, text
    named = by_name(checks)
    failed = {name for name, c in named.items() if c["status"] == "fail"}
    dkim_names = {n for n in named if n.startswith("dkim ")}
    assert failed == {
        f"mx {DOMAIN}",
        f"spf {DOMAIN}",
        "ptr 127.0.0.1",
        f"dnsbl 127.0.0.1 {LISTS[0]}",
        f"tls-rpt {DOMAIN}",
        *dkim_names,
    }, text
    assert len(dkim_names) == 2
    mx = named[f"mx {DOMAIN}"]
    assert "mail.elsewhere.example" in mx["detail"]
    assert mx["fix"] == f"replace the MX records with {DOMAIN}. 3600 IN MX 10 {HOSTNAME}."
    spf = named[f"spf {DOMAIN}"]
    assert "127.0.0.1: fail" in spf["detail"], spf
    assert spf["fix"].startswith(f'publish {DOMAIN}. 3600 IN TXT "v=spf1 mx -all"'), spf
    assert "ip4:127.0.0.1" in spf["fix"]
    ptr = named["ptr 127.0.0.1"]
    assert "host-1.provider.example" in ptr["detail"]
    assert ptr["fix"].endswith(f"1.0.0.127.in-addr.arpa. IN PTR {HOSTNAME}.")
    store = direct_store(server.data_dir)
    try:
        keys = store.reader().dkim_keys.keys(DOMAIN)
    finally:
        store.close()
    for key in keys:
        check = named[f"dkim {key.selector}._domainkey.{DOMAIN}"]
        assert "no DKIM record" in check["detail"]
        # The exact line `dns records` prints for that key.
        assert (
            check["fix"]
            .removeprefix("publish ")
            .startswith(f"{key.selector}._domainkey.{DOMAIN}. 3600 IN TXT ")
        )
        assert (
            check["fix"].removeprefix("publish ") in server.run_cli("dns", "records", DOMAIN).stdout
        )
    assert "127.0.0.2" in named[f"dnsbl 127.0.0.1 {LISTS[0]}"]["detail"]
    assert named[f"dnsbl 127.0.0.1 {LISTS[1]}"]["status"] == "warn"  # no answer
    assert named[f"dnsbl 127.0.0.1 {LISTS[2]}"]["status"] == "ok"
    assert "ftp://reports.example" in named[f"tls-rpt {DOMAIN}"]["detail"]
    assert named[f"dmarc {DOMAIN}"]["status"] == "ok"  # p=none is a policy too
    assert named["open-relay"]["status"] == "ok"
    for name in failed:
        assert named[name]["fix"], name
        assert re.search(rf"^FAIL  {re.escape(name)}: .*\n      fix: ", text, re.M), name
    assert "0 skipped" in text.splitlines()[-1]


class _AcceptAll:
    """An aiosmtpd handler that accepts any recipient: an open relay."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def open_relay_server() -> Iterator[int]:
    (port,) = free_ports(1)
    controller = Controller(_AcceptAll(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def test_the_relay_self_test_fails_an_open_relay(open_relay_server: int, tmp_path: Path) -> None:
    config_path = tmp_path / "postroom.toml"
    config_path.write_text(
        f'hostname = "{HOSTNAME}"\ndomains = ["{DOMAIN}"]\n'
        f'[listen]\nsmtp = "127.0.0.1:{open_relay_server}"\n',
        encoding="utf-8",
    )
    config = load_config(config_path)
    (check,) = asyncio.run(open_relay(config, ["127.0.0.1"], 5.0))
    assert check.status == "fail", check
    assert "open relay" in check.detail and "250" in check.detail
    assert check.fix


def test_the_relay_self_test_cannot_run_without_a_listener(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    config_path = tmp_path / "postroom.toml"
    config_path.write_text(
        f'hostname = "{HOSTNAME}"\n[listen]\nsmtp = "0.0.0.0:{port}"\n', encoding="utf-8"
    )
    (check,) = asyncio.run(open_relay(load_config(config_path), [], 2.0))
    assert check.status == "warn" and f"127.0.0.1:{port}" in check.detail, check


def _never_answers() -> tuple[int, threading.Event]:
    """A listener that accepts and says nothing (for the time bound)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    stop = threading.Event()

    def hold() -> None:
        held = []
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except TimeoutError:
                continue
        for conn in held:
            conn.close()
        sock.close()

    threading.Thread(target=hold, daemon=True).start()
    return sock.getsockname()[1], stop


def test_the_relay_self_test_is_bounded_in_time(tmp_path: Path) -> None:
    port, stop = _never_answers()
    try:
        config_path = tmp_path / "postroom.toml"
        config_path.write_text(
            f'hostname = "{HOSTNAME}"\n[listen]\nsmtp = "127.0.0.1:{port}"\n', encoding="utf-8"
        )
        (check,) = asyncio.run(open_relay(load_config(config_path), [], 2.0, limit=0.5))
    finally:
        stop.set()
    assert check.status == "warn" and "did not answer within 0.5 s" in check.detail, check
