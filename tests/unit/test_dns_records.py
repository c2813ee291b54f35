"""`dns records` lines (services/dns_records.py), read back by dnspython's zone parser: absolute
names, every group in order, long DKIM texts cut into 255-octet strings that join back to the
record, SRV records for the services that are offered and "0 0 0 ." for the others, and what
the machine cannot know only in comments."""

from __future__ import annotations

import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from postroom.mailauth.keys import generate
from postroom.services.dkim_keys import RETIRED_KEPT, key_record
from postroom.services.dns_records import quote, zone_lines
from postroom.storage.records import DkimKey

DOMAIN = "example.test"
HOST = "mx.example.test"
T0 = 1_796_605_444.0
SOA = (
    f"$TTL 300\n{DOMAIN}. IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 120\n"
    f"{DOMAIN}. IN NS ns.{DOMAIN}.\n"
)


def key(selector: str, algorithm: str, state: str = "active", changed: float = T0) -> DkimKey:
    pair = generate("rsa" if algorithm == "rsa" else "ed25519")
    return DkimKey(DOMAIN, selector, algorithm, pair.private, pair.public, T0, state, changed)  # type: ignore[arg-type]


KEYS = [
    key("pr20261207e", "ed25519"),
    key("pr20261207r", "rsa"),
    key("pr20261208e", "ed25519", "announced"),
    key("pr20261201r", "rsa", "retired", T0 - RETIRED_KEPT / 2),
]
PORTS = {"smtp": 25, "submissions": 465, "imaps": 993, "submission": 587}


def parse(lines: list[str]) -> dns.zone.Zone:
    return dns.zone.from_text(SOA + "\n".join(lines) + "\n", origin=DOMAIN, relativize=False)


def texts(zone: dns.zone.Zone, name: str) -> list[list[bytes]]:
    rdataset = zone.get_rdataset(name + ".", "TXT")
    return [] if rdataset is None else [list(rdata.strings) for rdata in rdataset]


def test_the_records_read_back_as_what_they_say() -> None:
    lines = zone_lines(DOMAIN, HOST, PORTS, KEYS)
    zone = parse(lines)
    mx = zone.get_rdataset(DOMAIN + ".", "MX")
    assert mx is not None and [(r.preference, r.exchange.to_text()) for r in mx] == [
        (10, HOST + ".")
    ]
    assert mx.ttl == 3600
    assert texts(zone, DOMAIN) == [[b"v=spf1 mx -all"]]
    assert texts(zone, HOST) == [[b"v=spf1 a -all"]]  # the HELO name of bounces
    for one in KEYS:
        (strings,) = texts(zone, f"{one.selector}._domainkey.{DOMAIN}")
        assert all(len(s) <= 255 for s in strings)
        assert b"".join(strings).decode() == key_record(one)
    rsa_strings = texts(zone, f"pr20261207r._domainkey.{DOMAIN}")[0]
    assert len(rsa_strings) == 2  # RSA 2048's record is longer than one string
    assert texts(zone, f"_dmarc.{DOMAIN}") == [
        [b"v=DMARC1; p=reject; rua=mailto:dmarc-reports@example.test"]
    ]
    assert texts(zone, f"_smtp._tls.{DOMAIN}") == [
        [b"v=TLSRPTv1; rua=mailto:tls-reports@example.test"]
    ]
    srv = {}
    for name, node in zone.nodes.items():
        rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.SRV)
        if rdataset is not None:
            (rdata,) = rdataset
            srv[name.to_text()] = (rdata.priority, rdata.weight, rdata.port, rdata.target.to_text())
    assert srv == {
        f"_submissions._tcp.{DOMAIN}.": (0, 1, 465, HOST + "."),
        f"_imaps._tcp.{DOMAIN}.": (0, 1, 993, HOST + "."),
        f"_pop3s._tcp.{DOMAIN}.": (0, 0, 0, "."),
        f"_submission._tcp.{DOMAIN}.": (10, 1, 587, HOST + "."),
        f"_imap._tcp.{DOMAIN}.": (0, 0, 0, "."),
        f"_pop3._tcp.{DOMAIN}.": (0, 0, 0, "."),
    }
    # Nothing else: the A/AAAA/PTR lines are comments.
    types = {rdataset.rdtype for _, node in zone.nodes.items() for rdataset in node}
    assert types == {
        dns.rdatatype.SOA,
        dns.rdatatype.NS,
        dns.rdatatype.MX,
        dns.rdatatype.TXT,
        dns.rdatatype.SRV,
    }


def test_names_are_absolute_and_groups_come_in_order_each_after_a_comment() -> None:
    lines = zone_lines(DOMAIN, HOST, PORTS, KEYS)
    records = [line for line in lines if line and not line.startswith(";")]
    assert all(line.split()[0].endswith(".") for line in records)
    kinds = [line.split()[0].split(".")[0] + " " + line.split()[3] for line in records]
    assert kinds == [
        "example MX",
        "example TXT",
        "mx TXT",
        "pr20261207e TXT",
        "pr20261207r TXT",
        "pr20261208e TXT",
        "pr20261201r TXT",
        "_dmarc TXT",
        "_smtp TXT",
        "_submissions SRV",
        "_imaps SRV",
        "_pop3s SRV",
        "_submission SRV",
        "_imap SRV",
        "_pop3 SRV",
    ]
    for index, line in enumerate(lines):
        if line and not line.startswith(";") and (index == 0 or not lines[index - 1]):
            pytest.fail(f"a group without its comment: {line}")
    comments = "\n".join(line for line in lines if line.startswith(";"))
    assert f"; {HOST}. 3600 IN A <" in comments and f"; {HOST}. 3600 IN AAAA <" in comments
    assert f"IN PTR {HOST}." in comments
    assert "announced" in comments and "retired" in comments


def test_a_host_in_another_zone_and_a_relay_are_said_in_comments() -> None:
    lines = zone_lines(DOMAIN, "mail.provider.example", {}, KEYS[:2], relay="smtp.relay.example")
    zone = parse(lines)
    assert texts(zone, "mail.provider.example") == []  # outside the zone: not a record
    assert '; (in its own zone) mail.provider.example. 3600 IN TXT "v=spf1 a -all"' in lines
    assert any("smtp.relay.example" in line for line in lines if line.startswith(";"))
    srv_targets = [line.split()[-4:] for line in lines if " SRV " in line]
    assert srv_targets == [["0", "0", "0", "."]] * 6  # nothing is offered to clients


def test_a_domain_that_is_its_own_host_has_one_spf_record() -> None:
    # RFC 7208 §4.5: two SPF records at one name are a permerror.
    zone = parse(zone_lines(DOMAIN, DOMAIN, PORTS, KEYS[:1]))
    assert texts(zone, DOMAIN) == [[b"v=spf1 mx -all"]]


def test_quoting_escapes_what_a_master_file_would_misread() -> None:
    assert quote('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert quote("é;\x01") == '"\\195\\169;\\001"'
