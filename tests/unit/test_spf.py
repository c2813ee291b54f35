"""SPF (mailauth/spf.py) beyond the OpenSPF suite: the identities verify_sender checks, the
time limit, bounded macro expansion, and hypothesis fuzzing of records and macro strings
(never an exception, errors are permerror, a bounded number of DNS questions, linear time)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.dns.lookup import Answer, RecordType, StaticLookup
from postroom.mailauth.spf import (
    MAX_EXPLANATION,
    SpfOutcome,
    SpfSyntaxError,
    check_host,
    parse_record,
    verify_sender,
)

RESULTS = {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}


def zone(data: Mapping[tuple[str, str], Sequence[str]]) -> StaticLookup:
    return StaticLookup({key: list(texts) for key, texts in data.items()})


def check(
    lookup: object, ip: str, sender: str, *, helo: str = "mx.client.example", **kwargs: object
) -> SpfOutcome:
    domain = sender.rpartition("@")[2]
    return asyncio.run(
        check_host(lookup, ip, domain, sender, helo=helo, **kwargs)  # type: ignore[arg-type]
    )


BASE = {
    ("example.org", "TXT"): ["v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all exp=why.example.org"],
    ("why.example.org", "TXT"): ["%{i} (%{c}) may not send for %{d} to %{r} at %{t}"],
    ("helo.example.org", "TXT"): ["v=spf1 a -all"],
    ("helo.example.org", "A"): ["198.51.100.7"],
}


def test_verify_sender_checks_mail_from_or_postmaster_at_helo() -> None:
    lookup = zone(BASE)
    outcome = asyncio.run(
        verify_sender(lookup, "192.0.2.9", "alice@example.org", "helo.example.org", receiver="mx")
    )
    assert (outcome.result, outcome.identity, outcome.domain) == ("pass", "mailfrom", "example.org")
    bounce = asyncio.run(
        verify_sender(lookup, "198.51.100.7", "", "helo.example.org", receiver="mx")
    )
    assert (bounce.result, bounce.identity, bounce.domain) == ("pass", "helo", "helo.example.org")
    refused = asyncio.run(verify_sender(lookup, "192.0.2.9", "", "helo.example.org", receiver="mx"))
    assert refused.result == "fail"
    assert "-all" in refused.reason


def test_explanation_macros_ipv6_and_ipv4_mapped_clients() -> None:
    lookup = zone(BASE)
    outcome = check(lookup, "2001:db9::1", "bob@example.org", receiver="mx.us", now=1700000000.7)
    assert outcome.result == "fail"
    nibbles = ".".join("20010db9" + "0" * 23 + "1")
    assert outcome.explanation == (
        f"{nibbles} (2001:db9::1) may not send for example.org to mx.us at 1700000000"
    )
    mapped = check(lookup, "::ffff:192.0.2.200", "bob@example.org")
    assert mapped.result == "pass"  # RFC 7208 §5: IPv4-mapped is IPv4, ip4: matches
    outside = check(lookup, "::ffff:203.0.113.1", "bob@example.org", now=0)
    assert outside.explanation is not None
    assert outside.explanation.startswith("203.0.113.1 (203.0.113.1)")


def test_malformed_and_international_domains() -> None:
    lookup = zone({("xn--bcher-kva.example", "TXT"): ["v=spf1 +all"]})
    assert check(lookup, "192.0.2.1", "a@bücher.example").result == "pass"
    assert check(lookup, "192.0.2.1", "a@[192.0.2.1]").result == "none"
    assert check(lookup, "192.0.2.1", "a@localhost").result == "none"
    assert check(lookup, "192.0.2.1", "a@" + "x" * 64 + ".example").result == "none"
    with pytest.raises(ValueError):
        check(lookup, "not-an-address", "a@bücher.example")


class Stalled:
    """A resolver that never answers: the check must end by its time limit."""

    async def query(self, name: str, rtype: RecordType) -> Answer:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_time_limit_gives_temperror() -> None:
    started = time.monotonic()
    outcome = check(Stalled(), "192.0.2.1", "a@example.org", time_limit=0.2)
    assert outcome.result == "temperror"
    assert time.monotonic() - started < 5


def test_long_macro_expansion_is_truncated_from_the_left() -> None:
    """RFC 7208 §7.3: a name over 253 characters loses labels on its left; the bounded
    expansion must ask exactly that name, even when the full expansion would be huge."""
    local = "abcdefghij.klmnopqrst"
    record = "v=spf1 exists:" + "%{l}." * 3000 + "tail.example -all"
    lookup = zone({("example.org", "TXT"): [record]})
    outcome = check(lookup, "192.0.2.1", f"{local}@example.org")
    assert outcome.result == "fail"
    asked = [name for name, rtype in lookup.asked if rtype == "A"]
    full = (local + ".") * 3000 + "tail.example"
    cut = full[full.find(".", len(full) - 254) + 1 :]
    assert asked == [cut]
    assert len(cut) <= 253 and len(cut) > 230


def test_explanation_is_bounded() -> None:
    lookup = zone(
        {
            ("example.org", "TXT"): ["v=spf1 -all exp=x.example.org"],
            ("x.example.org", "TXT"): ["%{s}" * 5000],
        }
    )
    outcome = check(lookup, "192.0.2.1", "someone@example.org")
    assert outcome.explanation is not None
    assert len(outcome.explanation) == MAX_EXPLANATION


def test_unknown_modifiers_are_ignored_but_checked() -> None:
    assert parse_record("v=spf1 foo=%{t}%{c}bar -all").directives[0].mechanism == "all"
    with pytest.raises(SpfSyntaxError):
        parse_record("v=spf1 foo=%{x} -all")
    with pytest.raises(SpfSyntaxError):
        parse_record("v=spf1 exists:%{d0}.example.org")
    with pytest.raises(SpfSyntaxError):
        parse_record("v=spf1 ip6:fe80::1%eth0")


def test_dns_term_limit_spans_includes() -> None:
    records: dict[tuple[str, str], list[str]] = {
        ("example.org", "TXT"): ["v=spf1 include:i1.example.org -all"],
    }
    for n in range(1, 12):
        records[(f"i{n}.example.org", "TXT")] = [f"v=spf1 include:i{n + 1}.example.org"]
    outcome = check(zone(records), "192.0.2.1", "a@example.org")
    assert outcome.result == "permerror"
    assert "10" in outcome.reason


# --- fuzzing ---------------------------------------------------------------------------------

PIECES = [
    "a",
    "mx",
    "ptr",
    "all",
    "-all",
    "~all",
    "?all",
    "+",
    "include:",
    "exists:",
    "ip4:",
    "ip6:",
    "redirect=",
    "exp=",
    "foo=",
    "%{",
    "}",
    "%%",
    "%_",
    "%-",
    "%",
    "/",
    "//",
    "24",
    "0",
    "33",
    "129",
    ":",
    ".",
    "example.org",
    "loop.example.org",
    "mx.example.org",
    "192.0.2.1",
    "::1",
    "%{d}",
    "%{ir}",
    "%{l1r-}",
    "%{p}",
    "%{H}",
    "%{o2}",
    "%{c}",
    " ",
    "  ",
    "=",
    "\x00",
    "é",
    "x",
    "v=spf1",
]
ZONE = {
    ("loop.example.org", "TXT"): ["v=spf1 include:example.org a mx ptr -all"],
    ("mx.example.org", "A"): ["192.0.2.1"],
    ("mx.example.org", "MX"): [f"{n} mx.example.org" for n in range(5)],
    ("example.org", "MX"): ["10 mx.example.org"],
    ("example.org", "A"): ["192.0.2.1"],
    ("1.2.0.192.in-addr.arpa", "PTR"): ["mx.example.org", "example.org"],
}
# An upper bound on the DNS questions of one check (RFC 7208 §4.6.4): the record, 10 terms of
# at most 1 + 10 questions (mx), the PTR list, 10 validations and the explanation.
MAX_QUESTIONS = 1 + 10 * 11 + 1 + 10 + 1

records = st.lists(st.sampled_from(PIECES), max_size=24).map(lambda p: "v=spf1 " + "".join(p))
garbage = st.text(max_size=60).map(lambda text: "v=spf1 " + text)


def run_record(record: str, explanation: str = "%{s}") -> tuple[SpfOutcome, StaticLookup]:
    data = dict(ZONE)
    data[("example.org", "TXT")] = [record]
    data[("e.example.org", "TXT")] = [explanation]
    lookup = zone(data)
    return check(lookup, "192.0.2.1", "u-v.w@example.org"), lookup


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(records, garbage))
def test_fuzzed_records_give_a_result_never_an_exception(record: str) -> None:
    try:
        parse_record(record)
        parsed = True
    except SpfSyntaxError:
        parsed = False
    outcome, lookup = run_record(record)
    assert outcome.result in RESULTS
    assert outcome.result not in ("none", "temperror")  # the record exists, DNS never fails
    if not parsed:
        assert outcome.result == "permerror"
    assert len(lookup.asked) <= MAX_QUESTIONS


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join), st.text(max_size=30))
def test_fuzzed_macro_strings_in_mechanisms_and_explanations(macro: str, text: str) -> None:
    outcome, _ = run_record(f"v=spf1 exists:{macro} -all exp=e.example.org", macro + text)
    assert outcome.result in ("fail", "pass", "permerror")
    if outcome.explanation is not None:
        assert outcome.result == "fail"
        assert len(outcome.explanation) <= MAX_EXPLANATION


HOSTILE = [
    "ip4:1.2.3.4/" * 4000,
    "a:" + "/1" * 20000,
    "exists:" + "%{" * 20000,
    "exists:" + "%{l1r-.+,/_=}" * 3000 + ".example.org",
    "foo=" + "%%" * 20000,
    "ip6:" + ":" * 40000,
    "mx:" + "a." * 20000 + "example.org//64",
    "?all " * 10000,
]


@pytest.mark.parametrize("term", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_records_take_linear_time(term: str) -> None:
    """Records of ~40 kB: a quadratic step (re-scanning per term or per macro) would take
    seconds to minutes; linear work takes milliseconds."""
    started = time.perf_counter()
    outcome, _ = run_record("v=spf1 " + term + " -all")
    assert outcome.result in RESULTS
    assert time.perf_counter() - started < 1.0
