"""Plain DNS questions for mail authentication (SPF, DKIM, DMARC, ARC): one record type of one
name, answered with the records and whether the name exists, cached by TTL.

`DnsLookup` is the protocol the evaluators depend on; tests give them a `StaticLookup` of zone
data (the reference suites carry theirs), the server a `CachingLookup` over `ResolverLookup`
(dnspython's async resolver with `[dns] nameservers`). The answer distinguishes what SPF and
DMARC must tell apart: records, no records of that type (NODATA), no such name (NXDOMAIN);
anything else (SERVFAIL, timeout) raises `DnsTemporaryError`.

Record texts: TXT as the concatenation of its character-strings (RFC 7208 §3.3, RFC 6376
§3.6.2.2), decoded as Latin-1 so no octet is lost; A/AAAA as addresses; MX as
"preference host"; SRV as "priority weight port target"; PTR and CNAME as host names; names
without the final dot (the root, an SRV's "no service" target, as ".").
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from postroom.dns.resolver import DEFAULT_TIMEOUT, DnsResolver, DnsTemporaryError

RecordType = Literal["TXT", "A", "AAAA", "MX", "PTR", "CNAME", "SRV"]

NEGATIVE_TTL = 300  # seconds an NXDOMAIN/NODATA is kept when the server gives no SOA minimum
MAX_TTL = 86400  # no answer is kept longer, whatever its TTL
CACHE_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to one question: `records` (empty for NODATA or NXDOMAIN) and its TTL."""

    name: str
    rtype: RecordType
    records: tuple[str, ...] = ()
    nxdomain: bool = False
    ttl: int = NEGATIVE_TTL


class DnsLookup(Protocol):
    async def query(self, name: str, rtype: RecordType) -> Answer:
        """One question; DnsTemporaryError when no usable answer came (SERVFAIL, timeout)."""


def normal_name(name: str) -> str:
    """Lower case, without the final dot: the form questions and zone data are compared in."""
    return name.strip().rstrip(".").lower()


def reverse_name(address: str) -> str:
    """The PTR name of an IPv4 or IPv6 address (in-addr.arpa / ip6.arpa)."""
    return normal_name(dns.reversename.from_address(address).to_text())


@dataclass
class StaticLookup:
    """Answers from zone data: {(name, type): [record texts]} (tests, reference suites).

    A name with no entry of any type is NXDOMAIN; a name with entries of other types only is
    NODATA; `failing` names raise DnsTemporaryError (a server failure), for any type.
    """

    records: Mapping[tuple[str, str], Iterable[str]] = field(default_factory=dict)
    failing: frozenset[str] = frozenset()
    asked: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._data: dict[tuple[str, str], tuple[str, ...]] = {
            (normal_name(name), rtype.upper()): tuple(texts)
            for (name, rtype), texts in self.records.items()
        }
        self._names = {name for name, _ in self._data}

    async def query(self, name: str, rtype: RecordType) -> Answer:
        key = normal_name(name)
        self.asked.append((key, rtype))
        if key in self.failing:
            raise DnsTemporaryError(f"{key}: server failure (test data)", name=key)
        if key not in self._names:
            return Answer(key, rtype, nxdomain=True)
        return Answer(key, rtype, self._data.get((key, rtype), ()), ttl=MAX_TTL)


@dataclass
class ResolverLookup:
    """`DnsLookup` over dnspython's async resolver, with `[dns] nameservers` like DnsResolver."""

    nameservers: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    _resolver: dns.asyncresolver.Resolver = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The same servers and timeouts as mail routing: one configuration for all of DNS.
        self._resolver = DnsResolver(nameservers=self.nameservers, timeout=self.timeout)._resolver

    async def query(self, name: str, rtype: RecordType) -> Answer:
        key = normal_name(name)
        if not key:
            return Answer(key, rtype, nxdomain=True)
        try:
            answer = await self._resolver.resolve(
                key + ".", rtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as error:
            return Answer(key, rtype, nxdomain=True, ttl=_negative_ttl(error))
        except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel):
            return Answer(key, rtype, nxdomain=True)  # no such name can exist
        except dns.resolver.LifetimeTimeout:
            raise DnsTemporaryError(f"{key}/{rtype}: DNS lookup timed out", name=key) from None
        except dns.exception.DNSException as error:
            raise DnsTemporaryError(
                f"{key}/{rtype}: DNS lookup failed ({error})", name=key
            ) from None
        if answer.rrset is None:
            return Answer(key, rtype, ttl=_soa_minimum(answer.response))
        return Answer(key, rtype, tuple(_texts(answer.rrset, rtype)), ttl=answer.rrset.ttl)


def _texts(rrset: dns.rrset.RRset, rtype: RecordType) -> Iterable[str]:
    for rdata in rrset:
        if rtype == "TXT":
            yield b"".join(rdata.strings).decode("latin-1")
        elif rtype == "MX":
            yield f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True).lower()}"
        elif rtype == "SRV":
            target = rdata.target.to_text(omit_final_dot=True).lower()
            yield f"{rdata.priority} {rdata.weight} {rdata.port} {target}"
        elif rtype in ("PTR", "CNAME"):
            yield rdata.target.to_text(omit_final_dot=True).lower()
        else:
            yield rdata.to_text()


def _negative_ttl(error: dns.resolver.NXDOMAIN) -> int:
    responses: dict[object, object] = error.responses()  # type: ignore[no-untyped-call]
    for response in responses.values():
        return _soa_minimum(response)
    return NEGATIVE_TTL


def _soa_minimum(response: object) -> int:
    """RFC 2308 §5: a negative answer is cached for the SOA's minimum (and TTL), if given."""
    for rrset in getattr(response, "authority", ()):
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(min(rrset.ttl, rrset[0].minimum))
    return NEGATIVE_TTL


@dataclass
class CachingLookup:
    """Answers kept for their TTL (at most MAX_TTL, negative ones per RFC 2308), the least
    recently asked dropped past CACHE_ENTRIES. Server failures are never kept."""

    inner: DnsLookup
    clock: Callable[[], float] = time.monotonic
    entries: int = CACHE_ENTRIES
    _cache: collections.OrderedDict[tuple[str, str], tuple[float, Answer]] = field(
        default_factory=collections.OrderedDict
    )

    async def query(self, name: str, rtype: RecordType) -> Answer:
        key = (normal_name(name), rtype)
        now = self.clock()
        kept = self._cache.get(key)
        if kept is not None and kept[0] > now:
            self._cache.move_to_end(key)
            return kept[1]
        answer = await self.inner.query(*key)
        self._cache[key] = (now + min(max(answer.ttl, 0), MAX_TTL), answer)
        self._cache.move_to_end(key)
        while len(self._cache) > self.entries:
            self._cache.popitem(last=False)
        return answer
