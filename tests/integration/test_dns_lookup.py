"""ResolverLookup (dns/lookup.py) against a real authoritative server (nsd): TXT records joined
from their strings, NODATA and NXDOMAIN told apart with the SOA's negative TTL, MX and PTR."""

from __future__ import annotations

import asyncio

from postroom.dns.lookup import Answer, ResolverLookup, reverse_name

from . import dns_server as dns_server_module
from .dns_server import DnsServerFactory

dns_server = dns_server_module.dns_server

SOA = """$TTL 300
@       IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 120
@       IN NS  ns.{origin}.
ns      IN A   127.0.0.1
"""

AUTH_NET = SOA.format(origin="auth.test") + (
    '@                  IN TXT "v=spf1 ip4:192.0.2.0/24 " "-all"\n'
    "@                  IN MX  10 mx.auth.test.\n"
    "mx                 IN A   192.0.2.25\n"
    'sel._domainkey     IN TXT "v=DKIM1; k=ed25519; "'
    ' "p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="\n'
)
REVERSE = SOA.format(origin="2.0.192.in-addr.arpa") + "25 IN PTR mx.auth.test.\n"


def test_questions_against_nsd(dns_server: DnsServerFactory) -> None:
    server = dns_server({"auth.test": AUTH_NET, "2.0.192.in-addr.arpa": REVERSE})
    lookup = ResolverLookup((server.nameserver,), timeout=5)

    async def ask() -> list[Answer]:
        return list(
            await asyncio.gather(
                lookup.query("AUTH.test.", "TXT"),
                lookup.query("sel._domainkey.auth.test", "TXT"),
                lookup.query("auth.test", "MX"),
                lookup.query("mx.auth.test", "TXT"),
                lookup.query("nothing.auth.test", "TXT"),
                lookup.query(reverse_name("192.0.2.25"), "PTR"),
            )
        )

    spf, dkim, mx, nodata, nxdomain, ptr = asyncio.run(ask())
    assert spf.records == ("v=spf1 ip4:192.0.2.0/24 -all",)
    assert dkim.records[0].startswith("v=DKIM1; k=ed25519; p=")
    assert mx.records == ("10 mx.auth.test",)
    assert (nodata.records, nodata.nxdomain, nodata.ttl) == ((), False, 120)
    assert (nxdomain.nxdomain, nxdomain.ttl) == (True, 120)
    assert ptr.records == ("mx.auth.test",)
