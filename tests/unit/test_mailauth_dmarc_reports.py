"""DMARC aggregate reports (mailauth/dmarc_reports.py): reports as Google, Microsoft and a
DMARCbis reporter send them (XML, gzip, zip), ours built and read back, and the malformed and
hostile inputs a report address receives (bombs, DTDs, broken containers)."""

from __future__ import annotations

import gzip
import io
import threading
import zipfile

import pytest

from postroom.mailauth.dmarc import DmarcOutcome, DmarcRecord, parse_record
from postroom.mailauth.dmarc_reports import (
    MAX_REPORT_BYTES,
    NAMESPACE,
    AggregateReport,
    DkimAuth,
    EvaluationRow,
    OverrideReason,
    PublishedPolicy,
    ReportError,
    ReportRow,
    SpfAuth,
    build_report,
    parse_report,
    report_filename,
    report_message_attachment,
    report_subject,
)

# As Google sends them: RFC 7489 Appendix C, no namespace, no version element.
GOOGLE = b"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <extra_contact_info>https://support.google.com/a/answer/2466580</extra_contact_info>
    <report_id>13141523390164012345</report_id>
    <date_range>
      <begin>1717200000</begin>
      <end>1717286399</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>example.com</domain>
    <adkim>r</adkim>
    <aspf>r</aspf>
    <p>reject</p>
    <sp>reject</sp>
    <pct>100</pct>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.25</source_ip>
      <count>12</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>pass</dkim>
        <spf>pass</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>example.com</header_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>example.com</domain>
        <result>pass</result>
        <selector>ed2024</selector>
      </dkim>
      <dkim>
        <domain>example.com</domain>
        <result>pass</result>
        <selector>rsa2024</selector>
      </dkim>
      <spf>
        <domain>example.com</domain>
        <result>pass</result>
      </spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>2001:DB8::0:7</source_ip>
      <count>1</count>
      <policy_evaluated>
        <disposition>reject</disposition>
        <dkim>fail</dkim>
        <spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>Example.COM</header_from>
    </identifiers>
    <auth_results>
      <spf>
        <domain>spoofer.example</domain>
        <result>softfail</result>
      </spf>
    </auth_results>
  </record>
</feedback>
"""

# As Outlook.com sends them: version 1.0, xsd/xsi declarations, envelope_to, fo, a reason.
MICROSOFT = b"""<?xml version="1.0"?>
<feedback xmlns:xsd="http://www.w3.org/2001/XMLSchema"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<version>1.0</version>
<report_metadata><org_name>Outlook.com</org_name><email>dmarcreport@microsoft.com</email>
<report_id>5a0bd2a8c4f84b1a9c2d0e7f6a5b4c3d</report_id><date_range><begin>1717113600</begin>
<end>1717200000</end></date_range></report_metadata>
<policy_published><domain>example.com</domain><adkim>r</adkim><aspf>r</aspf><p>quarantine</p>
<sp>quarantine</sp><pct>100</pct><fo>0</fo></policy_published>
<record><row><source_ip>198.51.100.3</source_ip><count>2</count><policy_evaluated>
<disposition>none</disposition><dkim>fail</dkim><spf>pass</spf>
<reason><type>forwarded</type><comment>known forwarder</comment></reason>
</policy_evaluated></row><identifiers><envelope_to>outlook.com</envelope_to>
<envelope_from>bounces.example.com</envelope_from><header_from>example.com</header_from>
</identifiers><auth_results><dkim><domain>example.com</domain><selector>rsa2024</selector>
<result>fail</result></dkim><spf><domain>bounces.example.com</domain><scope>mfrom</scope>
<result>pass</result></spf></auth_results></record>
</feedback>"""

# A DMARCbis report: the dmarc-2.0 namespace, np, testing, discovery_method, generator, an
# extension at file and record level, disposition "pass".
DMARCBIS = f"""<?xml version="1.0" encoding="UTF-8"?>
<feedback xmlns="{NAMESPACE}" xmlns:ext="urn:example:arc-ext">
  <version>1.0</version>
  <report_metadata>
    <org_name>Sample Reporter</org_name>
    <email>report_sender@reporter.example</email>
    <report_id>3v98abbp8ya9n3va8yr8oa3ya</report_id>
    <date_range><begin>1717200000</begin><end>1717286399</end></date_range>
    <error>multiple rua URIs, the third ignored</error>
    <generator>Example Reporter 1.2</generator>
  </report_metadata>
  <policy_published>
    <domain>example.com</domain>
    <discovery_method>treewalk</discovery_method>
    <p>quarantine</p><sp>none</sp><np>reject</np>
    <adkim>s</adkim><aspf>r</aspf><testing>y</testing>
  </policy_published>
  <extension><ext:arc-override>never</ext:arc-override></extension>
  <record>
    <row>
      <source_ip>192.0.2.4</source_ip>
      <count>123</count>
      <policy_evaluated>
        <disposition>pass</disposition><dkim>pass</dkim><spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>example.com</header_from><envelope_from>example.com</envelope_from>
    </identifiers>
    <auth_results>
      <dkim><domain>example.com</domain><selector>abc123</selector><result>pass</result>
        <human_result>good signature</human_result></dkim>
      <spf><domain>example.com</domain><scope>mfrom</scope><result>fail</result></spf>
    </auth_results>
    <ext:arc-results><ext:record>x</ext:record></ext:arc-results>
  </record>
</feedback>
""".encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def zipped(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def test_a_google_report() -> None:
    report = parse_report(GOOGLE)
    assert (report.org_name, report.email, report.report_id) == (
        "google.com",
        "noreply-dmarc-support@google.com",
        "13141523390164012345",
    )
    assert (report.begin, report.end, report.domain, report.schema) == (
        1717200000,
        1717286399,
        "example.com",
        "rfc7489",
    )
    assert report.policy == PublishedPolicy(p="reject", sp="reject", adkim="r", aspf="r", pct=100)
    assert report.extra_contact_info == "https://support.google.com/a/answer/2466580"
    assert report.message_count == 13
    first, second = report.records
    assert first == ReportRow(
        source_ip="192.0.2.25",
        count=12,
        disposition="none",
        dkim="pass",
        spf="pass",
        header_from="example.com",
        dkim_results=(
            DkimAuth("example.com", "ed2024", "pass"),
            DkimAuth("example.com", "rsa2024", "pass"),
        ),
        spf_results=(SpfAuth("example.com", "pass", None),),
    )
    assert (second.source_ip, second.disposition, second.header_from) == (
        "2001:db8::7",
        "reject",
        "example.com",
    )


def test_a_microsoft_report() -> None:
    report = parse_report(MICROSOFT)
    assert (report.org_name, report.schema, report.policy.fo) == ("Outlook.com", "rfc7489", "0")
    (row,) = report.records
    assert row.reasons == (OverrideReason("forwarded", "known forwarder"),)
    assert (row.envelope_to, row.envelope_from) == ("outlook.com", "bounces.example.com")
    assert row.spf_results == (SpfAuth("bounces.example.com", "pass", "mfrom"),)


def test_a_dmarcbis_report_with_extensions() -> None:
    report = parse_report(DMARCBIS)
    assert report.schema == "dmarcbis"
    assert report.policy == PublishedPolicy(
        p="quarantine",
        sp="none",
        np="reject",
        adkim="s",
        aspf="r",
        testing="y",
        discovery_method="treewalk",
    )
    assert report.errors == ("multiple rua URIs, the third ignored",)
    assert report.generator == "Example Reporter 1.2"
    (row,) = report.records
    assert (row.disposition, row.dkim, row.spf, row.count) == ("pass", "pass", "fail", 123)
    assert row.dkim_results == (DkimAuth("example.com", "abc123", "pass", "good signature"),)


def test_a_namespaceless_report_with_dmarcbis_elements_is_dmarcbis() -> None:
    plain = DMARCBIS.replace(f' xmlns="{NAMESPACE}"'.encode(), b"")
    assert parse_report(plain).schema == "dmarcbis"


@pytest.mark.parametrize(
    "container",
    [
        lambda xml: gz(xml),
        lambda xml: zipped({"google.com!example.com!1717200000!1717286399.xml": xml}),
        lambda xml: zipped({"README.txt": b"hello", "report.XML": xml}),
        lambda xml: zipped({"report": xml}),
        lambda xml: zipped({"r.xml.gz": gz(xml)}),
        lambda xml: gz(xml[:100]) + gz(xml[100:]),  # two gzip members
        lambda xml: b"\xef\xbb\xbf\r\n  " + xml,  # byte order mark and leading space
        lambda xml: xml.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"),
    ],
)
def test_containers_are_recognised_by_their_bytes(container: object) -> None:
    data = container(GOOGLE)  # type: ignore[operator]
    assert parse_report(data, "whatever.name").report_id == "13141523390164012345"


# -- ours ----------------------------------------------------------------------------------


def rows() -> list[EvaluationRow]:
    passing = EvaluationRow(
        source_ip="192.0.2.25",
        header_from="example.com",
        disposition="pass",
        dkim_aligned=True,
        spf_aligned=True,
        envelope_from="example.com",
        envelope_to="our.example",
        dkim_results=(
            DkimAuth("other.example", "s1", "pass"),
            DkimAuth("example.com", "ed2024", "pass"),
            DkimAuth("example.com", "old", "fail", "body hash did not verify"),
            DkimAuth("mail.example.com", "s2", "pass"),
        ),
        spf_results=(SpfAuth("example.com", "pass"),),
    )
    failing = EvaluationRow(
        source_ip="2001:db8::7",
        header_from="example.com",
        disposition="quarantine",
        dkim_aligned=False,
        spf_aligned=False,
        reasons=(OverrideReason("policy_test_mode"),),
        spf_results=(SpfAuth("spoofer.example", "softfail"),),
        count=3,
    )
    return [passing, failing, passing, failing]


def test_our_report_reads_back() -> None:
    record = parse_record("v=DMARC1; p=reject; np=quarantine; t=y; rua=mailto:d@example.com")
    data = build_report(
        org_name="mx.our.example",
        email="postmaster@our.example",
        report_id="20240601.example.com.1",
        begin=1717200000,
        end=1717286399,
        domain="example.com",
        record=record,
        rows=rows(),
        errors=["an <error> & more"],
    )
    assert data[:2] == b"\x1f\x8b"
    xml = gzip.decompress(data)
    assert xml.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<feedback xmlns=")
    report = parse_report(data)
    assert (report.schema, report.org_name, report.report_id, report.domain) == (
        "dmarcbis",
        "mx.our.example",
        "20240601.example.com.1",
        "example.com",
    )
    assert report.errors == ("an <error> & more",)
    assert report.policy == PublishedPolicy(
        p="reject",
        np="quarantine",
        adkim="r",
        aspf="r",
        fo="0",
        testing="y",
        discovery_method="treewalk",
    )
    passing, failing = report.records  # identical rows were added up
    assert (passing.count, passing.disposition, passing.dkim, passing.spf) == (
        2,
        "pass",
        "pass",
        "pass",
    )
    assert [(d.domain, d.selector, d.result) for d in passing.dkim_results] == [
        ("example.com", "ed2024", "pass"),
        ("mail.example.com", "s2", "pass"),
        ("other.example", "s1", "pass"),
        ("example.com", "old", "fail"),
    ]
    assert (passing.envelope_from, passing.envelope_to) == ("example.com", "our.example")
    assert (failing.count, failing.disposition, failing.reasons) == (
        6,
        "quarantine",
        (OverrideReason("policy_test_mode"),),
    )
    assert failing.spf_results == (SpfAuth("spoofer.example", "softfail", "mfrom"),)


def test_rows_from_outcomes() -> None:
    record = DmarcRecord(p="reject", pct=50)
    sampled = DmarcOutcome(
        "fail", "quarantine", "example.com", record, False, False, "r", "reject", "p", "sampled_out"
    )
    row = EvaluationRow.from_outcome(sampled, source_ip="192.0.2.1", header_from="example.com")
    assert (row.disposition, row.reasons) == (
        "quarantine",
        (OverrideReason("other", "sampled out"),),
    )
    passed = DmarcOutcome("pass", "none", "example.com", record, True, False, "r", "reject", "p")
    row = EvaluationRow.from_outcome(passed, source_ip="192.0.2.1", header_from="example.com")
    assert (row.disposition, row.spf_aligned, row.dkim_aligned, row.reasons) == (
        "pass",
        True,
        False,
        (),
    )


def test_names_of_the_attachment_and_the_message() -> None:
    assert report_filename("mail.receiver.example", "example.com", 1013662812, 1013749130) == (
        "mail.receiver.example!example.com!1013662812!1013749130.xml.gz"
    )
    assert report_filename("R.example.", "Example.com", 1, 2, "a-b.c_1", compressed=False) == (
        "r.example!example.com!1!2!abc1.xml"
    )
    assert report_subject("example.com", "mail.receiver.example", "sample-ridtxt@example.com") == (
        "Report Domain: example.com Submitter: mail.receiver.example"
        " Report-ID: <sample-ridtxt@example.com>"
    )
    name, media_type, data = report_message_attachment(
        receiver="mx.our.example",
        org_name="mx.our.example",
        email="postmaster@our.example",
        report_id="r1",
        begin=10,
        end=20,
        domain="example.com",
        record=DmarcRecord(p="none"),
        rows=rows()[:1],
    )
    assert (name, media_type) == ("mx.our.example!example.com!10!20!r1.xml.gz", "application/gzip")
    assert parse_report(data).records[0].count == 1


def test_build_refuses_what_cannot_be_reported() -> None:
    common = {
        "org_name": "o",
        "email": "e@o",
        "report_id": "r",
        "domain": "example.com",
        "record": DmarcRecord(p="none"),
    }
    with pytest.raises(ValueError):
        build_report(begin=1, end=2, rows=[], **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_report(begin=3, end=2, rows=rows(), **common)  # type: ignore[arg-type]
    bad_ip = EvaluationRow("not-an-ip", "example.com", "none", False, False)
    with pytest.raises(ValueError):
        build_report(begin=1, end=2, rows=[bad_ip], **common)  # type: ignore[arg-type]


# -- malformed and hostile -----------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<feedback>&lol3;</feedback>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<feedback><report_metadata><org_name>&xxe;</org_name></report_metadata></feedback>"""


def replace_in(xml: bytes, old: bytes, new: bytes) -> bytes:
    assert old in xml
    return xml.replace(old, new, 1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not well-formed"),
        (b"hello", "not well-formed"),
        (b"<feedback>", "not well-formed"),
        (b"<html><body/></html>", "root element"),
        (BILLION_LAUGHS, "DTD"),
        (EXTERNAL, "DTD"),
        (BILLION_LAUGHS.decode().encode("utf-16"), "DTD"),  # hides from a byte search
        (gz(BILLION_LAUGHS), "DTD"),
        (GOOGLE.replace(b"<org_name>google.com</org_name>", b""), "org_name"),
        (GOOGLE.replace(b"<report_id>13141523390164012345</report_id>", b""), "report_id"),
        (replace_in(GOOGLE, b"<begin>1717200000</begin>", b"<begin>soon</begin>"), "begin"),
        (replace_in(GOOGLE, b"<begin>1717200000</begin>", b"<begin>-5</begin>"), "begin"),
        (
            replace_in(GOOGLE, b"<end>1717286399</end>", b"<end>9" * 1 + b"9" * 30 + b"</end>"),
            "end",
        ),
        (
            replace_in(GOOGLE, b"<source_ip>192.0.2.25</source_ip>", b"<source_ip>x</source_ip>"),
            "IP",
        ),
        (replace_in(GOOGLE, b"<count>12</count>", b"<count>1e3</count>"), "count"),
        (replace_in(GOOGLE, b"<pct>100</pct>", b"<pct>250</pct>"), "pct"),
        (GOOGLE.replace(b"<domain>example.com</domain>\n    <adkim>", b"<adkim>"), "domain"),
        (b"<feedback><report_metadata/></feedback>", "begin"),
        (b"<feedback>" + b"<a>" * 40 + b"</a>" * 40 + b"</feedback>", "deeper"),
        (gz(GOOGLE)[:-12], "truncated"),
        (gz(GOOGLE) + b"junk", "after the gzip"),
        (b"\x1f\x8b" + b"\x00" * 30, "gzip"),
        (b"PK\x03\x04" + b"\x00" * 60, "zip"),
        (zipped({}), "zip"),
        (zipped({"a.txt": b"x", "b.txt": b"y"}), "without an .xml"),
        (zipped({f"{i}.xml": b"x" for i in range(17)}), "members"),
        (GOOGLE.decode().replace("UTF-8", "EBCDIC-fancy").encode(), "well-formed"),
    ],
)
def test_malformed_reports_raise_report_error(data: bytes, reason: str) -> None:
    with pytest.raises(ReportError) as raised:
        parse_report(data, "bad.xml")
    assert reason in raised.value.reason, raised.value.reason
    assert raised.value.reason.startswith("bad.xml: ")


def finishes(target: object, seconds: float) -> bool:
    work = threading.Thread(target=target)  # type: ignore[arg-type]
    work.start()
    work.join(seconds)
    return not work.is_alive()


def test_decompression_bombs_stop_at_the_limit() -> None:
    """A few tens of kilobytes that inflate past the limit are refused without being inflated
    whole (memory stays near the limit)."""
    inflated = b"<feedback>" + b" " * (MAX_REPORT_BYTES + 1024) + b"</feedback>"
    bombs = [gz(inflated), zipped({"bomb.xml": inflated}), zipped({"r.xml.gz": gz(inflated)})]
    assert all(len(bomb) < MAX_REPORT_BYTES // 100 for bomb in bombs)
    errors: list[str] = []

    def work() -> None:
        for bomb in bombs:
            try:
                parse_report(bomb)
            except ReportError as error:
                errors.append(error.reason)

    assert finishes(work, 60.0)
    assert len(errors) == 3 and all("more than" in reason for reason in errors), errors
    with pytest.raises(ReportError):
        parse_report(b" " * (MAX_REPORT_BYTES + 1))


def test_records_are_counted_as_they_are_read() -> None:
    record = b"<record/>"
    with pytest.raises(ReportError, match="records"):
        parse_report(b"<feedback>" + record * 100_001 + b"</feedback>")


def test_a_report_is_a_plain_value() -> None:
    report = parse_report(GOOGLE)
    assert isinstance(report, AggregateReport) and isinstance(report.records, list)
