"""Plain DNS questions for mail authentication (dns/lookup.py): zone data answers, and what
the cache keeps (for the TTL, negative answers too, never a server failure)."""

from __future__ import annotations

import asyncio

import pytest

from postroom.dns.lookup import Answer, CachingLookup, RecordType, StaticLookup, reverse_name
from postroom.dns.resolver import DnsTemporaryError


def ask(lookup: object, name: str, rtype: RecordType) -> Answer:
    return asyncio.run(lookup.query(name, rtype))  # type: ignore[attr-defined]


def test_static_lookup_tells_records_nodata_and_nxdomain_apart() -> None:
    zone = StaticLookup(
        {("Example.NET.", "TXT"): ["v=spf1 -all"], ("example.net", "A"): ["192.0.2.1"]},
        failing=frozenset({"broken.example"}),
    )
    assert ask(zone, "example.net", "TXT").records == ("v=spf1 -all",)
    nodata = ask(zone, "example.net", "MX")
    assert (nodata.records, nodata.nxdomain) == ((), False)
    assert ask(zone, "nope.example.net", "TXT").nxdomain
    with pytest.raises(DnsTemporaryError):
        ask(zone, "broken.example", "TXT")


class Counting:
    def __init__(self, answers: dict[str, Answer | Exception]) -> None:
        self.answers = answers
        self.asked = 0

    async def query(self, name: str, rtype: RecordType) -> Answer:
        self.asked += 1
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_cache_keeps_answers_for_their_ttl_and_never_failures() -> None:
    now = [1000.0]
    inner = Counting(
        {
            "a.example": Answer("a.example", "TXT", ("x",), ttl=60),
            "gone.example": Answer("gone.example", "TXT", nxdomain=True, ttl=30),
            "down.example": DnsTemporaryError("SERVFAIL"),
        }
    )
    cache = CachingLookup(inner, clock=lambda: now[0])
    for _ in range(3):
        assert ask(cache, "A.example.", "TXT").records == ("x",)
        assert ask(cache, "gone.example", "TXT").nxdomain
    assert inner.asked == 2
    now[0] += 31  # the negative answer expired, the other not yet
    ask(cache, "gone.example", "TXT")
    ask(cache, "a.example", "TXT")
    assert inner.asked == 3
    for _ in range(2):
        with pytest.raises(DnsTemporaryError):
            ask(cache, "down.example", "TXT")
    assert inner.asked == 5


def test_reverse_names() -> None:
    assert reverse_name("192.0.2.10") == "10.2.0.192.in-addr.arpa"
    assert reverse_name("2001:db8::1").endswith(".8.b.d.0.1.0.0.2.ip6.arpa")
