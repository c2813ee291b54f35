"""DKIM keys and `dns records` against a real authoritative server: the records the CLI prints,
wrapped in a SOA and NS, pass `nsd-checkzone` and are served by nsd; every DKIM record read back
through `ResolverLookup` is the stored key's, and dkimpy verifies with it what the stored key
signs; an announced key is promoted once nsd serves its record, and not before. The CLI makes a
domain's first keys once, keeps them in the private store, never prints a private key, and
names the fix for a domain that is not local in one line."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import dkim
import dns.message
import dns.query
import dns.rdatatype

from postroom.dns.lookup import Answer, ResolverLookup
from postroom.mailauth.keys import SIGNATURE_ALGORITHM, SigningKey
from postroom.services.dkim_keys import key_record, promote, record_name, signing_keys
from postroom.storage.backend import direct_store, server_store
from postroom.storage.records import DkimKey

from . import dns_server as dns_server_module
from .conftest import DOMAIN, HOSTNAME, Postroom, require_program
from .dns_server import DnsServer, DnsServerFactory

dns_server = dns_server_module.dns_server

SERVICES = ("smtp", "submissions", "imaps")
SOA = (
    "$TTL 300\n"
    f"{DOMAIN}. IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 120\n"
    f"{DOMAIN}. IN NS ns.{DOMAIN}.\n"
    f"ns.{DOMAIN}. IN A 127.0.0.1\n"
    f"{HOSTNAME}. IN A 127.0.0.1\n"
)
MESSAGE = (
    f"From: alice@{DOMAIN}\r\nTo: someone@example.net\r\nSubject: keys\r\n"
    "Date: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <k1@example.test>\r\n\r\n"
    "Signed with the stored key, verified against what nsd serves.\r\n"
).encode()


def zone_file(records: str) -> str:
    return SOA + records


def stored(server: Postroom) -> tuple[list[DkimKey], list[SigningKey]]:
    store = direct_store(server.data_dir)
    try:
        return store.reader().dkim_keys.keys(DOMAIN), signing_keys(store.reader(), DOMAIN)
    finally:
        store.close()


def ask(nsd: DnsServer, names: list[str]) -> list[Answer]:
    lookup = ResolverLookup((nsd.nameserver,), timeout=5)

    async def all_of_them() -> list[Answer]:
        return list(await asyncio.gather(*(lookup.query(name, "TXT") for name in names)))

    return asyncio.run(all_of_them())


def verifies_through(nsd: DnsServer, key: SigningKey) -> bool:
    """Sign MESSAGE with `key` (dkimpy) and verify it with the record nsd serves for it."""
    signature = dkim.sign(
        MESSAGE,
        key.selector.encode(),
        key.domain.encode(),
        key.private,
        signature_algorithm=SIGNATURE_ALGORITHM[key.algorithm].encode(),
    )
    asked: list[str] = []

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes:
        text = name.decode() if isinstance(name, bytes) else name
        asked.append(text)
        (answer,) = ask(nsd, [text])
        return answer.records[0].encode("latin-1") if answer.records else b""

    good = bool(dkim.verify(signature + MESSAGE, dnsfunc=dnsfunc))
    assert asked == [f"{key.selector}._domainkey.{DOMAIN}."]
    return good


def set_nameserver(server: Postroom, nsd: DnsServer) -> None:
    server.extra = f'[dns]\nnameservers = ["{nsd.nameserver}"]\n'
    server.write_config()


def keys_listed(server: Postroom) -> list[list[str]]:
    return [line.split("\t") for line in server.run_cli("dkim", "list").stdout.splitlines()]


def test_the_printed_records_load_into_nsd_and_verify_what_the_stored_keys_sign(
    postroom_factory: Callable[..., Postroom], dns_server: DnsServerFactory, tmp_path: Path
) -> None:
    server = postroom_factory(start=False, services=SERVICES)
    records = server.run_cli("dns", "records", DOMAIN).stdout
    zone = zone_file(records)
    path = tmp_path / f"{DOMAIN}.zone"
    path.write_text(zone, encoding="utf-8")
    check = subprocess.run(
        [require_program("nsd-checkzone"), DOMAIN, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0 and "is ok" in check.stdout, check.stdout + check.stderr
    nsd = dns_server({DOMAIN: zone})
    keys, signing = stored(server)
    assert sorted(k.algorithm for k in keys) == ["ed25519", "rsa"]
    answers = ask(nsd, [record_name(k) for k in keys])
    for one, answer in zip(keys, answers, strict=True):
        assert answer.records == (key_record(one),), one.selector
    assert [k.algorithm for k in signing] == ["ed25519", "rsa"]
    for key in signing:
        assert verifies_through(nsd, key), key.selector
    # The rest of what it printed, as a resolver sees it.
    spf, helo, dmarc, tlsrpt = ask(
        nsd, [DOMAIN, HOSTNAME, f"_dmarc.{DOMAIN}", f"_smtp._tls.{DOMAIN}"]
    )
    assert spf.records == ("v=spf1 mx -all",)
    assert helo.records == ("v=spf1 a -all",)
    assert dmarc.records == (f"v=DMARC1; p=reject; rua=mailto:dmarc-reports@{DOMAIN}",)
    assert tlsrpt.records == (f"v=TLSRPTv1; rua=mailto:tls-reports@{DOMAIN}",)
    (mx_answer,) = asyncio.run(_mx(nsd))
    assert mx_answer.records == (f"10 {HOSTNAME}",)
    assert _srv(nsd, "_submissions._tcp") == f"0 1 {server.ports['submissions']} {HOSTNAME}."
    assert _srv(nsd, "_imaps._tcp") == f"0 1 {server.ports['imaps']} {HOSTNAME}."
    assert _srv(nsd, "_pop3s._tcp") == "0 0 0 ."  # not offered (no [listen] pop3s)
    assert _srv(nsd, "_submission._tcp") == "0 0 0 ."


async def _mx(nsd: DnsServer) -> list[Answer]:
    return [await ResolverLookup((nsd.nameserver,), timeout=5).query(DOMAIN, "MX")]


def _srv(nsd: DnsServer, label: str) -> str:
    query = dns.message.make_query(f"{label}.{DOMAIN}.", dns.rdatatype.SRV)
    response = dns.query.udp(query, nsd.host, port=nsd.port, timeout=5)
    (rrset,) = response.answer
    (rdata,) = rrset
    return str(rdata.to_text())


def test_an_announced_key_is_promoted_once_dns_serves_it_and_not_before(
    postroom_factory: Callable[..., Postroom], dns_server: DnsServerFactory
) -> None:
    server = postroom_factory(start=False, services=SERVICES)
    first = keys_listed(server)
    assert [(row[1][-1], row[4]) for row in first] == [("e", "active"), ("r", "active")]
    before = dns_server({DOMAIN: zone_file(server.run_cli("dns", "records", DOMAIN).stdout)})
    rotated = server.run_cli("dkim", "rotate", DOMAIN).stdout
    assert rotated.count("announced") == 2, rotated
    after_rotation = keys_listed(server)
    new = [row[1] for row in after_rotation if row[4] == "announced"]
    assert len(new) == 2 and all(f"{selector}._domainkey.{DOMAIN}." in rotated for selector in new)

    # Not before: the DNS server has the old records only.
    store = server_store(server.data_dir)
    store.open()
    try:
        lookup = ResolverLookup((before.nameserver,), timeout=5)
        assert asyncio.run(promote(store, lookup, time.time())) == []
    finally:
        store.close()
    set_nameserver(server, before)
    waiting = server.run_cli("dkim", "promote").stdout
    assert waiting.count("not in DNS yet") == 2, waiting
    assert keys_listed(server) == after_rotation
    _, old_signing = stored(server)

    # The records printed now (old and new side by side), served: the new keys take over.
    records = server.run_cli("dns", "records", DOMAIN).stdout
    assert all(f"{row[1]}._domainkey.{DOMAIN}." in records for row in after_rotation)
    after = dns_server({DOMAIN: zone_file(records)})
    set_nameserver(server, after)
    promoted = server.run_cli("dkim", "promote").stdout
    assert promoted.count("active, signs from now on") == 2, promoted
    assert promoted.count("retired") == 2, promoted
    states = {row[1]: row[4] for row in keys_listed(server)}
    assert states == {
        **{row[1]: "retired" for row in first},
        **dict.fromkeys(new, "active"),
    }
    _, signing = stored(server)
    assert sorted(k.selector for k in signing) == sorted(new)
    for key in [*signing, *old_signing]:  # what the old keys signed still verifies
        assert verifies_through(after, key), key.selector
    # The retired keys stay printed for their week.
    still = server.run_cli("dns", "records", DOMAIN).stdout
    assert all(f"{row[1]}._domainkey.{DOMAIN}." in still for row in first)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_first_keys_are_made_once_kept_private_and_never_printed(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(start=False, services=SERVICES)
    server.umask = 0o022
    days = [datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")]
    listed = keys_listed(server)
    days.append(datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"))  # midnight, UTC?
    assert listed in [
        [
            [DOMAIN, f"pr{day.replace('-', '')}e", "ed25519", day, "active"],
            [DOMAIN, f"pr{day.replace('-', '')}r", "rsa", day, "active"],
        ]
        for day in days
    ]
    assert keys_listed(server) == listed  # made once
    as_json = json.loads(server.run_cli("dkim", "list", DOMAIN, "--json").stdout)
    assert [(k["selector"], k["state"]) for k in as_json] == [(r[1], r[4]) for r in listed]
    keys, _ = stored(server)
    assert [k["record"] for k in as_json] == [key_record(k) for k in keys]
    outputs = [
        server.run_cli("dkim", "list").stdout,
        json.dumps(as_json),
        server.run_cli("dns", "records", DOMAIN).stdout,
        server.run_cli("dkim", "rotate", DOMAIN, "--now").stdout,
    ]
    keys, _ = stored(server)
    assert len(keys) == 4
    secrets = [k.private.decode() for k in keys]
    pem_lines = [line for k in keys if k.algorithm == "rsa" for line in k.private.decode().split()]
    for output in outputs:
        assert not any(secret in output for secret in secrets)
        assert not any(len(line) > 40 and line in output for line in pem_lines)
    # The keys live in the database, which only its owner can read (whatever the umask).
    assert mode(server.data_dir) == 0o700
    assert mode(server.data_dir / "postroom.db") == 0o600


def test_a_domain_that_is_not_local_is_one_line_naming_the_fix(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(start=False, services=SERVICES)
    for command in (
        ("dkim", "list", "other.test"),
        ("dkim", "rotate", "other.test"),
        ("dns", "records", "other.test"),
    ):
        result = server.run_cli(*command, check=False)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "other.test" in lines[0] and "'domains'" in lines[0], lines[0]
        assert str(server.config_path) in lines[0]
        assert result.stdout == ""
    # Nothing was made for it, nor for the local domain by a refused command.
    keys, _ = stored(server)
    assert keys == []
    # A local domain named with capitals and a final dot is the local domain.
    server.run_cli("dkim", "rotate", DOMAIN.upper() + ".")
    keys, _ = stored(server)
    assert sorted(k.state for k in keys) == ["active", "active", "announced", "announced"]
