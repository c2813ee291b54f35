"""SPF: the check_host() function of RFC 7208 over a `DnsLookup`, and the MAIL FROM / HELO check
an SMTP server makes with it.

`check_host(lookup, ip, domain, sender, helo=...)` fetches the domain's one `v=spf1` TXT record,
parses all of it (any syntax error anywhere is a permerror, RFC 7208 §4.6), then evaluates its
mechanisms left to right (all, include, a, mx, ptr, ip4, ip6, exists, with CIDR and dual-CIDR
lengths), falls back to `redirect=`, and on a `fail` fetches the `exp=` explanation. Macros
(§7) are parsed once with the record and expanded on use. The processing limits of §4.6.4 hold
across includes and redirects: 10 DNS-querying terms, 2 void lookups, 10 MX names per `mx`, the
first 10 PTR names for `ptr` and `%{p}`, and a 20-second time limit; DNS failures
(`DnsTemporaryError`) give temperror. `verify_sender(...)` checks the MAIL FROM identity, or
`postmaster@HELO` for the empty reverse path (§2.4).

Records are untrusted: parsing splits on spaces and scans each term once (no regular
expressions), numbers are range-checked before conversion, and macro expansion output is bounded
(the DNS name a macro builds is cut to its rightmost 253 characters anyway, §7.3), so the work is
linear in the record's length. Nothing here does I/O except through the lookup it is given.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

from postroom.dns.lookup import Answer, DnsLookup, RecordType, normal_name, reverse_name
from postroom.dns.resolver import DnsTemporaryError

SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
Identity = Literal["mailfrom", "helo"]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_DNS_TERMS = 10  # RFC 7208 §4.6.4: include, a, mx, ptr, exists, redirect
MAX_VOID_LOOKUPS = 2  # RFC 7208 §4.6.4: answers with no records or NXDOMAIN
MAX_MX_NAMES = 10  # RFC 7208 §4.6.4: more MX records for one "mx" is a permerror
MAX_PTR_NAMES = 10  # RFC 7208 §4.6.4: PTR names past the first 10 are ignored
TIME_LIMIT = 20.0  # seconds; RFC 7208 §4.6.4 asks for a limit of at least 20 s
MAX_DOMAIN = 253  # RFC 7208 §4.3 / §7.3: octets in a domain name without the final dot
MAX_LABEL = 63  # RFC 1035 §2.3.4
MAX_EXPLANATION = 1024  # characters of an expanded exp= text we keep (it goes into a reply)
_DOMAIN_EXPANSION = 2 * MAX_DOMAIN  # enough of a name's right end to truncate it as §7.3 says

QUALIFIERS: dict[str, SpfResult] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset("0123456789")
_ALNUM = _ALPHA | _DIGITS
# RFC 7208 §12: name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
_NAME_CHARS = _ALNUM | frozenset("-_.")
_DELIMITERS = frozenset(".-+,/_=")  # RFC 7208 §7.1 delimiter
_DOMAIN_LETTERS = frozenset("slodiphv")  # RFC 7208 §7.2: c, r and t only in exp text
_EXP_LETTERS = frozenset("slodiphvcrt")
_HEX = _DIGITS | frozenset("abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    """What check_host() concluded about `domain` for one identity.

    `explanation` is the domain's exp= text (RFC 7208 §6.2), macro-expanded, for a `fail` whose
    record gave one that could be fetched; `reason` is a short text for logs: the mechanism that
    matched, or what went wrong.
    """

    result: SpfResult
    domain: str
    identity: Identity
    explanation: str | None = None
    reason: str = ""


class SpfSyntaxError(ValueError):
    """A record or macro string that does not follow RFC 7208's grammar (a permerror)."""


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MacroExpand:
    """One `%{...}` (RFC 7208 §7.1): letter, URL escaping (upper-case letter), how many
    right-hand parts to keep (0: all), reversal, and the delimiters to split on."""

    letter: str
    escape: bool
    keep: int
    reverse: bool
    delimiters: str


@dataclass(frozen=True, slots=True)
class MacroString:
    """A parsed macro-string: literal texts and `MacroExpand`s, in order."""

    tokens: tuple[str | MacroExpand, ...]
    tail: str  # the literal text after the last macro-expand (domain-end is checked on it)
    source: str


@dataclass(frozen=True, slots=True)
class Directive:
    """One mechanism with its qualifier (RFC 7208 §4.6.2, §5)."""

    qualifier: str
    mechanism: str
    domain: MacroString | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    cidr4: int = 32
    cidr6: int = 128
    text: str = ""


@dataclass(frozen=True, slots=True)
class SpfRecord:
    """A parsed `v=spf1` record: its directives in order, redirect= and exp= (RFC 7208 §6)."""

    directives: tuple[Directive, ...]
    redirect: MacroString | None = None
    explanation: MacroString | None = None


def is_spf_record(text: str) -> bool:
    """RFC 7208 §4.5: the version section is exactly "v=spf1" (any case), then a space or end."""
    return text[:6].lower() == "v=spf1" and (len(text) == 6 or text[6] == " ")


def parse_record(text: str) -> SpfRecord:
    """Parse a whole record (RFC 7208 §4.6, §12); SpfSyntaxError on any error anywhere."""
    if not is_spf_record(text):
        raise SpfSyntaxError("not a v=spf1 record")
    directives: list[Directive] = []
    redirect: MacroString | None = None
    explanation: MacroString | None = None
    # RFC 7208 §4.6.1: terms are separated by one or more spaces (SP only), trailing ones allowed.
    for term in text[6:].split(" "):
        if not term:
            continue
        modifier = _modifier_name(term)
        if modifier is None:
            directives.append(_parse_directive(term))
            continue
        name, value = modifier.lower(), term[len(modifier) + 1 :]
        if name in ("redirect", "exp"):
            # RFC 7208 §6: each of these at most once, else permerror.
            if (redirect if name == "redirect" else explanation) is not None:
                raise SpfSyntaxError(f"{name}= given twice")
            spec = _parse_domain_spec(value, _DOMAIN_LETTERS)
            if name == "redirect":
                redirect = spec
            else:
                explanation = spec
        else:
            # RFC 7208 §6: unknown modifiers are ignored, but must be valid macro-strings (§12).
            _parse_macro_string(value, _EXP_LETTERS, spaces=False)
    return SpfRecord(tuple(directives), redirect, explanation)


def _modifier_name(term: str) -> str | None:
    """The name of a modifier term (`name=...`), or None for a directive.

    A term is a modifier when it starts with a valid name followed by "=": the suite's (and
    mox's) non-greedy reading, so "redirect:x" and "moo.cow/x=y" are mechanisms (unknown ones).
    """
    if term[0] not in _ALPHA:
        return None
    i = 1
    while i < len(term) and term[i] in _NAME_CHARS:
        i += 1
    if i < len(term) and term[i] == "=":
        return term[:i]
    return None


def _parse_directive(term: str) -> Directive:
    qualifier = "+"
    body = term
    if body[0] in QUALIFIERS:  # RFC 7208 §4.6.2: the default qualifier is "+"
        qualifier, body = body[0], body[1:]
    end = 0
    while end < len(body) and body[end] not in ":/":
        end += 1
    name, arg = body[:end].lower(), body[end:]
    if name == "all":
        if arg:  # RFC 7208 §5.1: all takes no argument
            raise SpfSyntaxError(f"bad all mechanism: {term!r}")
        return Directive(qualifier, name, text=term)
    if name in ("include", "exists"):
        # RFC 7208 §5.2, §5.7: ":" domain-spec, required, no CIDR.
        if not arg.startswith(":"):
            raise SpfSyntaxError(f"{name} needs a domain: {term!r}")
        return Directive(qualifier, name, _parse_domain_spec(arg[1:], _DOMAIN_LETTERS), text=term)
    if name in ("a", "mx"):
        # RFC 7208 §5.3, §5.4: [ ":" domain-spec ] [ dual-cidr-length ]
        rest, cidr4, cidr6 = _split_dual_cidr(arg)
        domain = _optional_domain(rest, term)
        return Directive(qualifier, name, domain, cidr4=cidr4, cidr6=cidr6, text=term)
    if name == "ptr":
        return Directive(qualifier, name, _optional_domain(arg, term), text=term)  # §5.5
    if name in ("ip4", "ip6"):
        return Directive(qualifier, name, network=_parse_network(name, arg, term), text=term)
    raise SpfSyntaxError(f"unknown mechanism: {term!r}")  # RFC 7208 §5: unknown → permerror


def _optional_domain(arg: str, term: str) -> MacroString | None:
    if not arg:
        return None
    if arg[0] != ":":
        raise SpfSyntaxError(f"bad mechanism argument: {term!r}")
    return _parse_domain_spec(arg[1:], _DOMAIN_LETTERS)


def _cidr(digits: str, limit: int) -> int:
    """RFC 7208 §12: ip4-cidr-length "0" / %x31-39 0*1DIGIT (0-32), ip6 up to 128."""
    if not digits or not all(c in _DIGITS for c in digits):
        raise SpfSyntaxError(f"bad CIDR length: /{digits}")
    if len(digits) > 3 or (len(digits) > 1 and digits[0] == "0"):
        raise SpfSyntaxError(f"bad CIDR length: /{digits}")
    value = int(digits)
    if value > limit:
        raise SpfSyntaxError(f"CIDR length /{value} over {limit}")
    return value


def _split_dual_cidr(arg: str) -> tuple[str, int, int]:
    """Strip a trailing dual-cidr-length (RFC 7208 §5.6): "/n", "//m" or "/n//m"."""
    cidr4, cidr6 = 32, 128
    cut = arg.rfind("/")
    if cut < 0 or not _digits_only(arg[cut + 1 :]):
        return arg, cidr4, cidr6
    if cut > 0 and arg[cut - 1] == "/":
        cidr6 = _cidr(arg[cut + 1 :], 128)
        arg = arg[: cut - 1]
        cut = arg.rfind("/")
        if cut < 0 or not _digits_only(arg[cut + 1 :]):
            return arg, cidr4, cidr6
    cidr4 = _cidr(arg[cut + 1 :], 32)
    return arg[:cut], cidr4, cidr6


def _digits_only(text: str) -> bool:
    return bool(text) and all(c in _DIGITS for c in text)


def _parse_network(name: str, arg: str, term: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """RFC 7208 §5.6: "ip4:" ip4-network [ ip4-cidr-length ], "ip6:" likewise."""
    if not arg.startswith(":"):
        raise SpfSyntaxError(f"{name} needs an address: {term!r}")
    parts = arg[1:].split("/")
    if len(parts) > 2:  # no dual-cidr on ip4/ip6
        raise SpfSyntaxError(f"bad {name} CIDR: {term!r}")
    text = parts[0]
    try:
        if name == "ip4":
            if not text or not all(c in _DIGITS or c == "." for c in text):
                raise ValueError(text)
            # Python's parser rejects short forms and leading zeros (RFC 7208 §5.6 ¶4).
            address: Address = ipaddress.IPv4Address(text)
            length = _cidr(parts[1], 32) if len(parts) == 2 else 32
            return ipaddress.IPv4Network((address, length), strict=False)
        if not text or not all(c in _HEX or c in ":." for c in text):  # no %scope
            raise ValueError(text)
        address = ipaddress.IPv6Address(text)
        length = _cidr(parts[1], 128) if len(parts) == 2 else 128
        return ipaddress.IPv6Network((address, length), strict=False)
    except ValueError:
        raise SpfSyntaxError(f"bad {name} address: {term!r}") from None


def _parse_domain_spec(text: str, letters: frozenset[str]) -> MacroString:
    """RFC 7208 §7.1: domain-spec = macro-string domain-end; domain-end = ( "." toplabel
    [ "." ] ) / macro-expand. Checked before expansion, never after."""
    spec = _parse_macro_string(text, letters, spaces=False)
    if not spec.tokens:
        raise SpfSyntaxError("empty domain-spec")
    if not spec.tail:
        return spec  # ends in a macro-expand
    tail = spec.tail[:-1] if spec.tail.endswith(".") else spec.tail
    dot = tail.rfind(".")
    if dot < 0 or not _is_toplabel(tail[dot + 1 :]):
        raise SpfSyntaxError(f"domain-spec does not end in a valid top label: {text!r}")
    return spec


def _is_toplabel(label: str) -> bool:
    """RFC 7208 §7.1: toplabel = ( *alphanum ALPHA *alphanum ) /
    ( 1*alphanum "-" *( alphanum / "-" ) alphanum )."""
    if not label or not all(c in _ALNUM or c == "-" for c in label):
        return False
    if "-" in label:
        return label[0] in _ALNUM and label[-1] in _ALNUM
    return any(c in _ALPHA for c in label)


def _parse_macro_string(text: str, letters: frozenset[str], *, spaces: bool) -> MacroString:
    """RFC 7208 §7.1: macro-literal (visible ASCII except "%"; SP too in explanation text)
    and macro-expand ( "%{" letter transformers *delimiter "}" / "%%" / "%_" / "%-" )."""
    tokens: list[str | MacroExpand] = []
    literal: list[str] = []
    tail_start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != "%":
            if not ("\x21" <= c <= "\x7e" or (spaces and c == " ")):
                raise SpfSyntaxError(f"invalid character {c!r} in {text[:80]!r}")
            literal.append(c)
            i += 1
            continue
        following = text[i + 1] if i + 1 < n else ""
        if following in ("%", "_", "-"):  # RFC 7208 §7.1: the three escapes
            literal.append({"%": "%", "_": " ", "-": "%20"}[following])
            i += 2
            tail_start = i
            continue
        if following != "{":
            raise SpfSyntaxError(f"'%' not followed by '{{', '%', '_' or '-' in {text[:80]!r}")
        close = text.find("}", i + 2)
        if close < 0:
            raise SpfSyntaxError(f"unterminated macro in {text[:80]!r}")
        if literal:
            tokens.append("".join(literal))
            literal = []
        tokens.append(_parse_expand(text[i + 2 : close], letters))
        i = close + 1
        tail_start = i
    if literal:
        tokens.append("".join(literal))
    return MacroString(tuple(tokens), text[tail_start:], text)


def _parse_expand(body: str, letters: frozenset[str]) -> MacroExpand:
    """The inside of %{...}: macro-letter transformers *delimiter (RFC 7208 §7.1)."""
    if not body or body[0].lower() not in letters:
        raise SpfSyntaxError(f"invalid macro letter in %{{{body[:20]}}}")
    letter = body[0]
    i = 1
    while i < len(body) and body[i] in _DIGITS:
        i += 1
    digits = body[1:i]
    keep = 0
    if digits:
        # RFC 7208 §7.1: the DIGIT transformer, if given, is nonzero; a huge value keeps all.
        keep = int(digits) if len(digits) <= 3 else 1000
        if keep == 0:
            raise SpfSyntaxError("macro transformer 0")
    reverse = i < len(body) and body[i] in "rR"
    if reverse:
        i += 1
    delimiters = body[i:]
    if not all(c in _DELIMITERS for c in delimiters):
        raise SpfSyntaxError(f"invalid macro delimiters in %{{{body[:20]}}}")
    return MacroExpand(letter.lower(), letter.isupper(), keep, reverse, delimiters)


# --- names -----------------------------------------------------------------------------------


def _query_name(name: str) -> str | None:
    """The DNS name to ask for an expanded domain-spec, or None when no such name can exist
    (RFC 7208 §4.8 ¶5: empty or over-long labels are treated as non-existent)."""
    if name.endswith("."):
        name = name[:-1]  # §7.3: the trailing dot of a domain name is not part of it
    if len(name) > MAX_DOMAIN:
        # RFC 7208 §7.3: drop labels from the left until it fits in 253 characters.
        dot = name.find(".", len(name) - MAX_DOMAIN - 1)
        if dot < 0:
            return None
        name = name[dot + 1 :]
    if not name or not all("\x20" <= c <= "\x7e" for c in name):
        return None
    if any(not label or len(label) > MAX_LABEL for label in name.split(".")):
        return None
    return name


def _check_domain(domain: str) -> str | None:
    """RFC 7208 §4.3: a malformed domain (bad labels, not multi-label, a literal) gives
    "none" without any lookup. Returns the name to query (A-labels for U-labels) or None."""
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain.isascii():
        try:  # RFC 7208 §4.3 / RFC 6531: internationalized names are looked up as A-labels
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if not domain or len(domain) > MAX_DOMAIN or domain.startswith("["):
        return None
    if not all("\x21" <= c <= "\x7e" for c in domain):
        return None
    labels = domain.split(".")
    if len(labels) < 2 or any(not label or len(label) > MAX_LABEL for label in labels):
        return None
    return domain


def _client_address(ip: str) -> Address:
    address = ipaddress.ip_address(ip.strip())
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # RFC 7208 §5: an IPv4-mapped IPv6 address is an IPv4 connection.
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def _in_prefix(ip: Address, other: Address, bits: int) -> bool:
    if ip.version != other.version:
        return False
    width = ip.max_prefixlen
    return (int(ip) ^ int(other)) >> (width - bits) == 0


def _nibbles(address: Address) -> str:
    """RFC 7208 §7.3 %{i}: dotted quad, or 32 dot-separated hexadecimal nibbles for IPv6."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return ".".join(f"{int(address):032x}")


# --- evaluation ------------------------------------------------------------------------------


@dataclass
class _Check:
    """One check_host() run with its shared limits (they span includes and redirects)."""

    lookup: DnsLookup
    ip: Address
    sender: str
    local: str
    sender_domain: str
    helo: str
    receiver: str
    now: float
    dns_terms: int = 0
    voids: int = 0
    _ptr: tuple[str, ...] | None = None
    _validated: dict[str, bool] = field(default_factory=dict)

    async def evaluate(self, domain: str, *, explain: bool) -> tuple[SpfResult, str | None, str]:
        """check_host() for `domain` (RFC 7208 §4): (result, explanation, reason). Permanent
        and temporary errors raise _PermError/_TempError, which end the whole check."""
        try:
            answer = await self.lookup.query(domain, "TXT")  # RFC 7208 §4.4: TXT only
        except DnsTemporaryError as error:
            raise _TempError(f"DNS failure fetching the SPF record of {domain}: {error}") from None
        if answer.nxdomain:
            return "none", None, f"{domain} does not exist"  # RFC 7208 §4.3
        records = [text for text in answer.records if is_spf_record(text)]
        if not records:
            return "none", None, f"no SPF record at {domain}"  # RFC 7208 §4.5
        if len(records) > 1:
            raise _PermError(f"{len(records)} SPF records at {domain}")  # RFC 7208 §4.5
        try:
            record = parse_record(records[0])
        except SpfSyntaxError as error:
            raise _PermError(f"{domain}: {error}") from None
        for directive in record.directives:
            if await self._matches(directive, domain):
                result = QUALIFIERS[directive.qualifier]  # RFC 7208 §4.6.2
                explanation = None
                if result == "fail" and explain:
                    explanation = await self._explain(record, domain)
                return result, explanation, f"{directive.text} matched in {domain}"
        if record.redirect is not None:
            # RFC 7208 §6.1: only when no mechanism matched; the target's result is ours, and
            # so is its exp= (never the redirecting record's, §6.2).
            self._count_term()
            target = _query_name(await self._expand(record.redirect, domain))
            checked = _check_domain(target) if target is not None else None
            if checked is None:
                raise _PermError(f"{domain}: redirect to a malformed name")
            result, explanation, reason = await self.evaluate(checked, explain=explain)
            if result == "none":
                raise _PermError(f"{domain}: redirect to {checked}, which has no SPF record")
            return result, explanation, reason
        return "neutral", None, f"nothing matched in {domain}"  # RFC 7208 §4.7

    def _count_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:  # RFC 7208 §4.6.4
            raise _PermError(f"more than {MAX_DNS_TERMS} DNS-querying mechanisms")

    def _note(self, answer: Answer) -> None:
        if not answer.records:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:  # RFC 7208 §4.6.4
                raise _PermError(f"more than {MAX_VOID_LOOKUPS} void DNS lookups")

    async def _query(self, name: str, rtype: RecordType) -> Answer:
        try:
            return await self.lookup.query(name, rtype)
        except DnsTemporaryError as error:
            # RFC 7208 §5: a DNS error in a mechanism makes the whole check a temperror.
            raise _TempError(f"DNS failure for {name}/{rtype}: {error}") from None

    async def _target(self, directive: Directive, domain: str) -> str | None:
        if directive.domain is None:
            return domain
        return _query_name(await self._expand(directive.domain, domain))

    async def _matches(self, directive: Directive, domain: str) -> bool:
        mechanism = directive.mechanism
        if mechanism == "all":
            return True  # RFC 7208 §5.1
        if directive.network is not None:  # ip4/ip6, RFC 7208 §5.6
            network = directive.network
            return self.ip.version == network.version and self.ip in network
        self._count_term()
        target = await self._target(directive, domain)
        if mechanism == "include":
            # RFC 7208 §5.2: pass matches; fail, softfail, neutral do not; none is permerror.
            checked = _check_domain(target) if target is not None else None
            if checked is None:
                raise _PermError(f"include of a malformed name in {domain}")
            result, _, _ = await self.evaluate(checked, explain=False)
            if result == "none":
                raise _PermError(f"include:{checked} has no SPF record")
            return result == "pass"
        if target is None:
            return False  # a name that cannot exist matches nothing (§4.8 ¶5)
        if mechanism == "exists":
            answer = await self._query(target, "A")  # RFC 7208 §5.7: A, whatever the client
            self._note(answer)
            return bool(answer.records)
        bits = directive.cidr4 if self.ip.version == 4 else directive.cidr6
        if mechanism == "a":
            return self._ip_among(await self._addresses(target, void=True), bits)  # §5.3
        if mechanism == "mx":
            return await self._mx_matches(target, bits)
        return await self._ptr_matches(target)

    def _ip_among(self, addresses: list[Address], bits: int) -> bool:
        return any(_in_prefix(self.ip, address, bits) for address in addresses)

    async def _addresses(self, name: str, *, void: bool) -> list[Address]:
        """The A (IPv4 client) or AAAA (IPv6 client) addresses of a name (RFC 7208 §5)."""
        answer = await self._query(name, "A" if self.ip.version == 4 else "AAAA")
        if void:
            self._note(answer)
        addresses: list[Address] = []
        for text in answer.records:
            try:
                addresses.append(ipaddress.ip_address(text.strip()))
            except ValueError:
                continue
        return addresses

    async def _mx_matches(self, target: str, bits: int) -> bool:
        """RFC 7208 §5.4: the addresses of the target's MX hosts; no implicit MX."""
        answer = await self._query(target, "MX")
        self._note(answer)
        if len(answer.records) > MAX_MX_NAMES:  # RFC 7208 §4.6.4
            raise _PermError(f"{target} has more than {MAX_MX_NAMES} MX records")
        for text in answer.records:
            parts = text.split(None, 1)
            host = normal_name(parts[1]) if len(parts) == 2 else ""
            if not host:
                continue  # RFC 7505 null MX: no host
            name = _query_name(host)
            if name is not None and self._ip_among(await self._addresses(name, void=False), bits):
                return True
        return False

    async def _ptr_names(self, *, void: bool) -> tuple[str, ...]:
        """The client's first 10 PTR names; a DNS error gives none (RFC 7208 §5.5)."""
        if self._ptr is None:
            try:
                answer = await self.lookup.query(reverse_name(str(self.ip)), "PTR")
            except DnsTemporaryError:
                return ()
            self._ptr = tuple(normal_name(name) for name in answer.records[:MAX_PTR_NAMES])
        if void and not self._ptr:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise _PermError(f"more than {MAX_VOID_LOOKUPS} void DNS lookups")
        return self._ptr

    async def _validates(self, name: str) -> bool:
        """RFC 7208 §5.5: a PTR name is validated when one of its addresses is the client's;
        a DNS error on that lookup skips the name."""
        if name not in self._validated:
            checked = _query_name(name)
            try:
                found = checked is not None and self.ip in await self._addresses(
                    checked, void=False
                )
            except _TempError:
                found = False
            self._validated[name] = found
        return self._validated[name]

    async def _ptr_matches(self, target: str) -> bool:
        target = target.lower()
        for name in await self._ptr_names(void=True):
            if (name == target or name.endswith("." + target)) and await self._validates(name):
                return True
        return False

    async def _validated_name(self, domain: str) -> str:
        """RFC 7208 §7.3 %{p}: the domain itself if validated, else a validated subdomain of
        it, else any validated name, else "unknown"."""
        names = await self._ptr_names(void=False)
        domain = domain.lower()
        for wanted in (
            lambda name: name == domain,
            lambda name: name.endswith("." + domain),
            lambda name: True,
        ):
            for name in names:
                if wanted(name) and await self._validates(name):
                    return name
        return "unknown"

    async def _explain(self, record: SpfRecord, domain: str) -> str | None:
        """RFC 7208 §6.2: the exp= text; any problem (DNS, not exactly one record, bad
        syntax) means no explanation, never an error."""
        if record.explanation is None:
            return None
        try:
            name = _query_name(await self._expand(record.explanation, domain))
            if name is None:
                return None
            answer = await self.lookup.query(name, "TXT")
            if len(answer.records) != 1:
                return None
            text = _parse_macro_string(answer.records[0], _EXP_LETTERS, spaces=True)
            return await self._expand(text, domain, explanation=True)
        except (DnsTemporaryError, SpfSyntaxError, _TempError, _PermError):
            return None

    async def _expand(self, spec: MacroString, domain: str, *, explanation: bool = False) -> str:
        """RFC 7208 §7.3 macro expansion. Bounded: a domain name keeps its right end (enough
        to truncate it to 253 characters), an explanation its first MAX_EXPLANATION."""
        pieces: list[str] = []
        size = 0
        tokens = spec.tokens if explanation else tuple(reversed(spec.tokens))
        limit = MAX_EXPLANATION if explanation else _DOMAIN_EXPANSION
        for token in tokens:
            piece = token if isinstance(token, str) else await self._macro(token, domain)
            pieces.append(piece)
            size += len(piece)
            if size > limit:
                break
        if explanation:
            return "".join(pieces)[:MAX_EXPLANATION]
        return "".join(reversed(pieces))

    async def _macro(self, expand: MacroExpand, domain: str) -> str:
        letter = expand.letter
        if letter == "s":
            value = self.sender
        elif letter == "l":
            value = self.local
        elif letter == "o":
            value = self.sender_domain
        elif letter == "d":
            value = domain
        elif letter == "i":
            value = _nibbles(self.ip)
        elif letter == "p":
            value = await self._validated_name(domain)
        elif letter == "v":
            value = "in-addr" if self.ip.version == 4 else "ip6"
        elif letter == "h":
            value = self.helo
        elif letter == "c":
            value = str(self.ip)  # RFC 5952 form for IPv6
        elif letter == "r":
            value = self.receiver
        else:  # "t"
            value = str(int(self.now))
        if expand.keep or expand.reverse or expand.delimiters:
            # RFC 7208 §7.3: split on the delimiters ("." by default), reverse, keep the
            # right-hand parts, join with ".".
            parts = _split(value, expand.delimiters or ".")
            if expand.reverse:
                parts.reverse()
            if expand.keep and expand.keep < len(parts):
                parts = parts[-expand.keep :]
            value = ".".join(parts)
        if expand.escape:
            value = quote(value, safe="")  # RFC 7208 §7.3: URL-escape all but unreserved
        return value


def _split(value: str, delimiters: str) -> list[str]:
    parts: list[str] = []
    start = 0
    for i, c in enumerate(value):
        if c in delimiters:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


# --- entry points ----------------------------------------------------------------------------


async def check_host(
    lookup: DnsLookup,
    ip: str,
    domain: str,
    sender: str,
    *,
    helo: str,
    receiver: str = "unknown",
    now: float | None = None,
    identity: Identity = "mailfrom",
    time_limit: float = TIME_LIMIT,
) -> SpfOutcome:
    """RFC 7208 §4 check_host(<ip>, <domain>, <sender>). `helo` feeds %{h}, `receiver` %{r},
    `now` %{t}; `identity` only labels the outcome. ValueError if `ip` is not an address."""
    address = _client_address(ip)
    name = domain[:-1] if domain.endswith(".") else domain
    checked = _check_domain(name)
    if checked is None:
        return SpfOutcome("none", name.lower(), identity, reason=f"malformed domain {name!r}")
    local, at, sender_domain = sender.rpartition("@")
    if not at:
        local, sender_domain = "", sender
    if not local:
        local = "postmaster"  # RFC 7208 §4.3: no local-part → "postmaster"
    check = _Check(
        lookup,
        address,
        sender=f"{local}@{sender_domain}",
        local=local,
        sender_domain=sender_domain,
        helo=helo,
        receiver=receiver,
        now=time.time() if now is None else now,
    )
    try:
        async with asyncio.timeout(time_limit):  # RFC 7208 §4.6.4: elapsed time limit
            result, explanation, reason = await check.evaluate(checked, explain=True)
    except _PermError as error:
        return SpfOutcome("permerror", checked.lower(), identity, reason=str(error))
    except _TempError as error:
        return SpfOutcome("temperror", checked.lower(), identity, reason=str(error))
    except TimeoutError:
        return SpfOutcome(
            "temperror", checked.lower(), identity, reason=f"no result within {time_limit:g} s"
        )
    return SpfOutcome(result, checked.lower(), identity, explanation, reason)


async def verify_sender(
    lookup: DnsLookup,
    ip: str,
    mail_from: str,
    helo: str,
    *,
    receiver: str,
    now: float | None = None,
) -> SpfOutcome:
    """The SPF check of an SMTP transaction: the MAIL FROM identity (RFC 7208 §2.4), or for the
    empty reverse path the HELO identity as postmaster@HELO (§2.3, §2.4). `mail_from` is the
    bare address, without angle brackets."""
    if not mail_from:
        return await check_host(
            lookup,
            ip,
            helo,
            f"postmaster@{helo}",
            helo=helo,
            receiver=receiver,
            now=now,
            identity="helo",
        )
    _, at, domain = mail_from.rpartition("@")
    return await check_host(
        lookup,
        ip,
        domain if at else mail_from,
        mail_from,
        helo=helo,
        receiver=receiver,
        now=now,
        identity="mailfrom",
    )
