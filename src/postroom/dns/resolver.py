"""Mail routing lookups over dnspython's async resolver (RFC 5321 §5.1, RFC 7505).

`MailResolver` is the protocol the delivery code depends on; `DnsResolver` implements it over
`dns.asyncresolver`, built from the `[dns] nameservers` setting (``["127.0.0.1:5353"]``,
``["[::1]:53"]``; an empty list means the system resolver) and a timeout. Nothing lives at module
level: tests pass their own resolver (or a fake implementing the protocol) and their own
`random.Random` for the order among MX hosts of equal preference.

Outcomes are typed. `mx_hosts` returns an `MxResult`: the hosts to try in order, or
`null_mx=True` when the domain declares it accepts no mail (the caller fails the recipient with
556 5.1.10). Failures raise `DnsPermanentError` (the domain does not exist, has no route for mail,
an address literal is malformed) or `DnsTemporaryError` (SERVFAIL, timeouts, refused queries);
each carries the RFC 3463 enhanced status code a bounce or deferral should report.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset
from dns.rdtypes.ANY.MX import MX

DEFAULT_TIMEOUT = 10.0
DNS_PORT = 53
PER_SERVER_TIMEOUT = 2.0
# Bound on CNAME hops we chase ourselves when the server returns the chain without the target's
# data (an authoritative server answering for another zone, for instance).
MAX_CNAME_HOPS = 8


# --- results and errors ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MxHost:
    """One next hop: a host name (no trailing dot) or an address literal, and its preference."""

    host: str
    preference: int


@dataclass(frozen=True, slots=True)
class MxResult:
    """Where mail for `domain` goes.

    `hosts` is in the order to try them. `canonical` is the name after CNAMEs were followed.
    `implicit` says no MX existed and the domain's own A/AAAA serve (RFC 5321 §5.1); `null_mx`
    says the domain publishes `MX 0 .` and accepts no mail (RFC 7505), with `hosts` empty.
    """

    domain: str
    canonical: str
    hosts: tuple[MxHost, ...] = ()
    implicit: bool = False
    null_mx: bool = False
    literal: bool = False


class DnsError(Exception):
    """A lookup that gave no usable answer. `status` is the RFC 3463 enhanced status code."""

    permanent: bool = False
    status: str = "4.4.3"

    def __init__(self, message: str, *, name: str = "", status: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        if status is not None:
            self.status = status


class DnsTemporaryError(DnsError):
    """Try again later: SERVFAIL, a timeout, no server answering (RFC 3463 4.4.3)."""

    permanent = False
    status = "4.4.3"  # RFC 3463: X.4.3 directory server failure


class DnsPermanentError(DnsError):
    """Retrying will not help."""

    permanent = True
    status = "5.4.4"  # RFC 3463: X.4.4 unable to route


class NoSuchDomain(DnsPermanentError):
    """NXDOMAIN: the domain does not exist."""

    status = "5.1.2"  # RFC 3463: X.1.2 bad destination system address


class NoMailRoute(DnsPermanentError):
    """The domain exists but has neither MX nor A/AAAA records."""

    status = "5.4.4"  # RFC 3463: X.4.4 unable to route


class InvalidAddressLiteral(DnsPermanentError):
    """A `[...]` domain that is not a valid IPv4 or IPv6 address literal."""

    status = "5.1.3"  # RFC 3463: X.1.3 bad destination mailbox address syntax


# RFC 7505 §4.2: mail to a null MX domain fails with 556 and enhanced status 5.1.10.
NULL_MX_REPLY_CODE = 556
NULL_MX_STATUS = "5.1.10"


# --- the protocol the delivery code depends on -------------------------------------------------


class MailResolver(Protocol):
    """What delivery needs from DNS; tests may pass any object with these coroutines."""

    async def mx_hosts(self, domain: str) -> MxResult: ...

    async def addresses(self, host: str) -> list[str]: ...


# --- helpers -----------------------------------------------------------------------------------


def parse_nameserver(spec: str) -> tuple[str, int]:
    """`"127.0.0.1:5353"`, `"[::1]:53"`, `"192.0.2.53"` or `"::1"` → (address, port)."""
    text = spec.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid nameserver {spec!r}: expected [IPv6]:port")
        port_text = rest[1:] if rest else str(DNS_PORT)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a bare IPv4 address, or a bare IPv6 address without a port
        host, port_text = text, str(DNS_PORT)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"invalid nameserver {spec!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid nameserver {spec!r}: bad port {port_text!r}")
    return str(address), int(port_text)


def parse_address_literal(domain: str) -> str | None:
    """The address in `[192.0.2.1]` / `[IPv6:2001:db8::1]`; None when `domain` is not a literal.

    Raises InvalidAddressLiteral for a bracketed domain that is not a valid literal.
    """
    if not domain.startswith("["):
        return None
    if not domain.endswith("]"):
        raise InvalidAddressLiteral(f"malformed address literal {domain!r}", name=domain)
    inner = domain[1:-1]
    try:
        # RFC 5321 §4.1.3: IPv6-address-literal = "IPv6:" IPv6-addr (the tag is case-insensitive)
        if inner[:5].lower() == "ipv6:":
            return str(ipaddress.IPv6Address(inner[5:]))
        # RFC 5321 §4.1.3: IPv4-address-literal = Snum 3("."  Snum)
        return str(ipaddress.IPv4Address(inner))
    except ValueError:
        # General-address-literal (RFC 5321 §4.1.3 "tag:content") has no registered tag we know.
        raise InvalidAddressLiteral(f"invalid address literal {domain!r}", name=domain) from None


def _host_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


def order_mx(records: Sequence[MxHost], rng: random.Random) -> list[MxHost]:
    """Sort by preference, shuffling hosts of equal preference (RFC 5321 §5.1).

    A host listed more than once keeps only its most preferred entry.
    """
    best: dict[str, MxHost] = {}
    for record in records:
        key = record.host.lower()
        if key not in best or record.preference < best[key].preference:
            best[key] = record
    # RFC 5321 §5.1: MX preferences "MUST be used in sorting"; among equal preferences "the
    # sender-SMTP MUST randomize them to spread the load across multiple mail exchangers".
    ordered: list[MxHost] = []
    for preference in sorted({r.preference for r in best.values()}):
        group = [r for r in best.values() if r.preference == preference]
        rng.shuffle(group)
        ordered.extend(group)
    return ordered


# --- the dnspython implementation --------------------------------------------------------------


@dataclass
class DnsResolver:
    """`MailResolver` over `dns.asyncresolver`.

    `nameservers` as in `[dns] nameservers` (empty: the system resolver from /etc/resolv.conf),
    `timeout` bounds each whole lookup in seconds, `rng` orders MX hosts of equal preference and
    `prefer_ipv6` puts AAAA addresses before A addresses in `addresses()`.
    """

    nameservers: Sequence[str] = ()
    timeout: float = DEFAULT_TIMEOUT
    rng: random.Random = field(default_factory=random.Random)
    prefer_ipv6: bool = True
    _resolver: dns.asyncresolver.Resolver = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"DNS timeout must be positive, got {self.timeout!r}")
        servers = [parse_nameserver(spec) for spec in self.nameservers]
        resolver = dns.asyncresolver.Resolver(configure=not servers)
        if servers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in servers
            ]
        # `lifetime` bounds the whole lookup; each server gets at most PER_SERVER_TIMEOUT before
        # the next one (or a retry) is tried, so one dead server does not use up the lifetime.
        resolver.timeout = min(self.timeout, PER_SERVER_TIMEOUT)
        resolver.lifetime = self.timeout
        self._resolver = resolver

    # --- MX ------------------------------------------------------------------------------------

    async def mx_hosts(self, domain: str) -> MxResult:
        """The hosts to try for `domain`, in order (RFC 5321 §5.1)."""
        domain = domain.strip().rstrip(".")
        if not domain:
            raise NoSuchDomain("empty domain", name=domain)
        literal = parse_address_literal(domain)
        if literal is not None:
            # RFC 5321 §5.1: an address literal is the destination itself; no MX lookup.
            return MxResult(domain, domain, (MxHost(domain, 0),), literal=True)
        canonical, answer = await self._query(domain, dns.rdatatype.MX)
        records = [rdata for rdata in (answer or ()) if isinstance(rdata, MX)]
        if not records:
            # RFC 5321 §5.1: "If an empty list of MXs is returned, the address is treated as if
            # it was associated with an implicit MX RR, with a preference of 0, pointing to that
            # host" — the canonical name, as CNAMEs are followed ("processed as if it were the
            # initial domain"). Only when that host has an address: otherwise there is no route.
            if not await self._addresses(canonical):
                raise NoMailRoute(f"{domain}: no MX and no A/AAAA records", name=domain)
            return MxResult(domain, canonical, (MxHost(canonical, 0),), implicit=True)
        # RFC 7505 §3: a null MX is a single MX RR whose exchange is the root (a zero-length
        # label); RFC 7505 §4.1: the client MUST NOT attempt delivery to such a domain.
        hosts = [
            MxHost(_host_text(r.exchange), int(r.preference))
            for r in records
            if r.exchange != dns.name.root
        ]
        if not hosts:
            return MxResult(domain, canonical, null_mx=True)
        # RFC 7505 §3 forbids a null MX beside other MX records; such a "." entry names no host,
        # so it is dropped above and the real hosts are used.
        return MxResult(domain, canonical, tuple(order_mx(hosts, self.rng)))

    # --- addresses -----------------------------------------------------------------------------

    async def addresses(self, host: str) -> list[str]:
        """IPv6 and IPv4 addresses of `host` (or the address of an address literal).

        Raises NoSuchDomain on NXDOMAIN, NoMailRoute when the name has no A/AAAA records and
        DnsTemporaryError when neither lookup got an answer.
        """
        host = host.strip().rstrip(".")
        literal = parse_address_literal(host)
        if literal is not None:
            return [literal]
        if not host:
            raise NoSuchDomain("empty host name", name=host)
        found = await self._addresses(host)
        if not found:
            raise NoMailRoute(f"{host}: no A/AAAA records", name=host)
        return found

    async def _addresses(self, host: str) -> list[str]:
        """AAAA and A addresses, ordered per `prefer_ipv6`; [] when the name has none."""
        results = await asyncio.gather(
            self._query(host, dns.rdatatype.AAAA),
            self._query(host, dns.rdatatype.A),
            return_exceptions=True,
        )
        found: dict[str, list[str]] = {}
        errors: list[BaseException] = []
        for kind, result in zip(("AAAA", "A"), results, strict=True):
            if isinstance(result, BaseException):
                errors.append(result)
                continue
            _, answer = result
            found[kind] = [rdata.to_text() for rdata in (answer or ())]
        addresses_v6 = found.get("AAAA", [])
        addresses_v4 = found.get("A", [])
        ordered = addresses_v6 + addresses_v4 if self.prefer_ipv6 else addresses_v4 + addresses_v6
        if ordered:
            return ordered  # one family failing temporarily still leaves a usable address
        for error in errors:  # a permanent answer (NXDOMAIN) wins over a temporary one
            if isinstance(error, DnsPermanentError):
                raise error
        for error in errors:
            raise error
        return []

    # --- one query -----------------------------------------------------------------------------

    async def _query(
        self, name: str, rdtype: dns.rdatatype.RdataType
    ) -> tuple[str, dns.rrset.RRset | None]:
        """Resolve `name`/`rdtype`, following CNAMEs: (canonical name, rrset or None if empty).

        dnspython reads the CNAME chain of a response, but when the server returns only the
        chain (an authoritative server whose zone does not hold the target) the query is
        repeated for the canonical name, so the MX and address lookups are always made for it
        (RFC 5321 §5.1: a CNAME's target "is processed as if it were the initial domain").
        """
        current = name
        for _ in range(MAX_CNAME_HOPS):
            try:
                answer = await self._resolver.resolve(
                    current, rdtype, raise_on_no_answer=False, search=False
                )
            except dns.resolver.NXDOMAIN:
                raise NoSuchDomain(f"{current}: no such domain (NXDOMAIN)", name=name) from None
            except dns.resolver.LifetimeTimeout:
                raise DnsTemporaryError(
                    f"{current}: DNS lookup timed out after {self.timeout:g}s", name=name
                ) from None
            except dns.resolver.NoNameservers as error:
                raise DnsTemporaryError(
                    f"{current}: no nameserver answered ({error})", name=name
                ) from None
            except dns.exception.DNSException as error:
                raise DnsTemporaryError(f"{current}: DNS lookup failed ({error})", name=name) from (
                    None
                )
            canonical = _host_text(answer.canonical_name)
            if answer.rrset is not None or canonical.lower() == current.lower():
                return canonical, answer.rrset
            current = canonical
        raise DnsTemporaryError(f"{name}: CNAME chain longer than {MAX_CNAME_HOPS}", name=name)
