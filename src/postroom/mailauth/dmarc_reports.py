"""DMARC aggregate reports: reading the ones other receivers send (RFC 7489 Appendix C and the
DMARCbis aggregate-reporting schema, draft-ietf-dmarc-aggregate-reporting / RFC 9990), and
writing ours.

`parse_report` takes what arrives as an attachment (plain XML, gzip or zip, told apart by their
magic bytes, not their names) and returns an `AggregateReport`, or raises `ReportError` with the
reason. Reports are hostile input (aggregate reporting §8.1): nothing is decompressed past
MAX_REPORT_BYTES, a document with a DTD or entity declaration is refused before and while it is
parsed (no entity expansion can happen), and elements, depth and records are counted as they
are read.

`build_report` writes a report in the DMARCbis schema (namespace urn:ietf:params:xml:ns:dmarc-2.0),
gzip-compressed, from evaluation rows; `report_filename` and `report_subject` give the names
§2.5 prescribes for the attachment and the message.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal
from xml.parsers import expat

from postroom.mailauth.dmarc import DmarcOutcome, DmarcRecord

MAX_REPORT_BYTES = 20 * 1024 * 1024  # decompressed XML, and the container itself
MAX_RECORDS = 100_000
MAX_ELEMENTS = 2_000_000
MAX_DEPTH = 16
MAX_ZIP_MEMBERS = 16
MAX_DKIM_PER_ROW = 100  # aggregate reporting §2.1.3: no more than 100 signatures per row
MAX_TIMESTAMP = 2**40  # seconds since the epoch; far beyond any real date
MAX_COUNT = 2**48

NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"
# Namespaces whose elements are the report's own: DMARCbis, and the one some RFC 7489
# reporters declare; elements of any other namespace are extensions and keep "{uri}name".
_OWN_NAMESPACES = frozenset({NAMESPACE, "http://dmarc.org/dmarc-xml/0.1"})
_BIS_ONLY = frozenset({"np", "testing", "discovery_method"})

Schema = Literal["rfc7489", "dmarcbis"]
Disposition = Literal["none", "pass", "quarantine", "reject"]


class ReportError(ValueError):
    """A report that cannot be read; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PublishedPolicy:
    """The policy_published element: the record the reporter applied (values as given)."""

    p: str | None = None
    sp: str | None = None
    np: str | None = None
    adkim: str | None = None
    aspf: str | None = None
    pct: int | None = None
    fo: str | None = None
    testing: str | None = None
    discovery_method: str | None = None


@dataclass(frozen=True, slots=True)
class DkimAuth:
    domain: str
    selector: str | None
    result: str
    human_result: str | None = None


@dataclass(frozen=True, slots=True)
class SpfAuth:
    domain: str
    result: str
    scope: str | None = "mfrom"
    human_result: str | None = None


@dataclass(frozen=True, slots=True)
class OverrideReason:
    type: str
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One record: messages from one source IP with one set of results."""

    source_ip: str
    count: int
    disposition: str
    dkim: str  # the policy_evaluated (aligned) DKIM result: pass or fail
    spf: str
    header_from: str
    envelope_from: str | None = None
    envelope_to: str | None = None
    reasons: tuple[OverrideReason, ...] = ()
    dkim_results: tuple[DkimAuth, ...] = ()
    spf_results: tuple[SpfAuth, ...] = ()


@dataclass(frozen=True, slots=True)
class AggregateReport:
    org_name: str
    email: str
    report_id: str
    begin: int  # seconds since the epoch, UTC
    end: int
    domain: str  # the policy_published domain
    policy: PublishedPolicy
    records: list[ReportRow] = field(default_factory=list)
    schema: Schema = "rfc7489"
    extra_contact_info: str | None = None
    errors: tuple[str, ...] = ()
    generator: str | None = None

    @property
    def message_count(self) -> int:
        return sum(row.count for row in self.records)


# -- containers ----------------------------------------------------------------------------


def parse_report(data: bytes, filename: str | None = None) -> AggregateReport:
    """Read an aggregate report: XML, or XML in gzip or zip (by magic bytes). `filename` only
    names the report in error messages."""
    label = f"{filename}: " if filename else ""
    try:
        return _read(_unpack(data))
    except ReportError as error:
        raise ReportError(label + error.reason) from None


def _unpack(data: bytes) -> bytes:
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(f"report larger than {MAX_REPORT_BYTES} bytes")
    if data[:2] == b"\x1f\x8b":  # RFC 1952 §2.3.1: ID1 ID2
        return _gunzip(data)
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # zip: a file header, an empty archive
        return _unzip(data)
    return data


def _gunzip(data: bytes) -> bytes:
    """All members of a gzip stream, stopping at MAX_REPORT_BYTES of output."""
    out = bytearray()
    rest = data
    while rest[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, MAX_REPORT_BYTES + 1 - len(out))
        except zlib.error as error:
            raise ReportError(f"broken gzip data: {error}") from None
        if len(out) > MAX_REPORT_BYTES:
            raise ReportError(f"report decompresses to more than {MAX_REPORT_BYTES} bytes")
        if not inflater.eof:
            raise ReportError("truncated gzip data")
        rest = inflater.unused_data
    if rest.strip(b"\0"):
        raise ReportError("data after the gzip stream")
    return bytes(out)


def _unzip(data: bytes) -> bytes:
    """The report member of a zip archive (the .xml one, or the only one)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if not members:
                raise ReportError("empty zip archive")
            if len(members) > MAX_ZIP_MEMBERS:
                raise ReportError(f"zip archive with {len(members)} members")
            xml_members = [m for m in members if m.filename.lower().endswith((".xml", ".xml.gz"))]
            if len(members) > 1 and not xml_members:
                raise ReportError("zip archive without an .xml member")
            member = (xml_members or members)[0]
            with archive.open(member) as stream:
                content = stream.read(MAX_REPORT_BYTES + 1)
    except ReportError:
        raise
    except Exception as error:  # zipfile and its codecs raise many types on hostile data
        raise ReportError(f"broken zip archive: {type(error).__name__}: {error}") from None
    if len(content) > MAX_REPORT_BYTES:
        raise ReportError(f"report decompresses to more than {MAX_REPORT_BYTES} bytes")
    if content[:2] == b"\x1f\x8b":
        return _gunzip(content)
    return content


# -- XML -----------------------------------------------------------------------------------


def _tree(data: bytes) -> tuple[ET.Element, bool]:
    """The document as an ElementTree, read by expat with every DTD refused, and whether its
    root element is in the DMARCbis namespace."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ReportError("DTDs and entity declarations are not allowed")
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=" ")
    state = {"depth": 0, "elements": 0, "records": 0, "bis": 0}

    def start(name: str, _attributes: dict[str, str]) -> None:
        state["depth"] += 1
        state["elements"] += 1
        if state["depth"] > MAX_DEPTH:
            raise ReportError(f"elements nested deeper than {MAX_DEPTH}")
        if state["elements"] > MAX_ELEMENTS:
            raise ReportError(f"more than {MAX_ELEMENTS} elements")
        tag = _tag(name)
        if state["depth"] == 1 and name.startswith(NAMESPACE + " "):
            state["bis"] = 1
        if state["depth"] == 2 and tag == "record":
            state["records"] += 1
            if state["records"] > MAX_RECORDS:
                raise ReportError(f"more than {MAX_RECORDS} records")
        builder.start(tag, {})

    def end(name: str) -> None:
        state["depth"] -= 1
        builder.end(_tag(name))

    def forbidden(*_args: object) -> None:
        raise ReportError("DTDs and entity declarations are not allowed")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = forbidden
    parser.EntityDeclHandler = forbidden
    parser.UnparsedEntityDeclHandler = forbidden
    parser.ExternalEntityRefHandler = forbidden  # type: ignore[assignment]
    try:
        parser.Parse(data, True)
    except ReportError:
        raise
    except expat.ExpatError as error:
        raise ReportError(f"not well-formed XML: {error}") from None
    except (LookupError, ValueError) as error:  # an encoding Python's codecs do not know
        raise ReportError(f"not well-formed XML: {error}") from None
    except RecursionError:
        raise ReportError("XML nested too deeply") from None
    return builder.close(), bool(state["bis"])


def _tag(name: str) -> str:
    uri, space, local = name.rpartition(" ")
    if not space or uri in _OWN_NAMESPACES:
        return local
    return "{" + uri + "}" + local


def _child(element: ET.Element, tag: str) -> ET.Element | None:
    return next((child for child in element if child.tag == tag), None)


def _text(element: ET.Element | None, tag: str, *, required: str | None = None) -> str | None:
    child = None if element is None else _child(element, tag)
    text = None if child is None else (child.text or "").strip()
    if not text:
        if required is not None:
            raise ReportError(f"missing {required}")
        return None
    return text


def _need(element: ET.Element | None, tag: str, where: str) -> str:
    text = _text(element, tag, required=f"{where}/{tag}")
    assert text is not None
    return text


def _integer(text: str, what: str, limit: int) -> int:
    digits = text.strip()
    if not digits.isascii() or not digits.isdigit() or len(digits) > 20:
        raise ReportError(f"{what} is not a number: {digits[:40]!r}")
    value = int(digits)
    if value > limit:
        raise ReportError(f"{what} out of range: {value}")
    return value


def _read(data: bytes) -> AggregateReport:
    bom = b"\xef\xbb\xbf" if data[:3] == b"\xef\xbb\xbf" else b""
    root, namespaced = _tree(bom + data[len(bom) :].lstrip(b" \t\r\n"))
    if root.tag != "feedback":
        raise ReportError(f"the root element is <{root.tag[:60]}>, not <feedback>")
    metadata = _child(root, "report_metadata")
    if metadata is None:
        raise ReportError("missing report_metadata")
    dates = _child(metadata, "date_range")
    begin = _integer(_need(dates, "begin", "date_range"), "date_range/begin", MAX_TIMESTAMP)
    end = _integer(_need(dates, "end", "date_range"), "date_range/end", MAX_TIMESTAMP)
    published = _child(root, "policy_published")
    if published is None:
        raise ReportError("missing policy_published")
    pct = _text(published, "pct")
    policy = PublishedPolicy(
        p=_lower(_text(published, "p")),
        sp=_lower(_text(published, "sp")),
        np=_lower(_text(published, "np")),
        adkim=_lower(_text(published, "adkim")),
        aspf=_lower(_text(published, "aspf")),
        pct=None if pct is None else _integer(pct, "policy_published/pct", 100),
        fo=_text(published, "fo"),
        testing=_lower(_text(published, "testing")),
        discovery_method=_lower(_text(published, "discovery_method")),
    )
    bis = namespaced or any(_child(published, tag) is not None for tag in _BIS_ONLY)
    records = [_row(record) for record in root if record.tag == "record"]
    return AggregateReport(
        org_name=_need(metadata, "org_name", "report_metadata"),
        email=_text(metadata, "email") or "",
        report_id=_need(metadata, "report_id", "report_metadata"),
        begin=begin,
        end=end,
        domain=_need(published, "domain", "policy_published").lower().rstrip("."),
        policy=policy,
        records=records,
        schema="dmarcbis" if bis else "rfc7489",
        extra_contact_info=_text(metadata, "extra_contact_info"),
        errors=tuple((e.text or "").strip() for e in metadata if e.tag == "error"),
        generator=_text(metadata, "generator"),
    )


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


def _row(record: ET.Element) -> ReportRow:
    row = _child(record, "row")
    if row is None:
        raise ReportError("a record without row")
    address = _need(row, "source_ip", "row")
    try:
        source_ip = str(ipaddress.ip_address(address))
    except ValueError:
        raise ReportError(f"not an IP address: {address[:60]!r}") from None
    evaluated = _child(row, "policy_evaluated")
    if evaluated is None:
        raise ReportError("a row without policy_evaluated")
    identifiers = _child(record, "identifiers")
    auth = _child(record, "auth_results")
    dkim_results = tuple(
        DkimAuth(
            domain=_need(item, "domain", "auth_results/dkim").lower(),
            selector=_text(item, "selector"),
            result=_need(item, "result", "auth_results/dkim").lower(),
            human_result=_text(item, "human_result"),
        )
        for item in (auth if auth is not None else ())
        if item.tag == "dkim"
    )
    spf_results = tuple(
        SpfAuth(
            domain=(_text(item, "domain") or "").lower(),
            result=_need(item, "result", "auth_results/spf").lower(),
            scope=_lower(_text(item, "scope")),
            human_result=_text(item, "human_result"),
        )
        for item in (auth if auth is not None else ())
        if item.tag == "spf"
    )
    reasons = tuple(
        OverrideReason(_need(item, "type", "policy_evaluated/reason"), _text(item, "comment"))
        for item in evaluated
        if item.tag == "reason"
    )
    return ReportRow(
        source_ip=source_ip,
        count=_integer(_need(row, "count", "row"), "row/count", MAX_COUNT),
        disposition=_need(evaluated, "disposition", "policy_evaluated").lower(),
        dkim=(_text(evaluated, "dkim") or "none").lower(),
        spf=(_text(evaluated, "spf") or "none").lower(),
        header_from=(_text(identifiers, "header_from") or "").lower(),
        envelope_from=_text(identifiers, "envelope_from"),
        envelope_to=_text(identifiers, "envelope_to"),
        reasons=reasons,
        dkim_results=dkim_results,
        spf_results=spf_results,
    )


# -- writing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    """What we evaluated for messages from one source: the input of `build_report`. Rows that
    differ only in `count` are added up."""

    source_ip: str
    header_from: str
    disposition: Disposition
    dkim_aligned: bool
    spf_aligned: bool
    envelope_from: str | None = None
    envelope_to: str | None = None
    dkim_results: tuple[DkimAuth, ...] = ()
    spf_results: tuple[SpfAuth, ...] = ()
    reasons: tuple[OverrideReason, ...] = ()
    count: int = 1

    @classmethod
    def from_outcome(
        cls,
        outcome: DmarcOutcome,
        *,
        source_ip: str,
        header_from: str,
        envelope_from: str | None = None,
        envelope_to: str | None = None,
        dkim_results: Sequence[DkimAuth] = (),
        spf_results: Sequence[SpfAuth] = (),
    ) -> EvaluationRow:
        """The row for one message DMARC applied to: disposition "pass" when it passed (the
        DMARCbis value), else the policy applied; an override reason when that policy is
        lower than the one requested."""
        disposition: Disposition = "pass" if outcome.result == "pass" else outcome.policy
        reasons: tuple[OverrideReason, ...] = ()
        if outcome.override == "policy_test_mode":
            reasons = (OverrideReason("policy_test_mode"),)
        elif outcome.override is not None:
            reasons = (OverrideReason("other", outcome.override.replace("_", " ")),)
        return cls(
            source_ip=source_ip,
            header_from=header_from,
            disposition=disposition,
            dkim_aligned=outcome.dkim_aligned,
            spf_aligned=outcome.spf_aligned,
            envelope_from=envelope_from,
            envelope_to=envelope_to,
            dkim_results=tuple(dkim_results),
            spf_results=tuple(spf_results),
            reasons=reasons,
        )


# XML 1.0 §2.2: characters a document may not contain
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _add(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = _NOT_XML.sub("", text)
    return child


def build_report(
    *,
    org_name: str,
    email: str,
    report_id: str,
    begin: int,
    end: int,
    domain: str,
    record: DmarcRecord,
    rows: Sequence[EvaluationRow],
    extra_contact_info: str | None = None,
    errors: Sequence[str] = (),
    generator: str | None = "postroom",
) -> bytes:
    """An aggregate report in the DMARCbis schema, gzip-compressed (aggregate reporting §2.5:
    "application/gzip"), about the Policy Domain `domain` whose record is `record`."""
    if not rows:
        raise ValueError("a report needs at least one record")
    if not 0 <= begin <= end <= MAX_TIMESTAMP:
        raise ValueError(f"bad reporting period {begin}-{end}")
    root = ET.Element("feedback", {"xmlns": NAMESPACE})
    _add(root, "version", "1.0")
    metadata = _add(root, "report_metadata")
    _add(metadata, "org_name", org_name)
    _add(metadata, "email", email)
    if extra_contact_info is not None:
        _add(metadata, "extra_contact_info", extra_contact_info)
    _add(metadata, "report_id", report_id)
    dates = _add(metadata, "date_range")
    _add(dates, "begin", str(begin))
    _add(dates, "end", str(end))
    for error in errors:
        _add(metadata, "error", error)
    if generator is not None:
        _add(metadata, "generator", generator)
    published = _add(root, "policy_published")
    _add(published, "domain", domain)
    _add(published, "discovery_method", "treewalk")
    _add(published, "p", record.p)
    if record.sp is not None:
        _add(published, "sp", record.sp)
    if record.np is not None:
        _add(published, "np", record.np)
    _add(published, "fo", record.fo)
    _add(published, "adkim", record.adkim)
    _add(published, "aspf", record.aspf)
    _add(published, "testing", "y" if record.t else "n")
    for row, count in _merged(rows):
        _write_record(root, row, count)
    document = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return gzip.compress(document, mtime=0)


def _merged(rows: Sequence[EvaluationRow]) -> list[tuple[EvaluationRow, int]]:
    counts: dict[EvaluationRow, int] = {}
    for row in rows:
        if row.count < 0:
            raise ValueError(f"negative count {row.count}")
        key = replace(row, count=1)
        counts[key] = counts.get(key, 0) + row.count
    return list(counts.items())


def _write_record(root: ET.Element, row: EvaluationRow, count: int) -> None:
    record = _add(root, "record")
    row_element = _add(record, "row")
    _add(row_element, "source_ip", str(ipaddress.ip_address(row.source_ip)))
    _add(row_element, "count", str(count))
    evaluated = _add(row_element, "policy_evaluated")
    _add(evaluated, "disposition", row.disposition)
    _add(evaluated, "dkim", "pass" if row.dkim_aligned else "fail")
    _add(evaluated, "spf", "pass" if row.spf_aligned else "fail")
    for reason in row.reasons:
        reason_element = _add(evaluated, "reason")
        _add(reason_element, "type", reason.type)
        if reason.comment is not None:
            _add(reason_element, "comment", reason.comment)
    identifiers = _add(record, "identifiers")
    _add(identifiers, "header_from", row.header_from)
    if row.envelope_from is not None:
        _add(identifiers, "envelope_from", row.envelope_from)
    if row.envelope_to is not None:
        _add(identifiers, "envelope_to", row.envelope_to)
    auth = _add(record, "auth_results")
    for dkim in _ranked(row)[:MAX_DKIM_PER_ROW]:
        element = _add(auth, "dkim")
        _add(element, "domain", dkim.domain)
        _add(element, "selector", dkim.selector or "")
        _add(element, "result", dkim.result)
        if dkim.human_result is not None:
            _add(element, "human_result", dkim.human_result)
    for spf in row.spf_results[:1]:  # aggregate reporting §2.1.2: at most one spf element
        element = _add(auth, "spf")
        _add(element, "domain", spf.domain)
        _add(element, "scope", spf.scope or "mfrom")
        _add(element, "result", spf.result)
        if spf.human_result is not None:
            _add(element, "human_result", spf.human_result)


def _ranked(row: EvaluationRow) -> list[DkimAuth]:
    """Aggregate reporting §2.1.3's order: passing and aligned signatures first (strictly,
    then relaxed), then other passes, then the rest."""
    author = row.header_from.lower()

    def rank(dkim: DkimAuth) -> int:
        if dkim.result != "pass":
            return 3
        domain = dkim.domain.lower()
        if domain == author:
            return 0
        if author.endswith("." + domain) or domain.endswith("." + author):
            return 1
        return 2

    return sorted(row.dkim_results, key=rank)


def report_filename(
    receiver: str,
    policy_domain: str,
    begin: int,
    end: int,
    unique_id: str | None = None,
    *,
    compressed: bool = True,
) -> str:
    """Aggregate reporting §2.5: receiver!policy-domain!begin!end[!unique-id].xml[.gz]; the
    unique-id keeps only letters and digits (its ABNF)."""
    parts = [receiver.lower().rstrip("."), policy_domain.lower().rstrip("."), str(begin), str(end)]
    if unique_id:
        cleaned = "".join(c for c in unique_id if c.isascii() and c.isalnum())
        if cleaned:
            parts.append(cleaned)
    return "!".join(parts) + (".xml.gz" if compressed else ".xml")


def report_subject(policy_domain: str, submitter: str, report_id: str | None = None) -> str:
    """Aggregate reporting §2.5: the Subject of a report message."""
    subject = f"Report Domain: {policy_domain} Submitter: {submitter}"
    if report_id:
        subject += f" Report-ID: <{report_id}>"
    return subject


def report_message_attachment(
    *,
    receiver: str,
    org_name: str,
    email: str,
    report_id: str,
    begin: int,
    end: int,
    domain: str,
    record: DmarcRecord,
    rows: Sequence[EvaluationRow],
) -> tuple[str, str, bytes]:
    """The attachment of a report message: (filename, media type, gzip'd XML)."""
    data = build_report(
        org_name=org_name,
        email=email,
        report_id=report_id,
        begin=begin,
        end=end,
        domain=domain,
        record=record,
        rows=rows,
    )
    return report_filename(receiver, domain, begin, end, report_id), "application/gzip", data
