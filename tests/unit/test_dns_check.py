"""The DNS check's comparisons (pure functions) and a whole check over zone data
(`StaticLookup`): records that match by meaning though not by text, wrong and missing ones,
a server failure and a lookup that never answers, each with its status and fix; the kept
check and the one asked again."""

from __future__ import annotations

import asyncio
import time

import pytest

from postroom.dns.lookup import Answer, RecordType, StaticLookup
from postroom.mailauth.keys import generate
from postroom.services import dns_check
from postroom.services.dns_check import (
    DnsChecks,
    DomainRecords,
    compare_addresses,
    compare_dkim,
    compare_mx,
    compare_spf,
    compare_srv,
    compare_tags,
    compare_web,
    domain_records,
)
from postroom.storage.records import DkimKey

DOMAIN = "example.test"
HOST = "mx.example.test"
PORTS = {"smtp": 25, "submissions": 465, "imaps": 993}
DMARC = "v=DMARC1; p=reject; rua=mailto:dmarc-reports@example.test"


def key(algorithm: str = "ed25519", selector: str = "pr20261207e") -> DkimKey:
    pair = generate("rsa" if algorithm == "rsa" else "ed25519")
    return DkimKey(DOMAIN, selector, algorithm, pair.private, pair.public, 0.0, "active", 0.0)


def test_mx_preference_may_differ_and_other_hosts_are_fine() -> None:
    assert compare_mx(HOST, ["50 mx.example.test"])[0] == "ok"
    assert compare_mx(HOST, ["10 backup.example.net", "20 mx.example.test"]) == (
        "ok",
        "MX names this host (and backup.example.net)",
    )
    assert compare_mx(HOST, ["10 other.example.net"])[0] == "mismatch"
    assert compare_mx(HOST, ["0 ."])[0] == "mismatch"
    assert compare_mx(HOST, [])[0] == "missing"


def test_spf_compares_terms_not_text() -> None:
    assert compare_spf("v=spf1 mx -all", ["v=spf1  +MX   -all "])[0] == "ok"
    assert compare_spf("v=spf1 mx -all", ["v=spf1 mx ~all"]) == (
        "mismatch",
        "terms mx ~all, expected mx -all",
    )
    assert compare_spf("v=spf1 mx -all", ["google-site-verification=x"])[0] == "missing"
    two = compare_spf("v=spf1 mx -all", ["v=spf1 mx -all", "v=spf1 a -all"])
    assert two[0] == "mismatch" and "RFC 7208 §4.5" in two[1]
    # With a relay, its provider's terms may come before -all.
    relayed = ["v=spf1 mx include:relay.example.net -all"]
    assert compare_spf("v=spf1 mx -all", relayed)[0] == "mismatch"
    assert compare_spf("v=spf1 mx -all", relayed, relay=True)[0] == "ok"


def test_tag_lists_compare_tag_by_tag_in_any_order() -> None:
    reordered = "v=DMARC1;rua=MAILTO:dmarc-reports@example.test ; p=Reject; ruf=mailto:x@y.test"
    assert compare_tags(DMARC, [reordered])[0] == "ok"
    weaker = compare_tags(DMARC, ["v=DMARC1; p=none; rua=mailto:dmarc-reports@example.test"])
    assert weaker == ("mismatch", "p=none; expected p=reject")
    assert compare_tags(DMARC, ["v=DMARC1; p=reject"]) == (
        "mismatch",
        "no rua=; expected rua=mailto:dmarc-reports@example.test",
    )
    assert compare_tags(DMARC, ["v=spf1 -all"])[0] == "missing"
    assert compare_tags(DMARC, [DMARC, DMARC])[0] == "mismatch"
    assert compare_tags(DMARC, ["v=DMARC1; p"])[0] == "mismatch"  # not a tag list
    sts = "v=STSv1; id=abc123"
    assert compare_tags(sts, ["v=STSv1; id=abc123;"])[0] == "ok"
    assert compare_tags(sts, ["v=STSv1; id=abc124"])[0] == "mismatch"


def test_dkim_p_must_be_the_private_keys_public_half() -> None:
    pair = generate("rsa")
    record = f"v=DKIM1; k=rsa; p={pair.public}"
    split = f"v=DKIM1; k=rsa; p={pair.public[:100]} {pair.public[100:]}"  # FWS inside p=
    assert compare_dkim(record, pair.public, [split])[0] == "ok"
    other = generate("rsa").public
    assert compare_dkim(record, pair.public, [f"v=DKIM1; p={other}"]) == (
        "mismatch",
        "the published key (p=) is not the stored one",
    )
    assert compare_dkim(record, pair.public, ["v=DKIM1; p="])[0] == "mismatch"
    assert compare_dkim(record, pair.public, [f"v=DKIM1; k=ed25519; p={pair.public}"]) == (
        "mismatch",
        "k=ed25519, expected k=rsa",
    )
    assert compare_dkim(record, pair.public, [])[0] == "missing"
    assert compare_dkim(record, pair.public, ["hello"])[0] == "missing"
    assert compare_dkim(record, None, [record])[0] == "mismatch"
    assert compare_dkim(record, pair.public, [record, "v=DKIM1; p="])[0] == "mismatch"


def test_srv_web_names_and_addresses() -> None:
    assert compare_srv("0 1 465 mx.example.test", ["5 0 465 MX.example.test."])[0] == "ok"
    assert compare_srv("0 1 465 mx.example.test", ["0 1 587 mx.example.test"]) == (
        "mismatch",
        "points to mx.example.test:587, not mx.example.test:465",
    )
    assert compare_srv("0 0 0 .", ["0 0 0 ."])[0] == "ok"
    assert compare_srv("0 0 0 .", ["0 1 110 mx.example.test"])[0] == "mismatch"
    assert compare_srv("0 0 0 .", [])[0] == "missing"
    assert compare_web(HOST, ["mx.example.test"], (), ())[0] == "ok"
    assert compare_web(HOST, ["web.example.net"], (), ())[0] == "mismatch"
    assert compare_web(HOST, (), ["192.0.2.1"], ["192.0.2.1"])[0] == "ok"
    assert compare_web(HOST, (), ["192.0.2.9"], ["192.0.2.1"])[0] == "mismatch"
    assert compare_web(HOST, (), (), ["192.0.2.1"])[0] == "missing"
    assert compare_addresses(HOST, ["8.8.8.8", "2001:4860:4860::8888"])[0] == "ok"
    assert compare_addresses(HOST, ["127.0.0.1"])[0] == "mismatch"
    assert compare_addresses(HOST, [])[0] == "missing"


def test_expected_records_are_the_printed_lines() -> None:
    keys = [key("ed25519", "a1"), key("rsa", "a2")]
    facts = domain_records(DOMAIN, HOST, PORTS, keys)
    named = {(e.name, e.rtype): e for e in facts.expected}
    assert named[(DOMAIN, "MX")].value == "10 mx.example.test"
    rsa = named[(f"a2._domainkey.{DOMAIN}", "TXT")]
    assert rsa.kind == "dkim" and rsa.value == f"v=DKIM1; k=rsa; p={keys[1].public}"
    assert rsa.line.count('"') >= 4  # printed as several character-strings, joined here
    assert named[(f"_imaps._tcp.{DOMAIN}", "SRV")].value == "0 1 993 mx.example.test"
    assert named[(f"_pop3._tcp.{DOMAIN}", "SRV")].value == "0 0 0 ."
    assert named[(HOST, "TXT")].value == "v=spf1 a -all"
    assert named[(HOST, "A/AAAA")].kind == "address"
    assert facts.dkim_public == {
        f"a1._domainkey.{DOMAIN}": keys[0].public,
        f"a2._domainkey.{DOMAIN}": keys[1].public,
    }
    none = domain_records(DOMAIN, HOST, PORTS, [])
    assert [e.value for e in none.expected if e.kind == "dkim"] == ["(no DKIM keys)"]


def published_zone(facts: DomainRecords) -> dict[tuple[str, str], list[str]]:
    """Every expected record published as expected (addresses public)."""
    zone: dict[tuple[str, str], list[str]] = {(HOST, "A"): ["93.184.215.14"]}
    for expected in facts.expected:
        if expected.kind != "address":
            zone.setdefault((expected.name, expected.rtype), []).append(expected.value)
    return zone


def test_a_whole_check_over_zone_data() -> None:
    keys = [key()]
    facts = domain_records(DOMAIN, HOST, PORTS, keys)
    zone = published_zone(facts)
    good = asyncio.run(dns_check.check_domain(StaticLookup(zone), facts, config_path="p.toml"))
    assert good.ok, [r for r in good.records if r.status != "ok"]
    zone[(DOMAIN, "MX")] = ["10 elsewhere.example.net"]
    del zone[(f"_dmarc.{DOMAIN}", "TXT")]
    lookup = StaticLookup(zone, failing=frozenset({f"_smtp._tls.{DOMAIN}"}))
    found = asyncio.run(dns_check.check_domain(lookup, facts, config_path="p.toml"))
    rows = {(r.name, r.rtype): r for r in found.records}
    mx = rows[(DOMAIN, "MX")]
    assert (mx.status, mx.published) == ("mismatch", ("10 elsewhere.example.net",))
    assert mx.fix == f"replace the MX records with {DOMAIN}. 3600 IN MX 10 {HOST}."
    dmarc = rows[(f"_dmarc.{DOMAIN}", "TXT")]
    assert dmarc.status == "missing" and dmarc.fix.startswith(f"publish _dmarc.{DOMAIN}. 3600")
    tlsrpt = rows[(f"_smtp._tls.{DOMAIN}", "TXT")]
    assert tlsrpt.status == "lookup-error" and "p.toml" in tlsrpt.fix
    assert not found.ok
    # Each question is asked once, however many rows need it (the host's A for the web names).
    assert len(lookup.asked) == len(set(lookup.asked))


class Slow:
    """A lookup that never answers one name."""

    def __init__(self, inner: StaticLookup, stuck: str) -> None:
        self.inner, self.stuck = inner, stuck

    async def query(self, name: str, rtype: RecordType) -> Answer:
        if name == self.stuck:
            await asyncio.sleep(3600)
        return await self.inner.query(name, rtype)


def test_the_check_is_bounded_in_time() -> None:
    facts = domain_records(DOMAIN, HOST, PORTS, [key()])
    lookup = Slow(StaticLookup(published_zone(facts)), f"_dmarc.{DOMAIN}")
    started = time.monotonic()
    found = asyncio.run(dns_check.check_domain(lookup, facts, config_path="p", limit=0.2))
    assert time.monotonic() - started < 5
    late = [r for r in found.records if r.status != "ok"]
    assert [(r.name, r.status, r.detail) for r in late] == [
        (f"_dmarc.{DOMAIN}", "lookup-error", "no answer within 0.2 s")
    ]


def test_answers_shown_are_bounded() -> None:
    many = [f"10 mx{i}.example.net" for i in range(100)] + ["10 " + "x" * 5000]
    shown = dns_check.shown(many)
    assert len(shown) == dns_check.MAX_SHOWN
    assert dns_check.shown(["y" * 5000])[0] == "y" * dns_check.MAX_TEXT + "..."


def test_kept_checks_and_checks_asked_again() -> None:
    facts = domain_records(DOMAIN, HOST, PORTS, [key()])
    lookup = StaticLookup(published_zone(facts))
    now = [1000.0]
    checks = DnsChecks(lookup, "p.toml", clock=lambda: now[0])
    made = [0]

    async def facts_of() -> DomainRecords:
        made[0] += 1
        return facts

    async def scenario() -> None:
        first, second = await asyncio.gather(
            checks.check(DOMAIN, facts_of), checks.check(DOMAIN, facts_of)
        )
        assert first is second and made[0] == 1  # one check for both
        now[0] += 30
        assert await checks.check(DOMAIN, facts_of) is first  # kept
        assert await checks.check(DOMAIN, facts_of, fresh=True) is not first
        assert made[0] == 2
        now[0] += dns_check.KEEP - 1
        again = await checks.check(DOMAIN, facts_of)  # the one asked for by hand, kept
        assert made[0] == 2 and again.ok
        now[0] += 1
        await checks.check(DOMAIN, facts_of)
        assert made[0] == 3

    asyncio.run(scenario())


@pytest.mark.parametrize("line", ["", "; a comment", "   "])
def test_comments_are_no_records(line: str) -> None:
    assert dns_check.parse_line(line) is None
