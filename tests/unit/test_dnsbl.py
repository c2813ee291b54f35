"""DNS lists (services/dnsbl.py): the question names of RFC 5782 §2.1/§2.4, the answers that
mean "listed", and a round of questions through StaticLookup (the real server: integration)."""

from __future__ import annotations

import asyncio
import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from postroom.dns.lookup import StaticLookup
from postroom.services import dnsbl


def test_question_names() -> None:
    assert dnsbl.query_name("192.0.2.99", "bl.example.") == "99.2.0.192.bl.example"
    assert dnsbl.query_name("::ffff:192.0.2.99", "BL.example") == "99.2.0.192.bl.example"
    # RFC 5782 §2.4: 32 nibbles, the least significant first.
    assert dnsbl.query_name("2001:db8:1:2:3:4:567:89ab", "bl.example") == (
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example"
    )
    assert dnsbl.query_name("not an address", "bl.example") is None


@given(st.ip_addresses())
def test_question_names_give_the_address_back(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    name = dnsbl.query_name(str(ip), "bl.example")
    assert name is not None and name.endswith(".bl.example")
    labels = name.removesuffix(".bl.example").split(".")[::-1]
    if isinstance(ip, ipaddress.IPv4Address) or ip.ipv4_mapped is not None:
        assert len(labels) == 4
        expected = ip if isinstance(ip, ipaddress.IPv4Address) else ip.ipv4_mapped
        assert ipaddress.ip_address(".".join(labels)) == expected
    else:
        assert len(labels) == 32
        groups = ["".join(labels[i : i + 4]) for i in range(0, 32, 4)]
        assert ipaddress.ip_address(":".join(groups)) == ip


def test_answers() -> None:
    assert dnsbl.interpret("bl", ["127.0.0.2"]) == dnsbl.Listing("bl", True, ("127.0.0.2",))
    assert dnsbl.interpret("bl", ["127.0.0.10", "127.0.0.4"]).codes == ("127.0.0.10", "127.0.0.4")
    assert not dnsbl.interpret("bl", []).listed
    for refused in ("127.255.255.254", "127.255.255.255", "127.0.255.255", "127.0.0.1"):
        listing = dnsbl.interpret("bl", [refused])
        assert not listing.listed and listing.problem
    outside = dnsbl.interpret("bl", ["192.0.2.1"])  # a wildcard or hijacked zone
    assert not outside.listed and "outside 127.0.0.0/8" in outside.problem
    # One good code among bad ones is a listing.
    assert dnsbl.interpret("bl", ["10.0.0.1", "127.0.0.3"]).codes == ("127.0.0.3",)


@given(st.lists(st.text(max_size=80), max_size=40))
def test_any_answer_text_is_read_without_error(records: list[str]) -> None:
    listing = dnsbl.interpret("bl", records)
    assert len(listing.codes) <= dnsbl.MAX_CODES
    for code in listing.codes:
        ip = ipaddress.ip_address(code)
        assert ip in dnsbl.LOOPBACK and ip not in dnsbl.REFUSED


def test_lists_asked_at_once_failures_are_not_listings() -> None:
    lookup = StaticLookup(
        {("2.2.0.192.bl.example", "A"): ["127.0.0.2"], ("2.2.0.192.wl.example", "A"): ["1.2.3.4"]},
        failing=frozenset({"2.2.0.192.broken.example"}),
    )
    found = asyncio.run(
        dnsbl.check(lookup, "192.0.2.2", ["bl.example", "wl.example", "broken.example"], 5.0)
    )
    assert [(x.zone, x.listed) for x in found] == [
        ("bl.example", True),
        ("wl.example", False),
        ("broken.example", False),
    ]
    assert "lookup failed" in found[2].problem


def test_a_list_that_does_not_answer_in_time_is_not_a_listing() -> None:
    class Slow:
        async def query(self, name: str, rtype: str) -> object:
            await asyncio.sleep(30)
            raise AssertionError("not reached")

    found = asyncio.run(dnsbl.check(Slow(), "192.0.2.2", ["slow.example"], 0.05))  # type: ignore[arg-type]
    assert not found[0].listed and "no answer" in found[0].problem
