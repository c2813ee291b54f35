"""The DNS check of a local domain, as the web admin shows it: each record `postroom dns
records` prints (services/dns_records.py) next to what DNS publishes for it.

The expected records are the master-file lines `zone_lines` gives (parsed back with
dnspython, so the check compares against exactly what the operator was told to publish) plus
the host name's A/AAAA records, which only the operator knows. The published ones are asked
through a `DnsLookup` (the server's `[dns] nameservers`), every question at once, each asked
once per check, all within `CHECK_LIMIT` seconds; the lookups are dnspython's async resolver,
so the event loop is never blocked.

Each record gets a status: ok, mismatch, missing (nothing of its kind there), lookup-error (no
answer: SERVFAIL, timeout), a one-line detail and a one-line fix. The comparison is by meaning
where text would mislead: an MX may have another preference; TXT character-strings are joined
(RFC 6376 §3.6.2.2, RFC 7208 §3.3); SPF terms compare case-insensitively with "+" implied;
tag lists (DMARC, TLS-RPT, MTA-STS, DKIM) compare tag by tag in any order, extra tags
allowed; a DKIM record matches when its p= is the public half of the stored private key; an
SRV record by port and target; a web name by CNAME to the host name or by the host name's
addresses. What is shown of an answer is bounded (`MAX_SHOWN` records, `MAX_TEXT` characters
each).

`DnsChecks` keeps each domain's last check for `KEEP` seconds, so reloading a page asks DNS
again only after that; a check asked for by hand (`fresh`, an admin's CSRF-checked POST) asks
again at once, and concurrent asks for one domain share one check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.SRV import SRV

from postroom.dns.lookup import Answer, DnsLookup, RecordType, normal_name
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth.keys import Algorithm, public_of
from postroom.mailauth.taglist import TagListError, parse_tag_list
from postroom.services import dkim_keys
from postroom.services import dns_records as records
from postroom.services.dns_answers import dkim_tags, is_global, mx_host
from postroom.services.mta_sts_policy import ServedPolicy
from postroom.storage.records import DkimKey

Status = Literal["ok", "mismatch", "missing", "lookup-error"]
Kind = Literal["mx", "spf", "dkim", "dmarc", "tls-rpt", "mta-sts", "srv", "web", "address"]

CHECK_LIMIT = 10.0  # seconds all the questions of one check may take together
KEEP = 60.0  # seconds a domain's check is shown again before DNS is asked again
MAX_SHOWN = 16  # published records shown per row
MAX_TEXT = 1024  # characters shown of one published record

_TXT_KINDS: tuple[tuple[str, Kind], ...] = (
    ("v=spf1", "spf"),
    ("v=DKIM1", "dkim"),
    ("v=DMARC1", "dmarc"),
    ("v=TLSRPTv1", "tls-rpt"),
    ("v=STSv1", "mta-sts"),
)
_ADDRESS_TYPE = "A/AAAA"
_NO_KEYS = "(no DKIM keys)"


@dataclass(frozen=True, slots=True)
class Expected:
    """One record to publish: `value` in `dns.lookup.Answer`'s form, `line` as printed."""

    kind: Kind
    name: str
    rtype: str
    value: str
    line: str


@dataclass(frozen=True, slots=True)
class RecordCheck:
    """One row of the check."""

    kind: Kind
    name: str
    rtype: str
    expected: str
    published: tuple[str, ...]
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "name": self.name,
            "type": self.rtype,
            "expected": self.expected,
            "published": list(self.published),
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class DomainCheck:
    domain: str
    checked: float  # when (epoch seconds)
    records: tuple[RecordCheck, ...]

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.records)

    def to_json(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "checked": int(self.checked),
            "ok": self.ok,
            "records": [r.to_json() for r in self.records],
        }


@dataclass(frozen=True, slots=True)
class DomainRecords:
    """What a check compares against: the expected records, the public key each DKIM record
    name must carry (None when the stored private key cannot be read), the host name,
    whether mail leaves through a relay (its SPF terms may then be added), and each DKIM
    record's key as the page names it (state and algorithm)."""

    domain: str
    hostname: str
    expected: tuple[Expected, ...]
    dkim_public: Mapping[str, str | None]
    relay: bool
    dkim_keys: Mapping[str, str] = field(default_factory=dict)  # record name → "active rsa key"


# --- the expected records ------------------------------------------------------------------


def parse_line(line: str) -> Expected | None:
    """A record line of `zone_lines` ("NAME TTL IN TYPE RDATA", RFC 1035 §5.1); None for a
    comment or a blank line. A line for another zone is printed as a comment after "; (in its
    own zone) " and is expected all the same."""
    text = line.removeprefix("; (in its own zone) ")
    if not text.strip() or text.startswith(";"):
        return None
    name, _ttl, _class, rtype, rdata_text = text.split(None, 4)
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), rdata_text)
    kind: Kind
    if isinstance(rdata, TXT):
        # RFC 1035 §3.3.14: one record, its character-strings joined (as Answer gives them).
        value = b"".join(rdata.strings).decode("latin-1")
        kind = next((k for prefix, k in _TXT_KINDS if value.startswith(prefix)), "spf")
    elif isinstance(rdata, MX):
        value, kind = f"{rdata.preference} {_host(rdata.exchange)}", "mx"
    elif isinstance(rdata, SRV):
        value = f"{rdata.priority} {rdata.weight} {rdata.port} {_host(rdata.target)}"
        kind = "srv"
    elif isinstance(rdata, CNAME):
        value, kind = _host(rdata.target), "web"
    else:
        raise ValueError(f"no check for {rtype} records: {line!r}")
    return Expected(
        kind, normal_name(name), rtype, value, line.removeprefix("; (in its own zone) ")
    )


def _host(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def domain_records(
    domain: str,
    hostname: str,
    ports: Mapping[str, int],
    keys: Sequence[DkimKey],
    *,
    relay: str | None = None,
    mta_sts: ServedPolicy | None = None,
) -> DomainRecords:
    """The expected records of `domain` (the arguments are `zone_lines`'), the host name's
    addresses and each DKIM key's public half, derived from its private key."""
    lines = records.zone_lines(domain, hostname, ports, keys, relay=relay, mta_sts=mta_sts)
    expected = [e for e in map(parse_line, lines) if e is not None]
    host = normal_name(hostname)
    address = records.address_line(hostname, "<public address>")
    wanted = "the server's public addresses"
    expected.append(Expected("address", host, _ADDRESS_TYPE, wanted, address))
    if not keys:
        line = f"run `postroom dns records {domain}` (it makes keys) and publish its DKIM lines"
        expected.append(Expected("dkim", f"*._domainkey.{domain}", "TXT", _NO_KEYS, line))
    publics: dict[str, str | None] = {}
    states = {dkim_keys.record_name(k): f"{k.state} {k.algorithm} key" for k in keys}
    for key in keys:
        algorithm: Algorithm = "rsa" if key.algorithm == "rsa" else "ed25519"
        try:
            publics[dkim_keys.record_name(key)] = public_of(algorithm, key.private)
        except ValueError:
            publics[dkim_keys.record_name(key)] = None
    return DomainRecords(domain, host, tuple(expected), publics, relay is not None, states)


# --- comparing (pure) ----------------------------------------------------------------------

Verdict = tuple[Status, str]


def compare_mx(hostname: str, published: Sequence[str]) -> Verdict:
    """RFC 5321 §5.1: mail goes to the MX hosts; the preference of ours does not matter."""
    hosts = [mx_host(text) for text in published]
    if not hosts:
        return "missing", "no MX record"
    if any(host == "." for _, host in hosts):
        return "mismatch", "a null MX (RFC 7505): the domain accepts no mail"
    if any(host == hostname for _, host in hosts):
        others = sorted({host for _, host in hosts} - {hostname})
        return "ok", "MX names this host" + (f" (and {', '.join(others)})" if others else "")
    return "mismatch", f"the MX names {', '.join(sorted({h for _, h in hosts}))}, not {hostname}"


def spf_terms(text: str) -> list[str]:
    """The terms of an SPF record, lower case, "+" (the default qualifier, RFC 7208 §4.6.2)
    dropped; terms are separated by spaces (§4.6.1)."""
    return [term.lower().removeprefix("+") for term in text[6:].split(" ") if term]


def compare_spf(expected: str, published: Sequence[str], *, relay: bool = False) -> Verdict:
    found = [text for text in published if text[:6].lower() == "v=spf1"]
    if not found:
        return "missing", "no SPF record"
    if len(found) > 1:
        return "mismatch", f"{len(found)} SPF records: receivers take none (RFC 7208 §4.5)"
    want, have = spf_terms(expected), spf_terms(found[0])
    if want == have:
        return "ok", "the same terms"
    if relay and have and want[-1] == have[-1] and _in_order(want[:-1], have[:-1]):
        return "ok", "the expected terms, and the relay's"
    return "mismatch", f"terms {' '.join(have) or '(none)'}, expected {' '.join(want)}"


def _in_order(wanted: Sequence[str], have: Sequence[str]) -> bool:
    rest = iter(have)
    return all(term in rest for term in wanted)


def _tag_value(tag: str, value: str) -> object:
    """A tag's value for comparing: URI lists (rua, ruf) as sets, policies in lower case."""
    if tag in ("rua", "ruf"):
        return {uri.strip().lower() for uri in value.split(",") if uri.strip()}
    if tag in ("p", "sp", "adkim", "aspf"):
        return value.strip().lower()
    return value.strip()


def compare_tags(expected: str, published: Sequence[str]) -> Verdict:
    """A DMARC, TLS-RPT or MTA-STS record: exactly one record of the kind at the name (DMARCbis
    §4.10, RFC 8460 §3, RFC 8461 §3.1), carrying every expected tag with the same value; other
    tags may be there. The version tag is compared as written (case-sensitive)."""
    version = expected.split(";", 1)[0].replace(" ", "")
    found = [t for t in published if t.split(";", 1)[0].replace(" ", "") == version]
    if not found:
        return "missing", f"no {version} record"
    if len(found) > 1:
        return "mismatch", f"{len(found)} {version} records: receivers take none"
    want = parse_tag_list(expected)
    try:
        have = parse_tag_list(found[0])
    except TagListError as error:
        return "mismatch", f"not a tag list: {error}"
    wrong = [
        tag
        for tag, value in want.items()
        if tag not in have or _tag_value(tag, have[tag]) != _tag_value(tag, value)
    ]
    if wrong:
        shown = ", ".join(f"{t}={have[t]}" if t in have else f"no {t}=" for t in wrong)
        return "mismatch", f"{shown}; expected {', '.join(f'{t}={want[t]}' for t in wrong)}"
    return "ok", "the same tags"


def compare_dkim(expected: str, public: str | None, published: Sequence[str]) -> Verdict:
    """RFC 6376 §3.6.1: the record's p= is the public half of the private key that signs, and
    its k= (default rsa) names the key's algorithm. RFC 6376 §3.6.2.2: a name with several
    records gives verifiers any one of them."""
    if public is None:
        return "mismatch", "the stored private key cannot be read"
    keyed = [tags for tags in map(dkim_tags, published) if tags is not None]
    if not keyed:
        return "missing", "no DKIM key record" if not published else "no parseable DKIM record"
    want = parse_tag_list(expected)
    algorithm = want.get("k", "rsa").lower()
    for tags in keyed:
        if "".join(tags["p"].split()) == public and tags.get("k", "rsa").lower() == algorithm:
            if len(published) > 1:
                return "mismatch", f"{len(published)} TXT records: verifiers may read another"
            return "ok", "the published key is the stored one"
    tags = keyed[0]
    if not tags["p"].strip():
        return "mismatch", "the key is revoked (empty p=)"
    if tags.get("k", "rsa").lower() != algorithm:
        return "mismatch", f"k={tags.get('k', 'rsa')}, expected k={algorithm}"
    return "mismatch", "the published key (p=) is not the stored one"


def srv_fields(text: str) -> tuple[int, str] | None:
    """(port, target) of an SRV text "priority weight port target"; None when malformed."""
    parts = text.split()
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    return int(parts[2]), parts[3].lower().rstrip(".") or "."


def compare_srv(expected: str, published: Sequence[str]) -> Verdict:
    """RFC 2782 / RFC 6186 §3: clients connect to the target's port; priority and weight only
    order several records. A target of "." says the service is not offered (RFC 6186 §3.4)."""
    want = srv_fields(expected)
    have = [f for f in map(srv_fields, published) if f is not None]
    if not have:
        return "missing", "no SRV record"
    if want is not None and want[1] == ".":
        if any(target == "." for _, target in have):
            return "ok", "not offered, as expected"
        return "mismatch", "announces a service that is not offered here"
    if want in have:
        return "ok", "the same port and target"
    shown = ", ".join(f"{target}:{port}" for port, target in have)
    return "mismatch", f"points to {shown}" + (f", not {want[1]}:{want[0]}" if want else "")


def compare_web(
    hostname: str,
    cnames: Sequence[str],
    addresses: Sequence[str],
    host_addresses: Sequence[str],
) -> Verdict:
    """A web name (mta-sts., autoconfig., autodiscover.) reaches this server: a CNAME to the
    host name, or the host name's own addresses."""
    targets = [c.lower().rstrip(".") for c in cnames]
    if hostname in targets:
        return "ok", f"a CNAME to {hostname}"
    if targets:
        return "mismatch", f"a CNAME to {', '.join(targets)}, not {hostname}"
    if not addresses:
        return "missing", "neither a CNAME nor addresses"
    if host_addresses and set(addresses) == set(host_addresses):
        return "ok", f"the addresses of {hostname}"
    return "mismatch", f"addresses {', '.join(addresses)}, not those of {hostname}"


def compare_addresses(hostname: str, addresses: Sequence[str]) -> Verdict:
    """Other servers connect to the host name's A/AAAA addresses (RFC 5321 §5.1)."""
    if not addresses:
        return "missing", f"{hostname} has no A or AAAA record"
    private = [a for a in addresses if not is_global(a)]
    if private:
        return "mismatch", f"{', '.join(private)}: not a public address, unreachable from outside"
    return "ok", "public addresses"


def fix_for(expected: Expected, status: Status, config_path: str) -> str:
    """The one thing to do about a row."""
    if status == "ok":
        return ""
    if status == "lookup-error":
        return f"check that [dns] nameservers in {config_path} answer, then check again"
    if expected.value == _NO_KEYS:
        return expected.line
    if expected.kind == "address":
        return f"publish {expected.line} (and AAAA for IPv6)"
    if status == "missing":
        return f"publish {expected.line}"
    if expected.kind == "mx":
        return f"replace the MX records with {expected.line}"
    return f"replace the {expected.rtype} record at {expected.name} with {expected.line}"


def shown(texts: Sequence[str]) -> tuple[str, ...]:
    """What is shown of an answer: its first MAX_SHOWN records, each cut at MAX_TEXT."""
    return tuple(t if len(t) <= MAX_TEXT else t[:MAX_TEXT] + "..." for t in texts[:MAX_SHOWN])


# --- asking DNS ----------------------------------------------------------------------------


@dataclass
class _Questions:
    """Each (name, type) asked once per check, however many rows need it."""

    lookup: DnsLookup
    asked: dict[tuple[str, str], asyncio.Task[Answer]] = field(default_factory=dict)

    def answer(self, name: str, rtype: RecordType) -> asyncio.Task[Answer]:
        key = (normal_name(name), rtype)
        task = self.asked.get(key)
        if task is None:
            task = self.asked[key] = asyncio.ensure_future(self.lookup.query(*key))
        return task

    async def records(self, name: str, rtype: RecordType) -> tuple[str, ...]:
        return (await self.answer(name, rtype)).records

    def cancel(self) -> None:
        for task in self.asked.values():
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: the row that needed it may have been cancelled


async def _row(
    asks: _Questions, facts: DomainRecords, expected: Expected
) -> tuple[Verdict, tuple[str, ...]]:
    """(status, detail) and the published records of one expected record."""
    host = facts.hostname
    if expected.value == _NO_KEYS:
        return ("missing", "the domain has no DKIM keys: its mail goes out unsigned"), ()
    if expected.kind == "address":
        v4, v6 = await asyncio.gather(asks.records(host, "A"), asks.records(host, "AAAA"))
        return compare_addresses(host, [*v4, *v6]), (*v4, *v6)
    if expected.kind == "web":
        cnames = await asks.records(expected.name, "CNAME")
        if cnames:
            return compare_web(host, cnames, (), ()), cnames
        found = await asyncio.gather(
            asks.records(expected.name, "A"),
            asks.records(expected.name, "AAAA"),
            asks.records(host, "A"),
            asks.records(host, "AAAA"),
        )
        addresses = (*found[0], *found[1])
        return compare_web(host, (), addresses, (*found[2], *found[3])), addresses
    if expected.kind == "mx":
        published = await asks.records(expected.name, "MX")
        return compare_mx(host, published), published
    if expected.kind == "srv":
        published = await asks.records(expected.name, "SRV")
        return compare_srv(expected.value, published), published
    published = await asks.records(expected.name, "TXT")
    if expected.kind == "spf":
        return compare_spf(expected.value, published, relay=facts.relay), published
    if expected.kind == "dkim":
        status, detail = compare_dkim(
            expected.value, facts.dkim_public.get(expected.name), published
        )
        return (status, f"{facts.dkim_keys.get(expected.name, 'key')}: {detail}"), published
    return compare_tags(expected.value, published), published


async def check_domain(
    lookup: DnsLookup,
    facts: DomainRecords,
    *,
    config_path: str,
    limit: float = CHECK_LIMIT,
    now: Callable[[], float] = time.time,
) -> DomainCheck:
    """Every expected record of `facts` against DNS, all at once within `limit` seconds."""
    asks = _Questions(lookup)
    rows = [asyncio.ensure_future(_row(asks, facts, e)) for e in facts.expected]
    try:
        await asyncio.wait(rows, timeout=limit)
    finally:
        for row in rows:
            row.cancel()
        asks.cancel()
    checks = []
    for expected, row in zip(facts.expected, rows, strict=True):
        published: tuple[str, ...] = ()
        if not row.done() or row.cancelled():
            status: Status = "lookup-error"
            detail = f"no answer within {limit:g} s"
        elif isinstance(row.exception(), DnsTemporaryError):
            status, detail = "lookup-error", f"DNS gave no answer: {row.exception()}"
        else:
            (status, detail), published = row.result()
        checks.append(
            RecordCheck(
                expected.kind,
                expected.name,
                expected.rtype,
                expected.value,
                shown(published),
                status,
                detail,
                fix_for(expected, status, config_path),
            )
        )
    return DomainCheck(facts.domain, now(), tuple(checks))


class DnsChecks:
    """Each domain's last check, kept `keep` seconds; one check at a time per domain."""

    def __init__(
        self,
        lookup: DnsLookup,
        config_path: str,
        *,
        keep: float = KEEP,
        limit: float = CHECK_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.config_path = config_path
        self.keep = keep
        self.limit = limit
        self.clock = clock
        self._kept: dict[str, tuple[float, DomainCheck]] = {}
        self._running: dict[str, asyncio.Task[DomainCheck]] = {}

    async def check(
        self,
        domain: str,
        facts: Callable[[], Awaitable[DomainRecords]],
        *,
        fresh: bool = False,
    ) -> DomainCheck:
        """The domain's check: the kept one while it is young enough, else a new one (`facts`
        gives what to compare against). The caller names only local domains."""
        now = self.clock()
        kept = self._kept.get(domain)
        if kept is not None and not fresh and now - kept[0] < self.keep:
            return kept[1]
        running = self._running.get(domain)
        if running is None:
            running = self._running[domain] = asyncio.ensure_future(self._run(domain, facts))
            running.add_done_callback(lambda _: self._running.pop(domain, None))
        return await asyncio.shield(running)

    async def _run(self, domain: str, facts: Callable[[], Awaitable[DomainRecords]]) -> DomainCheck:
        found = await check_domain(
            self.lookup, await facts(), config_path=self.config_path, limit=self.limit
        )
        self._kept[domain] = (self.clock(), found)
        return found
