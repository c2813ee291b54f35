"""postroom.dns against a REAL authoritative DNS server (nsd) serving test zones over loopback.

Covers RFC 5321 §5.1 routing (MX preference, random order among equals, implicit MX, CNAMEs,
address literals, IPv4 and IPv6) and RFC 7505 null MX, plus the permanent / temporary split of
failures that decides between a bounce and a retry.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from postroom.dns import (
    DnsPermanentError,
    DnsResolver,
    DnsTemporaryError,
    InvalidAddressLiteral,
    MxHost,
    MxResult,
    NoMailRoute,
    NoSuchDomain,
    parse_address_literal,
    parse_nameserver,
)

from . import dns_server as dns_server_module
from .dns_server import DnsServer, DnsServerFactory, run_dns_server

dns_server = dns_server_module.dns_server  # the function-scoped factory fixture

T = TypeVar("T")

SOA = """$TTL 300
@       IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300
@       IN NS  ns.{origin}.
ns      IN A   127.0.0.1
"""

EXAMPLE_NET = (
    SOA.format(origin="example.net")
    + """
; three preferences, listed out of order
pref            IN MX 20 mx-b.example.net.
pref            IN MX 10 mx-a.example.net.
pref            IN MX 30 mx-c.example.net.
mx-a            IN A  192.0.2.1
mx-b            IN A  192.0.2.2
mx-c            IN A  192.0.2.3

; four hosts of equal preference between a best and a worst one
equal           IN MX 5  first.example.net.
equal           IN MX 10 e1.example.net.
equal           IN MX 10 e2.example.net.
equal           IN MX 10 e3.example.net.
equal           IN MX 10 e4.example.net.
equal           IN MX 50 last.example.net.

; no MX, an address: implicit MX
implicit        IN A  192.0.2.10
; no MX, no address: no route
bare            IN TXT "nothing here"
; RFC 7505 null MX
nullmx          IN MX 0 .
nullmx          IN A  192.0.2.99

; CNAMEs: inside this zone, to an implicit-MX domain, and into another zone
alias           IN CNAME pref.example.net.
alias-implicit  IN CNAME implicit.example.net.
cross           IN CNAME target.example.org.

; MX pointing at a host with both A and AAAA, and an IPv6-only host
dual            IN MX 10 mx-dual.example.net.
mx-dual         IN A    192.0.2.20
mx-dual         IN AAAA 2001:db8::20
v6only          IN AAAA 2001:db8::30
"""
)

EXAMPLE_ORG = (
    SOA.format(origin="example.org")
    + """
target          IN MX 10 mx.example.org.
mx              IN A  198.51.100.7
"""
)

ZONES = {"example.net": EXAMPLE_NET, "example.org": EXAMPLE_ORG}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def zones_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    with run_dns_server(tmp_path_factory.mktemp("nsd"), ZONES) as server:
        yield server


def resolver(server: DnsServer, seed: int = 0, **kwargs: Any) -> DnsResolver:
    return DnsResolver([server.nameserver], timeout=5.0, rng=random.Random(seed), **kwargs)


def names(result: MxResult) -> list[str]:
    return [host.host for host in result.hosts]


# --- MX ordering ---------------------------------------------------------------------------------


def test_mx_sorted_by_preference_gives_the_fallback_list(zones_server: DnsServer) -> None:
    result = run(resolver(zones_server).mx_hosts("pref.example.net"))
    assert result.hosts == (
        MxHost("mx-a.example.net", 10),
        MxHost("mx-b.example.net", 20),
        MxHost("mx-c.example.net", 30),
    )
    assert result.canonical == "pref.example.net"
    assert not (result.implicit or result.null_mx or result.literal)


def test_equal_preferences_are_shuffled_with_the_injected_random(zones_server: DnsServer) -> None:
    orders = set()
    for seed in range(20):
        hosts = names(run(resolver(zones_server, seed).mx_hosts("equal.example.net")))
        assert hosts[0] == "first.example.net"
        assert hosts[-1] == "last.example.net"
        assert sorted(hosts[1:-1]) == [f"e{i}.example.net" for i in range(1, 5)]
        orders.add(tuple(hosts))
        # the same seed gives the same order: tests can pin it
        again = names(run(resolver(zones_server, seed).mx_hosts("equal.example.net")))
        assert again == hosts
    assert len(orders) > 3, f"equal-preference hosts were not randomized: {orders}"


def test_fallback_list_addresses(zones_server: DnsServer) -> None:
    dns = resolver(zones_server)

    async def all_addresses() -> list[list[str]]:
        result = await dns.mx_hosts("pref.example.net")
        return [await dns.addresses(host.host) for host in result.hosts]

    assert run(all_addresses()) == [["192.0.2.1"], ["192.0.2.2"], ["192.0.2.3"]]


# --- implicit MX, null MX, no route --------------------------------------------------------------


def test_implicit_mx_when_only_an_address_exists(zones_server: DnsServer) -> None:
    result = run(resolver(zones_server).mx_hosts("implicit.example.net"))
    assert result.implicit
    assert result.hosts == (MxHost("implicit.example.net", 0),)
    assert run(resolver(zones_server).addresses("implicit.example.net")) == ["192.0.2.10"]


def test_no_mx_and_no_address_is_a_permanent_error(zones_server: DnsServer) -> None:
    with pytest.raises(NoMailRoute) as caught:
        run(resolver(zones_server).mx_hosts("bare.example.net"))
    assert caught.value.permanent
    assert caught.value.status == "5.4.4"


def test_null_mx(zones_server: DnsServer) -> None:
    result = run(resolver(zones_server).mx_hosts("nullmx.example.net"))
    assert result.null_mx
    assert result.hosts == ()
    assert not result.implicit  # its A record must not be used as an implicit MX


# --- CNAME ---------------------------------------------------------------------------------------


def test_cname_within_the_zone_is_followed(zones_server: DnsServer) -> None:
    result = run(resolver(zones_server).mx_hosts("alias.example.net"))
    assert result.domain == "alias.example.net"
    assert result.canonical == "pref.example.net"
    assert names(result) == ["mx-a.example.net", "mx-b.example.net", "mx-c.example.net"]


def test_cname_into_another_zone_is_followed(zones_server: DnsServer) -> None:
    # nsd answers only with the CNAME here (the target is another zone): the resolver must ask
    # again for the canonical name.
    result = run(resolver(zones_server).mx_hosts("cross.example.net"))
    assert result.canonical == "target.example.org"
    assert result.hosts == (MxHost("mx.example.org", 10),)
    assert run(resolver(zones_server).addresses("mx.example.org")) == ["198.51.100.7"]


def test_cname_answered_without_its_target_is_queried_again(
    dns_server: DnsServerFactory,
) -> None:
    # Two servers: the first holds only the CNAME and answers with it alone; the MX lookup must
    # then be made for the canonical name, which only the second server (tried after the first
    # refuses) knows.
    first = dns_server(
        {"example.net": SOA.format(origin="example.net") + "away IN CNAME target.example.org.\n"}
    )
    second = dns_server({"example.org": EXAMPLE_ORG})
    dns = DnsResolver([first.nameserver, second.nameserver], timeout=5.0)
    result = run(dns.mx_hosts("away.example.net"))
    assert result.canonical == "target.example.org"
    assert result.hosts == (MxHost("mx.example.org", 10),)


def test_implicit_mx_through_a_cname_uses_the_canonical_name(zones_server: DnsServer) -> None:
    result = run(resolver(zones_server).mx_hosts("alias-implicit.example.net"))
    assert result.implicit
    assert result.hosts == (MxHost("implicit.example.net", 0),)


# --- failures ------------------------------------------------------------------------------------


def test_nxdomain_is_a_permanent_no_such_domain(zones_server: DnsServer) -> None:
    with pytest.raises(NoSuchDomain) as caught:
        run(resolver(zones_server).mx_hosts("nosuch.example.net"))
    assert caught.value.permanent
    assert caught.value.status == "5.1.2"
    with pytest.raises(NoSuchDomain):
        run(resolver(zones_server).addresses("nosuch.example.net"))


def test_refused_or_servfail_is_temporary(zones_server: DnsServer) -> None:
    # nsd is not authoritative for example.com and refuses: no nameserver gave an answer.
    with pytest.raises(DnsTemporaryError) as caught:
        run(resolver(zones_server).mx_hosts("example.com"))
    assert not caught.value.permanent
    assert caught.value.status.startswith("4.")


def test_timeout_is_temporary() -> None:
    # A UDP socket that never answers: the lookup must give up within the timeout.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        dns = DnsResolver([f"127.0.0.1:{port}"], timeout=0.5)
        with pytest.raises(DnsTemporaryError, match="timed out"):
            run(asyncio.wait_for(dns.mx_hosts("example.net"), 5.0))


def test_mx_host_in_a_zone_nobody_serves_is_temporary(
    dns_server: DnsServerFactory,
) -> None:
    # Only example.org is served, by a fresh nsd from the factory fixture; its MX host lives in
    # example.net, which this server refuses.
    zone = SOA.format(origin="example.org") + "target IN MX 10 mx.example.net.\n"
    server = dns_server({"example.org": zone})
    dns = resolver(server)
    assert run(dns.mx_hosts("target.example.org")).hosts == (MxHost("mx.example.net", 10),)
    with pytest.raises(DnsTemporaryError):
        run(dns.addresses("mx.example.net"))


# --- addresses -----------------------------------------------------------------------------------


def test_mx_host_with_a_and_aaaa(zones_server: DnsServer) -> None:
    result = run(resolver(zones_server).mx_hosts("dual.example.net"))
    assert names(result) == ["mx-dual.example.net"]
    host = result.hosts[0].host
    assert run(resolver(zones_server).addresses(host)) == ["2001:db8::20", "192.0.2.20"]
    assert run(resolver(zones_server, prefer_ipv6=False).addresses(host)) == [
        "192.0.2.20",
        "2001:db8::20",
    ]


def test_ipv6_only_host(zones_server: DnsServer) -> None:
    assert run(resolver(zones_server).addresses("v6only.example.net")) == ["2001:db8::30"]


def test_host_without_addresses_is_a_permanent_error(zones_server: DnsServer) -> None:
    with pytest.raises(NoMailRoute):
        run(resolver(zones_server).addresses("bare.example.net"))


@pytest.mark.parametrize(
    ("literal", "address"),
    [
        ("[192.0.2.1]", "192.0.2.1"),
        ("[IPv6:2001:db8::1]", "2001:db8::1"),
        ("[ipv6:2001:DB8:0:0:0:0:0:1]", "2001:db8::1"),
    ],
)
def test_address_literals_bypass_dns(literal: str, address: str) -> None:
    # No nameserver listens on this port: a DNS query would time out.
    dns = DnsResolver(["127.0.0.1:9"], timeout=0.5)
    assert run(dns.addresses(literal)) == [address]
    result = run(dns.mx_hosts(literal))
    assert result.literal
    assert result.hosts == (MxHost(literal, 0),)


@pytest.mark.parametrize(
    "literal", ["[192.0.2.256]", "[2001:db8::1]", "[IPv6:192.0.2.1]", "[x-tag:abc]", "[1.2.3.4"]
)
def test_invalid_address_literals_are_permanent(literal: str) -> None:
    dns = DnsResolver(["127.0.0.1:9"], timeout=0.5)
    with pytest.raises(InvalidAddressLiteral) as caught:
        run(dns.addresses(literal))
    assert isinstance(caught.value, DnsPermanentError)
    assert caught.value.status == "5.1.3"
    assert parse_address_literal("example.net") is None


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:53", ("::1", 53)),
        ("[::1]", ("::1", 53)),
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("2001:db8::53", ("2001:db8::53", 53)),
    ],
)
def test_parse_nameserver(spec: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize("spec", ["localhost:53", "127.0.0.1:0", "127.0.0.1:x", "[::1]53", ""])
def test_parse_nameserver_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(spec)


def test_empty_nameserver_list_uses_the_system_resolver() -> None:
    dns = DnsResolver([], timeout=1.0)
    # the literal path needs no DNS at all; construction must not fail without nameservers
    assert run(dns.addresses("[192.0.2.7]")) == ["192.0.2.7"]
