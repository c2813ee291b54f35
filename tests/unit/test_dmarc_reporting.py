"""DMARC aggregate reports through the services: reports received as mail (gzip, zip and XML
attachments, the whole body) kept in a real store, unreadable ones refused in one log line;
what ingress evaluated counted and sent once a day as a queued report message whose
attachment reads back, to the rua addresses whose destinations DNS verified."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import zipfile
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from postroom.config import Config, load_config
from postroom.dns.lookup import StaticLookup
from postroom.mailauth.dmarc import DmarcOutcome, DmarcRecord, parse_record
from postroom.mailauth.dmarc_reports import parse_report
from postroom.model.queue import QueuedMessage, RecipientState
from postroom.services import dmarc_reporting
from postroom.services.dmarc_reporting import (
    applied,
    collect,
    evaluation_record,
    is_report_address,
    record_text,
    send_daily_reports,
    take_report,
)
from postroom.storage.api import Store, Tx
from postroom.storage.records import EvaluationRecord, ReceivedReport

DAY = 86400
MONDAY = 1_714_953_600  # 2024-05-06T00:00:00Z
TUESDAY = MONDAY + DAY

REPORT = b"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <report_id>13141523390164012345</report_id>
    <date_range><begin>1714953600</begin><end>1715039999</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>example.test</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p><pct>100</pct>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.25</source_ip><count>12</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf>
      </policy_evaluated>
    </row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results>
      <dkim><domain>example.test</domain><selector>s1</selector><result>pass</result></dkim>
      <spf><domain>example.test</domain><result>pass</result></spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>203.0.113.9</source_ip><count>3</count>
      <policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results><spf><domain>spoof.example</domain><result>fail</result></spf></auth_results>
  </record>
</feedback>
"""


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def report_mail(
    attachment: bytes | None,
    maintype: str = "application",
    subtype: str = "gzip",
    filename: str = "google.com!example.test!1714953600!1715039999.xml.gz",
) -> bytes:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = "noreply-dmarc-support@google.com"
    message["To"] = "dmarc-reports@example.test"
    message["Subject"] = "Report domain: example.test Submitter: google.com"
    message["Message-ID"] = "<report-1@google.com>"
    message.set_content("This is an aggregate report from Google.\n")
    if attachment is not None:
        message.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


def whole_body_mail(xml: bytes) -> bytes:
    return (
        b"From: dmarc@reporter.example\r\nTo: dmarc-reports@example.test\r\n"
        b"Subject: report\r\nMessage-ID: <whole@reporter.example>\r\n"
        b"Content-Type: text/xml\r\n\r\n" + xml.replace(b"\n", b"\r\n")
    )


def kept(store: Store) -> list[ReceivedReport]:
    return asyncio.run(store.read(lambda tx: tx.dmarc.reports()))


def run_collect(store: Store, data: bytes, **options: object) -> bool:
    def work(tx: Tx) -> bool:
        return collect(tx, data, MONDAY + DAY + 5, **options)  # type: ignore[arg-type]

    return asyncio.run(store.write(work))


@pytest.mark.parametrize(
    "mail",
    [
        report_mail(gzip.compress(REPORT)),
        report_mail(gzip.compress(REPORT), subtype="x-gzip"),
        report_mail(zipped("report.xml", REPORT), subtype="zip", filename="report.zip"),
        report_mail(REPORT, subtype="xml", filename="report.xml"),
        report_mail(REPORT, "text", "xml", filename="report.xml"),
        # Mislabelled, as some reporters send them: the file name tells.
        report_mail(gzip.compress(REPORT), subtype="octet-stream"),
        whole_body_mail(REPORT),
    ],
    ids=["gzip", "x-gzip", "zip", "application-xml", "text-xml", "octet-stream", "whole-body"],
)
def test_a_report_attachment_is_collected(store: Store, mail: bytes) -> None:
    assert run_collect(store, mail) is True
    [report] = kept(store)
    assert (report.reporter, report.report_id) == ("google.com", "13141523390164012345")
    assert (report.begin, report.end, report.domain) == (MONDAY, MONDAY + DAY - 1, "example.test")
    assert report.messages == 15
    assert report.policy == "p=reject; adkim=r; aspf=r; pct=100"
    first, second = report.rows
    assert (first.source_ip, first.count, first.dkim, first.spf, first.dmarc) == (
        "192.0.2.25",
        12,
        "pass",
        "pass",
        "pass",
    )
    assert first.dkim_results == (("example.test", "s1", "pass"),)
    assert (second.disposition, second.dmarc, second.spf_results) == (
        "reject",
        "fail",
        (("spoof.example", "fail"),),
    )
    assert report.received == MONDAY + DAY + 5
    assert report.message_id in ("<report-1@google.com>", "<whole@reporter.example>")


def test_a_report_sent_twice_is_kept_once(store: Store) -> None:
    mail = report_mail(gzip.compress(REPORT))
    assert run_collect(store, mail) is True
    assert run_collect(store, mail) is True  # nothing to deliver: it is kept already
    assert len(kept(store)) == 1


BROKEN = {
    "no-attachment": report_mail(None),
    "broken-gzip": report_mail(b"\x1f\x8b\x08\x00garbage"),
    "not-a-report": report_mail(b"<html>hello</html>", "text", "xml", filename="x.xml"),
    "dtd": report_mail(b'<!DOCTYPE x [<!ENTITY a "b">]><feedback/>', "text", "xml", "x.xml"),
    "missing-metadata": report_mail(gzip.compress(b"<feedback><policy_published/></feedback>")),
    "empty-zip": report_mail(zipped("README", b""), subtype="zip", filename="r.zip"),
    "plain-text": b"From: a@b.example\r\nSubject: hi\r\n\r\nJust words.\r\n",
}


@pytest.mark.parametrize("mail", BROKEN.values(), ids=BROKEN)
def test_an_unreadable_report_is_false_and_one_log_line(
    store: Store, mail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="postroom.dmarc"):
        assert run_collect(store, mail) is False
    assert kept(store) == []
    [record] = [r for r in caplog.records if r.name == "postroom.dmarc"]
    assert record.levelno == logging.WARNING
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert "dmarc report unreadable" in record.getMessage()


def test_a_report_about_another_domain_is_refused_when_domains_are_given(store: Store) -> None:
    mail = report_mail(gzip.compress(REPORT))
    assert run_collect(store, mail, domains=frozenset({"other.test"})) is False
    assert run_collect(store, mail, domains=frozenset({"test"})) is True  # below one of ours
    assert len(kept(store)) == 1


def test_take_report_reads_on_a_thread_and_keeps_it(store: Store) -> None:
    mail = report_mail(zipped("r.xml", REPORT), subtype="zip", filename="r.zip")
    assert asyncio.run(take_report(store, mail, 1.0)) is True
    buffer = store.new_buffer("report-test")
    buffer.write(report_mail(b"nonsense", subtype="zip", filename="r.zip"))
    try:
        assert asyncio.run(take_report(store, buffer, 2.0)) is False
    finally:
        buffer.discard()
    assert [r.received for r in kept(store)] == [1.0]


def test_hostile_text_stays_on_one_log_line(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    forged = REPORT.replace(b"<domain>example.test</domain>", b"<domain>a\nFAKE b</domain>")
    broken = report_mail(b"\x1f\x8bjunk")
    broken = broken.replace(b"<report-1@google.com>", b"<x\x1b[31m@evil>")
    with caplog.at_level(logging.INFO, logger="postroom.dmarc"):
        assert run_collect(store, report_mail(gzip.compress(forged))) is True
        assert run_collect(store, broken) is False
    messages = [r.getMessage() for r in caplog.records if r.name == "postroom.dmarc"]
    assert len(messages) == 2
    assert all("\n" not in m and "\x1b" not in m for m in messages), messages
    assert "domain=a\\nfake b " in messages[0]


def test_the_report_address() -> None:
    domains = frozenset({"example.test"})
    assert is_report_address("dmarc-reports@example.test", domains)
    assert is_report_address("DMARC-Reports@Example.Test", domains)
    assert not is_report_address("dmarc-reports@other.test", domains)
    assert not is_report_address("dmarc@example.test", domains)
    assert not is_report_address("dmarc-reports", domains)


# -- sending -------------------------------------------------------------------------------


def make_config(tmp_path: Path, domains: tuple[str, ...] = ("example.test",)) -> Config:
    path = tmp_path / "postroom.toml"
    listed = ", ".join(f'"{d}"' for d in domains)
    path.write_text(
        f'hostname = "mx.example.test"\ndata_dir = "{tmp_path / "data"}"\ndomains = [{listed}]\n',
        encoding="utf-8",
    )
    return load_config(path)


SENDER_RECORD = (
    "v=DMARC1; p=quarantine; rua=mailto:agg@sender.example,"
    "mailto:dmarc@reports.example,mailto:dmarc@unverified.example"
)


def outcome(result: str = "pass", record: str = SENDER_RECORD) -> DmarcOutcome:
    parsed = parse_record(record)
    return DmarcOutcome(
        result,  # type: ignore[arg-type]
        "none" if result == "pass" else parsed.p,
        "sender.example",
        parsed,
        spf_aligned=result == "pass",
        dkim_aligned=False,
        reason="test",
        requested=parsed.p,
        applies="p",
    )


def evaluations(moment: float) -> list[EvaluationRecord]:
    passing = evaluation_record(
        outcome("pass"),
        time=moment,
        source_ip="192.0.2.1",
        header_from="Sender.Example",
        spf=("sender.example", "pass"),
        dkim=[("sender.example", "sel", "fail")],
    )
    failing = evaluation_record(
        outcome("fail"),
        time=moment + 60,
        source_ip="2001:db8::66",
        header_from="sender.example",
        spf=("elsewhere.example", "softfail"),
        disposition="none",
        override="local_policy",
    )
    assert passing is not None and failing is not None
    return [passing, passing, passing, failing]


def record_all(store: Store, items: list[EvaluationRecord]) -> None:
    def work(tx: Tx) -> None:
        for item in items:
            tx.dmarc.record_evaluation(item)

    asyncio.run(store.write(work))


DNS = {
    ("_dmarc.sender.example", "TXT"): [SENDER_RECORD],
    ("sender.example", "A"): ["192.0.2.1"],
    # reports.example takes sender.example's reports; unverified.example says nothing.
    ("sender.example._report._dmarc.reports.example", "TXT"): ["v=DMARC1"],
    ("reports.example", "A"): ["192.0.2.7"],
    ("unverified.example", "A"): ["192.0.2.8"],
}


def queued_report(store: Store, queue_id: str) -> tuple[QueuedMessage, bytes]:
    def work(tx: Tx) -> tuple[QueuedMessage, bytes]:
        message = tx.queue.load(queue_id)
        assert message is not None
        return message, message.prefix + tx.blobs.read(message.blob_id)

    return asyncio.run(store.read(work))


def test_a_daily_report_is_queued_to_the_verified_destinations(
    store: Store, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    record_all(store, evaluations(MONDAY + 3600))
    record_all(store, evaluations(TUESDAY + 3600))  # today's: not reported yet
    woken: list[bool] = []
    lookup = StaticLookup(DNS)
    queued = asyncio.run(
        send_daily_reports(store, lookup, config, TUESDAY + 7200, wake=lambda: woken.append(True))
    )
    assert len(queued) == 1 and woken == [True]
    message, content = queued_report(store, queued[0])
    envelope = message.envelope
    assert envelope.sender == "dmarc-reports@example.test"  # not <>: DMARC must pass
    recipients = sorted(r.address for r in message.recipients)
    # Same Organizational Domain as-is; reports.example confirmed; unverified.example not.
    assert recipients == ["agg@sender.example", "dmarc@reports.example"]
    assert all(r.user_id is None for r in message.recipients)
    # The verification asked DNS about the external destinations only.
    assert ("sender.example._report._dmarc.reports.example", "TXT") in lookup.asked
    assert ("sender.example._report._dmarc.unverified.example", "TXT") in lookup.asked
    assert ("sender.example._report._dmarc.sender.example", "TXT") not in lookup.asked

    mail = message_from_bytes(content, policy=policy.default)
    assert mail["From"] == "dmarc-reports@example.test"
    assert mail["Auto-Submitted"] == "auto-generated"
    subject = str(mail["Subject"])
    assert subject.startswith("Report Domain: sender.example Submitter: example.test Report-ID: <")
    [attachment] = [p for p in mail.walk() if p.get_content_type() == "application/gzip"]
    filename = attachment.get_filename()
    assert filename is not None
    assert filename.startswith(f"example.test!sender.example!{MONDAY}!{TUESDAY - 1}!")
    assert filename.endswith(".xml.gz")
    report = parse_report(attachment.get_payload(decode=True))
    assert report.schema == "dmarcbis"
    assert (report.org_name, report.email) == ("mx.example.test", "dmarc-reports@example.test")
    assert (report.begin, report.end, report.domain) == (MONDAY, TUESDAY - 1, "sender.example")
    assert report.report_id in subject
    assert report.policy.p == "quarantine"
    rows = {row.source_ip: row for row in report.records}
    assert set(rows) == {"192.0.2.1", "2001:db8::66"}
    good, bad = rows["192.0.2.1"], rows["2001:db8::66"]
    assert (good.count, good.disposition, good.spf, good.dkim) == (3, "pass", "pass", "fail")
    assert [(d.domain, d.selector, d.result) for d in good.dkim_results] == [
        ("sender.example", "sel", "fail")
    ]
    assert (bad.count, bad.disposition, bad.spf) == (1, "none", "fail")
    assert [r.type for r in bad.reasons] == ["local_policy"]
    assert [(s.domain, s.result) for s in bad.spf_results] == [("elsewhere.example", "softfail")]

    # Monday's evaluations went with the report, Tuesday's wait for tomorrow.
    left = asyncio.run(store.read(lambda tx: tx.dmarc.evaluations("sender.example", 0, 1e12)))
    assert {e.time // DAY * DAY for e in left} == {TUESDAY}
    again = asyncio.run(send_daily_reports(store, lookup, config, TUESDAY + 9000))
    assert again == []


def test_no_destination_verified_means_no_report(store: Store, tmp_path: Path) -> None:
    record = "v=DMARC1; p=reject; rua=mailto:dmarc@unverified.example"
    dns = dict(DNS)
    dns[("_dmarc.sender.example", "TXT")] = [record]
    found = evaluation_record(
        outcome("pass", record),
        time=MONDAY + 5,
        source_ip="192.0.2.1",
        header_from="sender.example",
        spf=("sender.example", "pass"),
    )
    assert found is not None
    record_all(store, [found])
    config = make_config(tmp_path)
    assert asyncio.run(send_daily_reports(store, StaticLookup(dns), config, TUESDAY)) == []
    assert asyncio.run(store.read(lambda tx: tx.queue.entries())) == []
    # Refused for good: the evaluations are forgotten, not retried.
    assert asyncio.run(store.read(lambda tx: tx.dmarc.pending_report_domains(2e9))) == []


def test_a_dns_failure_keeps_the_evaluations_for_the_next_run(store: Store, tmp_path: Path) -> None:
    record_all(store, evaluations(MONDAY + 5))
    config = make_config(tmp_path)
    failing = StaticLookup(
        DNS, failing=frozenset({"sender.example._report._dmarc.reports.example"})
    )
    assert asyncio.run(send_daily_reports(store, failing, config, TUESDAY)) == []
    assert asyncio.run(store.read(lambda tx: tx.queue.entries())) == []
    pending = asyncio.run(store.read(lambda tx: tx.dmarc.pending_report_domains(TUESDAY)))
    assert pending == ["sender.example"]
    # The next day DNS answers: one report covers both days that were missed.
    queued = asyncio.run(send_daily_reports(store, StaticLookup(DNS), config, TUESDAY + DAY))
    assert len(queued) == 1


def test_a_domain_that_stopped_asking_gets_no_report(store: Store, tmp_path: Path) -> None:
    record_all(store, evaluations(MONDAY + 5))
    dns = dict(DNS)
    dns[("_dmarc.sender.example", "TXT")] = ["v=DMARC1; p=none"]
    config = make_config(tmp_path)
    assert asyncio.run(send_daily_reports(store, StaticLookup(dns), config, TUESDAY)) == []
    assert asyncio.run(store.read(lambda tx: tx.dmarc.pending_report_domains(2e9))) == []


def test_a_report_to_our_own_domain_is_collected_or_delivered(store: Store, tmp_path: Path) -> None:
    """Reports about our own domain (forgeries our checks saw) come back to us: to the
    collector at dmarc-reports@, and to a user when the rua names one."""
    record = "v=DMARC1; p=reject; rua=mailto:dmarc-reports@example.test,mailto:alice@example.test"
    dns = {("_dmarc.example.test", "TXT"): [record], ("example.test", "A"): ["192.0.2.2"]}
    parsed = parse_record(record)
    forged = DmarcOutcome(
        "fail", "reject", "example.test", parsed, False, False, "forged", requested="reject"
    )
    found = evaluation_record(
        forged,
        time=MONDAY + 5,
        source_ip="198.51.100.4",
        header_from="example.test",
        spf=("spam.example", "fail"),
    )
    assert found is not None
    record_all(store, [found])
    asyncio.run(store.write(lambda tx: tx.accounts.add_user("alice@example.test", "x", "y")))
    config = make_config(tmp_path)
    queued = asyncio.run(send_daily_reports(store, StaticLookup(dns), config, TUESDAY))
    assert len(queued) == 1
    [collected] = kept(store)
    assert (collected.reporter, collected.domain, collected.messages) == (
        "mx.example.test",
        "example.test",
        1,
    )
    assert collected.rows[0].disposition == "reject"
    trace = asyncio.run(store.read(lambda tx: tx.history.trace(queued[0])))
    assert trace is not None
    assert [(e.recipient, e.event) for e in trace.events] == [
        ("alice@example.test", str(RecipientState.DELIVERED))
    ]
    assert asyncio.run(store.read(lambda tx: tx.queue.entries())) == []


def test_record_text_reads_back() -> None:
    records = [
        DmarcRecord(p="reject"),
        DmarcRecord(
            p="quarantine",
            sp="none",
            np="reject",
            adkim="s",
            aspf="s",
            pct=20,
            t=True,
            psd="n",
            rua=("mailto:a@example.test", "mailto:b@example.net"),
            ruf=("mailto:f@example.test",),
            fo="1:d",
        ),
    ]
    for record in records:
        assert parse_record(record_text(record)) == record


def test_no_record_no_evaluation() -> None:
    nothing = DmarcOutcome("none", "none", None, None, False, False, "no record")
    assert (
        evaluation_record(
            nothing, time=1.0, source_ip="192.0.2.1", header_from="x.example", spf=None
        )
        is None
    )


def test_the_timer_sends_at_once_then_sleeps_until_after_midnight(
    store: Store, tmp_path: Path
) -> None:
    record_all(store, evaluations(MONDAY + 5))
    config = make_config(tmp_path)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        raise asyncio.CancelledError

    moment = TUESDAY + 3 * 3600
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(
            dmarc_reporting.run_daily(
                store, StaticLookup(DNS), config, clock=lambda: moment, sleep=sleep, jitter=0.0
            )
        )
    assert sleeps == [DAY - 3 * 3600]
    assert len(asyncio.run(store.read(lambda tx: tx.queue.entries()))) == 1


def test_a_destination_that_is_no_mailbox_is_left_out(store: Store, tmp_path: Path) -> None:
    """rua URIs are percent-decoded: a CR/LF or a blank there must not reach RCPT TO."""
    record = (
        "v=DMARC1; p=reject; rua=mailto:a%0D%0ARSET@sender.example,"
        "mailto:with%20blank@sender.example,mailto:agg@sender.example"
    )
    dns = dict(DNS)
    dns[("_dmarc.sender.example", "TXT")] = [record]
    found = evaluation_record(
        outcome("pass", record),
        time=MONDAY + 5,
        source_ip="192.0.2.1",
        header_from="sender.example",
        spf=("sender.example", "pass"),
    )
    assert found is not None
    record_all(store, [found])
    config = make_config(tmp_path)
    [queue_id] = asyncio.run(send_daily_reports(store, StaticLookup(dns), config, TUESDAY))
    message, content = queued_report(store, queue_id)
    assert [r.address for r in message.recipients] == ["agg@sender.example"]
    assert b"RSET" not in content


def test_what_was_done_is_reported_with_its_reason() -> None:
    quarantine = "v=DMARC1; p=quarantine; rua=mailto:agg@sender.example"
    failing, passing = outcome("fail", quarantine), outcome("pass", quarantine)
    assert applied(passing, "deliver") == ("pass", None)
    assert applied(failing, "junk") == ("quarantine", None)
    assert applied(failing, "deliver") == ("none", "local_policy")  # [verify] said mark
    assert applied(failing, "reject") == ("reject", "local_policy")
    assert applied(failing, "deliver", trusted_forwarder=True) == ("none", "trusted_forwarder")
    testing = DmarcOutcome(
        "fail",
        "none",
        "sender.example",
        parse_record(quarantine + "; t=y"),
        False,
        False,
        "t=y",
        requested="quarantine",
        override="policy_test_mode",
    )
    assert applied(testing, "deliver") == ("none", "policy_test_mode")
