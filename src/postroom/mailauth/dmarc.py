"""DMARC as DMARCbis (draft-ietf-dmarc-dmarcbis-41, now RFC 9989) defines it: the policy
record, its discovery and the Organizational Domain by the DNS Tree Walk (no public suffix
list), identifier alignment, and the policy a failing message is subject to.

- `parse_record` reads a DMARC policy record (§4.7, §4.8); `DmarcRecordError` when it is not
  one, or when its policy is unusable and it names no report address (§4.10.1).
- `discover` finds the record that applies to an Author Domain (§4.10.1) and whether p, sp or
  np applies; `organizational_domain` runs the Tree Walk for alignment (§4.10.2).
- `evaluate` gives the DMARC result of a message from its Author Domain and the SPF and DKIM
  results, with the policy to apply (t=y, and RFC 7489's pct, taken into account).
- `from_domains` extracts the Author Domain from a header section (§4.9.1), telling apart the
  messages DMARC cannot evaluate (no From, several From fields, no domain).
- `report_destinations` applies the external destination verification of the aggregate
  reporting draft (§3 of draft-ietf-dmarc-aggregate-reporting, RFC 9990) to a record's rua.

All DNS goes through a `DnsLookup`; a temporary failure raises `DnsTemporaryError` from the
lookup functions and gives the result "temperror" from `evaluate`. Parsing is linear in the
input: records are split on separators, never matched with backtracking expressions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import unquote

from postroom.dns.lookup import DnsLookup, RecordType, normal_name
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth.message_fields import split_header
from postroom.proto.imap.address import MISSING_DOMAIN, parse_addresses

PolicyName = Literal["none", "quarantine", "reject"]
Alignment = Literal["r", "s"]
PsdFlag = Literal["y", "n", "u"]
ResultName = Literal["pass", "fail", "none", "temperror", "permerror"]
Applies = Literal["p", "sp", "np"]

_POLICIES: dict[str, PolicyName] = {"none": "none", "quarantine": "quarantine", "reject": "reject"}
_ALIGNMENT: dict[str, Alignment] = {"r": "r", "s": "s"}
_PSD: dict[str, PsdFlag] = {"y": "y", "n": "n", "u": "u"}
_ONE_LEVEL_DOWN: dict[PolicyName, PolicyName] = {
    "reject": "quarantine",
    "quarantine": "none",
    "none": "none",
}

WALK_QUERY_LIMIT = 8  # DMARCbis §4.10: at most eight queries per Tree Walk
MAX_URIS = 10  # rua/ruf URIs kept per tag (RFC 7489 §6.2 asks for at least two)
MAX_DKIM_DOMAINS = 10  # distinct passing d= domains checked for alignment per message
MAX_NAME = 253  # RFC 1035 §2.3.4, without the final dot


class DmarcRecordError(ValueError):
    """A TXT record that is not a usable DMARC policy record."""


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A DMARC policy record (DMARCbis §4.7); absent tags have their defaults."""

    p: PolicyName
    sp: PolicyName | None = None
    np: PolicyName | None = None
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    pct: int = 100  # RFC 7489 §6.3; DMARCbis removed it (Appendix C.5): parsed and kept
    t: bool = False  # DMARCbis §4.7 testing flag
    psd: PsdFlag = "u"
    rua: tuple[str, ...] = ()  # mailto: URIs, without RFC 7489's "!size" suffix
    ruf: tuple[str, ...] = ()
    fo: str = "0"

    def policy_for(self, applies: Applies) -> PolicyName:
        """The Domain Owner Assessment Policy of p, sp or np, with DMARCbis §4.7 fallbacks: np
        falls back to sp, sp to p."""
        if applies == "np":
            return self.np or self.sp or self.p
        if applies == "sp":
            return self.sp or self.p
        return self.p


# -- the record ----------------------------------------------------------------------------


def _tags(text: str) -> list[tuple[str, str]]:
    """The tag=value pairs of a record, in order; pieces that are no tag are left out."""
    pairs: list[tuple[str, str]] = []
    for piece in text.split(";"):  # DMARCbis §4.8 dmarc-sep = *WSP ";" *WSP
        name, equals, value = piece.partition("=")
        if not equals:
            continue
        pairs.append((name.strip(" \t"), value.strip(" \t")))
    return pairs


def is_dmarc_record(text: str) -> bool:
    """Whether the record starts with the tag v=DMARC1 (DMARCbis §4.7: case-sensitive, first)."""
    first, _, _ = text.partition(";")
    name, equals, value = first.partition("=")
    return bool(equals) and name.strip(" \t") == "v" and value.strip(" \t") == "DMARC1"


def parse_record(text: str) -> DmarcRecord:
    """Read a DMARC policy record. Unknown tags are ignored and invalid values of the optional
    tags replaced by their defaults (DMARCbis §4.7); an invalid or missing p, or an invalid sp
    or np, makes the record p=none if it names a valid report URI, else unusable (§4.10.1)."""
    record, problem = _parse(text)
    if problem is not None:
        raise DmarcRecordError(problem)
    return record


def _parse(text: str) -> tuple[DmarcRecord, str | None]:
    """The record and, when its policy is unusable, why (the record then says p=none)."""
    if not is_dmarc_record(text):
        raise DmarcRecordError("not a DMARC record: the first tag must be v=DMARC1")
    seen: dict[str, str] = {}
    for name, value in _tags(text)[1:]:
        seen.setdefault(name.lower(), value)  # the first of repeated tags counts
    problem: str | None = None
    p = _POLICIES.get(seen.get("p", "").lower())
    if p is None:
        problem = "missing p= tag" if "p" not in seen else f"invalid p={seen['p'][:40]}"
    sp: PolicyName | None = None
    np: PolicyName | None = None
    for tag in ("sp", "np"):
        if tag in seen:
            policy = _POLICIES.get(seen[tag].lower())
            if policy is None:
                problem = problem or f"invalid {tag}={seen[tag][:40]}"
            elif tag == "sp":
                sp = policy
            else:
                np = policy
    rua, rua_valid = _uri_list(seen.get("rua", ""))
    ruf, _ = _uri_list(seen.get("ruf", ""))
    record = DmarcRecord(
        p=p or "none",
        sp=sp,
        np=np,
        adkim=_ALIGNMENT.get(seen.get("adkim", "").lower(), "r"),
        aspf=_ALIGNMENT.get(seen.get("aspf", "").lower(), "r"),
        pct=_percent(seen.get("pct", "")),
        t=seen.get("t", "").lower() == "y",
        psd=_PSD.get(seen.get("psd", "").lower(), "u"),
        rua=rua,
        ruf=ruf,
        fo=_failure_options(seen.get("fo", "")),
    )
    if problem is None:
        return record, None
    # DMARCbis §4.10.1: with at least one valid rua URI, act as if the record said p=none.
    if rua_valid:
        return replace(record, p="none", sp=None, np=None), None
    return record, problem


def _percent(value: str) -> int:
    # RFC 7489 §6.3: pct is an integer 0-100, default 100
    if not value.isascii() or not value.isdigit() or len(value) > 3:
        return 100
    number = int(value)
    return number if number <= 100 else 100


def _failure_options(value: str) -> str:
    # DMARCbis §4.8 dmarc-fo: colon-separated 0, 1, d, s; anything else means the default
    options = [option.strip(" \t").lower() for option in value.split(":")]
    if not value or any(option not in ("0", "1", "d", "s") for option in options):
        return "0"
    return ":".join(dict.fromkeys(options))


def _uri_list(value: str) -> tuple[tuple[str, ...], bool]:
    """The mailto: URIs of a rua/ruf list (size suffix dropped) and whether any URI of any
    scheme in it is syntactically valid."""
    uris: list[str] = []
    any_valid = False
    for raw in value.split(","):  # DMARCbis §4.8: dmarc-urilist, commas between URIs
        uri = raw.strip(" \t")
        bang = uri.rfind("!")
        if bang > 0 and _is_size(uri[bang + 1 :]):
            uri = uri[:bang]  # RFC 7489 §6.4: "!" size limit; DMARCbis §C.4 dropped it
        scheme, colon, rest = uri.partition(":")
        if not colon or not _is_scheme(scheme) or not rest or not _printable(rest):
            continue
        any_valid = True
        if scheme.lower() == "mailto" and len(uris) < MAX_URIS and _mailto_ok(rest):
            uris.append("mailto:" + rest)
    return tuple(uris), any_valid


def _is_size(text: str) -> bool:
    digits = text[:-1] if text[-1:].lower() in ("k", "m", "g", "t") else text
    return digits.isascii() and digits.isdigit() and len(digits) <= 20


def _is_scheme(text: str) -> bool:
    # RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    return text.isascii() and text[:1].isalpha() and all(c.isalnum() or c in "+-." for c in text)


def _printable(text: str) -> bool:
    return all(" " < c < "\x7f" for c in text)


def _mailto_ok(rest: str) -> bool:
    return bool(mailto_addresses(("mailto:" + rest,)))


def mailto_addresses(uris: Sequence[str]) -> tuple[str, ...]:
    """The mail addresses of mailto: URIs (RFC 6068: percent-decoded, headers dropped)."""
    addresses: list[str] = []
    for uri in uris:
        scheme, _, rest = uri.partition(":")
        if scheme.lower() != "mailto":
            continue
        target = unquote(rest.partition("?")[0])
        for address in target.split(","):
            local, at, domain = address.strip().rpartition("@")
            # Percent-decoding may yield any octet: a control character or space in the local
            # part (a CR LF smuggling a command) makes the address unusable.
            if any(ord(c) <= 32 or ord(c) == 127 for c in local):
                continue
            if at and local and _valid_domain(domain.lower().rstrip(".")):
                addresses.append(f"{local}@{domain.lower().rstrip('.')}")
    return tuple(addresses)


# -- DNS: the Tree Walk --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    domain: str
    text: str
    psd: PsdFlag


class _Walker:
    """The DMARC records of the names asked, each name asked once per evaluation."""

    def __init__(self, lookup: DnsLookup) -> None:
        self.lookup = lookup
        self._records: dict[str, _Found | None] = {}
        self._exists: dict[str, bool] = {}

    async def record_at(self, domain: str) -> _Found | None:
        if domain in self._records:
            return self._records[domain]
        found: _Found | None = None
        name = "_dmarc." + domain
        if len(name) <= MAX_NAME:
            answer = await self.lookup.query(name, "TXT")
            texts = [text for text in answer.records if is_dmarc_record(text)]
            # DMARCbis §4.10 steps 2 and 6: several records at one name are all discarded
            if len(texts) == 1:
                psd = _PSD.get(dict(_lower_tags(texts[0])).get("psd", "").lower(), "u")
                found = _Found(domain, texts[0], psd)
        self._records[domain] = found
        return found

    async def walk(self, start: str, *, include_start: bool) -> list[_Found]:
        """DMARCbis §4.10: the records found from `start` up, longest name first, stopping at
        a record with psd=y or psd=n; at most eight queries whatever the number of labels."""
        found: list[_Found] = []
        targets = ([start] if include_start else []) + _parents(start)
        for target in targets:
            record = await self.record_at(target)
            if record is None:
                continue
            found.append(record)
            if record.psd in ("y", "n"):
                break
        return found

    async def exists(self, domain: str) -> bool:
        """DMARCbis §4.3.6 and Appendix A.4: a name exists unless the DNS says NXDOMAIN (RFC
        8020); asked for A, AAAA and MX, as RFC 9091 did, so one odd server is not believed."""
        if domain in self._exists:
            return self._exists[domain]
        result = False
        rtypes: tuple[RecordType, ...] = ("A", "AAAA", "MX")
        for rtype in rtypes:
            answer = await self.lookup.query(domain, rtype)
            if not answer.nxdomain:
                result = True
                break
        self._exists[domain] = result
        return result

    async def organizational_domain(self, domain: str) -> str:
        return _select_organizational(domain, await self.walk(domain, include_start=True))


def _lower_tags(text: str) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in _tags(text)]


def _parents(domain: str) -> list[str]:
    """DMARCbis §4.10 steps 3, 4 and 7: the targets after the first query, shortened to seven
    labels when the name has eight or more, then one label less each time."""
    labels = domain.split(".")
    first = min(len(labels) - 1, WALK_QUERY_LIMIT - 1)
    return [".".join(labels[-count:]) for count in range(first, 0, -1)]


def _select_organizational(start: str, found: list[_Found]) -> str:
    """DMARCbis §4.10.2: from the longest name to the shortest, psd=n marks the Organizational
    Domain, psd=y (not at the start) the name one label below it; otherwise the record with the
    fewest labels; with none, the start itself."""
    labels = start.split(".")
    for record in found:
        if record.psd == "n":
            return record.domain
        if record.psd == "y" and record.domain != start:
            below = record.domain.count(".") + 2
            return ".".join(labels[-below:])
    if found:
        return found[-1].domain
    return start


@dataclass(frozen=True, slots=True)
class Policy:
    """The DMARC record that applies to an Author Domain: where it was found and which of its
    policies (p for the domain itself, sp for an existing subdomain, np for one that does not
    exist) applies."""

    record: DmarcRecord
    domain: str
    applies: Applies

    @property
    def requested(self) -> PolicyName:
        return self.record.policy_for(self.applies)


async def discover(lookup: DnsLookup, from_domain: str) -> Policy | None:
    """DMARCbis §4.10.1: the record of the Author Domain, else that of its Organizational
    Domain or Public Suffix Domain found by the Tree Walk; None when there is none.
    Raises DmarcRecordError when the record that applies is unusable (invalid p and no valid
    rua: no DMARC processing), DnsTemporaryError when the DNS fails."""
    return await _discover(_Walker(lookup), _checked_domain(from_domain))


async def _discover(walker: _Walker, author: str) -> Policy | None:
    own = await walker.record_at(author)
    if own is not None:
        return Policy(parse_record(own.text), author, "p")
    found = await walker.walk(author, include_start=False)
    if not found:
        return None  # DMARCbis §4.10.1: no record, DMARC does not apply
    organizational = _select_organizational(author, found)
    chosen = next((r for r in found if r.domain == organizational), None)
    if chosen is None:  # the Organizational Domain has no record: the PSD's applies
        chosen = next((r for r in found if r.psd == "y"), found[-1])
    record = parse_record(chosen.text)
    applies: Applies = "sp"
    # DMARCbis §4.10.1: sp for an Author Domain that exists, np for one that does not; the
    # existence question is asked only when the answer changes the policy.
    if record.np is not None and record.np != record.policy_for("sp"):
        applies = "sp" if await walker.exists(author) else "np"
    return Policy(record, chosen.domain, applies)


async def organizational_domain(lookup: DnsLookup, domain: str) -> str:
    """DMARCbis §4.10.2: the Organizational Domain of `domain` by the DNS Tree Walk."""
    return await _Walker(lookup).organizational_domain(_checked_domain(domain))


def _checked_domain(domain: str) -> str:
    name = normal_name(domain)
    if not _valid_domain(name):
        raise DmarcRecordError(f"not a domain name: {domain[:80]!r}")
    return name


def _valid_domain(name: str) -> bool:
    """A name DNS can be asked about: ASCII labels of 1-63 letters, digits, '-' or '_'."""
    if not name or len(name) > MAX_NAME or not name.isascii():
        return False
    for label in name.split("."):
        if not label or len(label) > 63:
            return False
        if not all(c.isalnum() or c in "-_" for c in label):
            return False
    return True


# -- evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DmarcOutcome:
    """The DMARC verdict on one message.

    `policy` is what to apply: the requested policy (`requested`, from p, sp or np) when the
    result is fail, one level lower under t=y (DMARCbis §4.7) or when RFC 7489's pct sampled the
    message out, "none" for any other result. `override` names the aggregate-report reason when
    `policy` differs from `requested` ("policy_test_mode" or "sampled_out").
    """

    result: ResultName
    policy: PolicyName
    policy_domain: str | None
    record: DmarcRecord | None
    spf_aligned: bool
    dkim_aligned: bool
    reason: str
    requested: PolicyName = "none"
    applies: Applies | None = None
    override: str | None = None


async def evaluate(
    lookup: DnsLookup,
    from_domain: str,
    *,
    spf: tuple[str, str] | None,
    dkim: Sequence[tuple[str, str]],
    sample: Callable[[], float] = random.random,
) -> DmarcOutcome:
    """The DMARC result of a message whose Author Domain is `from_domain`, given its SPF result
    as (result, domain of the MAIL FROM identity) and its DKIM results as [(result, d=)].
    `sample` draws a number in [0, 1) for RFC 7489's pct (tests pass a fixed one)."""
    try:
        author = _checked_domain(from_domain)
    except DmarcRecordError as error:
        return _outcome("permerror", str(error))
    walker = _Walker(lookup)
    try:
        policy = await _discover(walker, author)
    except DnsTemporaryError as error:
        return _outcome("temperror", f"DMARC record lookup failed: {error}")
    except DmarcRecordError as error:
        return _outcome("permerror", f"unusable DMARC record: {error}")
    if policy is None:
        return _outcome("none", f"no DMARC record for {author}")
    record = policy.record
    spf_ids = [spf[1]] if spf is not None and spf[0].lower() == "pass" else []
    dkim_ids = list(dict.fromkeys(normal_name(d) for r, d in dkim if r.lower() == "pass"))
    temporary: list[str] = []
    spf_aligned = await _any_aligned(walker, author, spf_ids, record.aspf, temporary)
    dkim_aligned = await _any_aligned(
        walker, author, dkim_ids[:MAX_DKIM_DOMAINS], record.adkim, temporary
    )

    def outcome(
        result: ResultName, applied: PolicyName, reason: str, override: str | None = None
    ) -> DmarcOutcome:
        return DmarcOutcome(
            result,
            applied,
            policy.domain,
            record,
            spf_aligned,
            dkim_aligned,
            reason,
            requested=policy.requested,
            applies=policy.applies,
            override=override,
        )

    if spf_aligned or dkim_aligned:
        # DMARCbis §4.9.5: one aligned authenticated identifier is a pass
        which = " and ".join(n for n, ok in (("SPF", spf_aligned), ("DKIM", dkim_aligned)) if ok)
        return outcome("pass", "none", f"{which} aligned with {author}")
    if temporary:
        # DMARCbis §4.9.6: a DNS error leaves the message neither passing nor failing
        return outcome("temperror", "none", f"alignment lookup failed: {temporary[0]}")
    requested = policy.requested
    applied, override = _applied(record, requested, sample)
    reason = f"no aligned identifier; {policy.applies}={requested} at {policy.domain}"
    if override == "policy_test_mode":
        reason += f" (t=y: {applied})"
    elif override == "sampled_out":
        reason += f" (pct={record.pct}: {applied})"
    return outcome("fail", applied, reason, override)


def _outcome(result: ResultName, reason: str) -> DmarcOutcome:
    return DmarcOutcome(result, "none", None, None, False, False, reason)


def _applied(
    record: DmarcRecord, requested: PolicyName, sample: Callable[[], float]
) -> tuple[PolicyName, str | None]:
    if requested == "none":
        return "none", None
    # DMARCbis §4.7 t=y, and §C.5: pct=0 meant the same; the policy one level lower applies
    if record.t or record.pct == 0:
        return _ONE_LEVEL_DOWN[requested], "policy_test_mode"
    # RFC 7489 §6.6.4: pct<100 applies the policy to that share of failing messages and the
    # next lower one to the rest
    if record.pct < 100 and sample() * 100 >= record.pct:
        return _ONE_LEVEL_DOWN[requested], "sampled_out"
    return requested, None


async def _any_aligned(
    walker: _Walker, author: str, identifiers: Sequence[str], mode: Alignment, temporary: list[str]
) -> bool:
    for identifier in identifiers:
        try:
            if await _aligned(walker, author, identifier, mode):
                return True
        except DnsTemporaryError as error:
            temporary.append(str(error))
    return False


async def _aligned(walker: _Walker, author: str, identifier: str, mode: Alignment) -> bool:
    """DMARCbis §4.4: strict, the names are identical; relaxed, their Organizational Domains
    (by the Tree Walk) are."""
    name = normal_name(identifier)
    if name == author:
        return True
    if mode == "s" or not _valid_domain(name):
        return False
    if name.rpartition(".")[2] != author.rpartition(".")[2]:
        return False  # no common label at the top: no Organizational Domain in common
    return await walker.organizational_domain(name) == await walker.organizational_domain(author)


# -- the Author Domain ---------------------------------------------------------------------

FromProblem = Literal["missing", "multiple", "no-domain", "invalid-domain"]


@dataclass(frozen=True, slots=True)
class FromError:
    """Why a message has no single usable RFC5322.From domain (DMARCbis §4.9.1)."""

    kind: FromProblem
    detail: str


def from_domains(header_block: bytes) -> list[str] | FromError:
    """The distinct domains of the From field (lower case, A-labels), or why there are none.

    A message without From or with several From fields (RFC 5322 §3.6 allows exactly one) is a
    FromError; so is a From without any address with a domain. A From with several addresses
    gives each distinct domain: more than one is a message DMARC cannot evaluate (§4.9.1), which
    the caller may reject, or evaluate for each domain.
    """
    fields, _ = split_header(header_block)
    values = [f.value(header_block) for f in fields if f.name == "from"]
    if not values:
        return FromError("missing", "the message has no From field")
    if len(values) > 1:
        return FromError("multiple", f"the message has {len(values)} From fields")
    domains: list[str] = []
    for address in parse_addresses(values[0]):
        if address.host is None:
            continue  # a group's start or end marker
        if address.host == MISSING_DOMAIN:
            return FromError("no-domain", "a From address has no domain")
        domain = _a_label(address.host)
        if domain is None:
            shown = address.host[:80].decode("utf-8", "replace")
            return FromError("invalid-domain", f"not a domain name: {shown!r}")
        if domain not in domains:
            domains.append(domain)
    if not domains:
        return FromError("no-domain", "the From field holds no address")
    return domains


def _a_label(host: bytes) -> str | None:
    """DMARCbis §4.9.1: a U-label domain is converted to its A-label form (IDNA)."""
    try:
        text = host.decode("utf-8").strip().rstrip(".").lower()
    except UnicodeDecodeError:
        return None
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")  # stdlib IDNA (RFC 3490 ToASCII)
        except UnicodeError:
            return None
    return text if _valid_domain(text) else None


# -- external report destinations ----------------------------------------------------------


async def report_destinations(
    lookup: DnsLookup, policy_domain: str, uris: Sequence[str]
) -> tuple[str, ...]:
    """The addresses aggregate reports for `policy_domain` may go to, from its record's rua
    URIs: those in the same Organizational Domain as-is, the others only when the destination
    publishes `<policy_domain>._report._dmarc.<host>` (aggregate reporting §3), whose own rua,
    if any, overrides the address when it stays on the same host. Raises DnsTemporaryError."""
    walker = _Walker(lookup)
    domain = _checked_domain(policy_domain)
    own = await walker.organizational_domain(domain)
    destinations: list[str] = []
    for address in mailto_addresses(uris):
        host = address.rpartition("@")[2]
        if await walker.organizational_domain(host) == own:
            destinations.append(address)
            continue
        name = f"{domain}._report._dmarc.{host}"
        if len(name) > MAX_NAME:
            continue  # step 4: the name cannot exist
        answer = await lookup.query(name, "TXT")
        confirming = [text for text in answer.records if is_dmarc_record(text)]
        if not confirming:
            continue  # steps 6 and 7: not authorized
        override = [dict(_lower_tags(text)).get("rua") for text in confirming]
        replacements = [u for value in override if value for u in _uri_list(value)[0]]
        if not replacements:
            destinations.append(address)
            continue
        # step 9: the override must stay on the destination host, or nothing is sent there
        overriding = mailto_addresses(replacements)
        if all(replacement.rpartition("@")[2] == host for replacement in overriding):
            destinations.extend(overriding)
    return tuple(dict.fromkeys(destinations))
