"""DMARC aggregate reports, received and sent (issue 13 §5; DMARCbis aggregate reporting, the
draft that became RFC 9990).

Received: mail for `dmarc-reports@DOMAIN` of any local domain (the rua address `postroom dns
records` publishes) is a report another receiver sends about our domain. `take_report` (for
ingress) and `collect` (inside a transaction) find the report in the message — an attachment
`application/gzip`, `application/zip`, `application/xml` or `text/xml` (or one named .xml,
.xml.gz, .gz, .zip), or the whole body — parse it with `mailauth.dmarc_reports.parse_report`
and keep its summary in the store (once per reporter and report ID). A message that holds no
readable report answers False and is logged in one line: the caller then delivers it as a
normal message (to the postmaster).

Sent: ingress counts what it evaluated with `evaluation_record` (the disposition from what it
did, `applied`) and `Dmarc.record_evaluation`; once a day `send_daily_reports` turns the
evaluations of the finished UTC days into one report per Policy Domain whose record asks for
them (rua=, checked again in DNS at sending time, each external destination verified), queued
like postroom's own bounces, in the transaction that forgets the evaluations it covers.
`run_daily` is the timer the server runs.
"""

from __future__ import annotations

import asyncio
import email.policy
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from typing import cast

from postroom.config import Config
from postroom.delivery.local import deliver_before_queuing
from postroom.dns.lookup import DnsLookup
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth.dmarc import (
    DmarcOutcome,
    DmarcRecord,
    DmarcRecordError,
    discover,
    parse_record,
    report_destinations,
)
from postroom.mailauth.dmarc_reports import (
    AggregateReport,
    Disposition,
    DkimAuth,
    EvaluationRow,
    OverrideReason,
    ReportError,
    SpfAuth,
    parse_report,
    report_message_attachment,
    report_subject,
)
from postroom.model.queue import QueuedMessage, Recipient, new_queue_id
from postroom.proto.smtp.params import validate_mailbox
from postroom.proto.smtp.replies import ClientError
from postroom.queue.reports import queue_message
from postroom.services.dns_records import DMARC_REPORTS
from postroom.storage.api import Store, Tx
from postroom.storage.buffer import ContentBuffer
from postroom.storage.records import (
    EvaluationRecord,
    ReceivedReport,
    ReceivedRow,
    StorageFailure,
)

log = logging.getLogger("postroom.dmarc")

REPORT_LOCAL_PART = DMARC_REPORTS  # the rua mailbox `dns records` publishes, and our From
DAY = 86400
MAX_MESSAGE = 32 * 1024 * 1024  # a report message read at all (20 MiB of report, base64'd)
MAX_PARTS = 64  # MIME parts looked at for the report
MAX_TEXT = 255  # characters kept of a report's names and identifiers
KEEP_EVALUATIONS_DAYS = 7  # evaluations not reported by then (DNS failing) are dropped
KEEP_REPORTS_DAYS = 400  # received reports are kept this long after their period
# Aggregate reporting §2.1: the override reasons with a type of their own.
REASON_TYPES = frozenset(
    {"local_policy", "mailing_list", "other", "policy_test_mode", "trusted_forwarder"}
)
_DISPOSITIONS = frozenset({"none", "pass", "quarantine", "reject"})
_REPORT_TYPES = frozenset(
    {
        "application/gzip",
        "application/x-gzip",
        "application/zip",
        "application/x-zip",
        "application/x-zip-compressed",
        "application/xml",
        "text/xml",
    }
)
_REPORT_SUFFIXES = (".xml", ".xml.gz", ".gz", ".zip")


# -- receiving -----------------------------------------------------------------------------


def is_report_address(address: str, local_domains: Collection[str]) -> bool:
    """Whether `address` is the rua address of one of our domains (`dmarc-reports@DOMAIN`)."""
    local, at, domain = address.rpartition("@")
    return (
        bool(at)
        and local.lower() == REPORT_LOCAL_PART
        and (domain.lower().rstrip(".") in local_domains)
    )


def report_address(config: Config) -> str:
    """Where our reports come from (RFC5322.From and MAIL FROM) and replies go."""
    return f"{REPORT_LOCAL_PART}@{config.domains[0].lower()}"


def parse_message(
    message: bytes, received: float, *, domains: Collection[str] | None = None
) -> ReceivedReport:
    """The report a message carries; ReportError saying why when it carries none that reads,
    or (with `domains`) when its policy domain is not one of them or below one."""
    if len(message) > MAX_MESSAGE:
        raise ReportError(f"message larger than {MAX_MESSAGE} bytes")
    parsed = BytesParser(policy=email.policy.default).parsebytes(message)
    message_id = _header(parsed, "Message-ID")
    candidates = _candidates(parsed)
    if not candidates:
        raise ReportError("no report attachment (gzip, zip or XML)")
    problem: ReportError | None = None
    for payload, filename in candidates:
        try:
            report = _summary(parse_report(payload, filename), received, message_id)
        except ReportError as error:
            problem = problem or error
            continue
        if domains is not None and not _ours(report.domain, domains):
            raise ReportError(f"a report about {report.domain!r}, not one of our domains")
        return report
    assert problem is not None
    raise problem


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # a header the parser cannot make sense of is no identifier
        return ""
    return " ".join(str(value).split())[:MAX_TEXT] if value is not None else ""


def _candidates(message: EmailMessage) -> list[tuple[bytes, str | None]]:
    """The parts that may hold the report (aggregate reporting §2.5: one of the parts), the
    likeliest first: by media type, then by file name; a single-part message's whole body."""
    typed: list[tuple[bytes, str | None]] = []
    named: list[tuple[bytes, str | None]] = []
    for index, part in enumerate(message.walk()):
        if index >= MAX_PARTS:
            break
        if part.is_multipart():
            continue
        filename = _filename(part)
        kind = part.get_content_type()
        named_like = filename is not None and filename.lower().endswith(_REPORT_SUFFIXES)
        if kind in _REPORT_TYPES:
            target = typed
        elif named_like or (part is message and _looks_like_report(part)):
            target = named
        else:
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and payload:
            target.append((payload, filename))
    return typed + named


def _filename(part: EmailMessage) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # a broken RFC 2231 parameter
        return None
    return str(name)[:MAX_TEXT] if name else None


def _looks_like_report(part: EmailMessage) -> bool:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return False
    head = payload[:64].lstrip()
    return head[:2] == b"\x1f\x8b" or head[:2] == b"PK" or head[:1] == b"<"


def _ours(domain: str, domains: Collection[str]) -> bool:
    name = domain.lower().rstrip(".")
    return any(name == d or name.endswith("." + d) for d in (x.lower() for x in domains))


def _cut(text: str | None) -> str:
    return (text or "")[:MAX_TEXT]


def _summary(report: AggregateReport, received: float, message_id: str) -> ReceivedReport:
    policy = report.policy
    published = [
        ("p", policy.p),
        ("sp", policy.sp),
        ("np", policy.np),
        ("adkim", policy.adkim),
        ("aspf", policy.aspf),
        ("pct", None if policy.pct is None else str(policy.pct)),
        ("fo", policy.fo),
        ("testing", policy.testing),
        ("discovery_method", policy.discovery_method),
    ]
    rows = tuple(
        ReceivedRow(
            source_ip=row.source_ip,
            count=row.count,
            disposition=_cut(row.disposition),
            dkim=_cut(row.dkim),
            spf=_cut(row.spf),
            header_from=_cut(row.header_from),
            envelope_from=None if row.envelope_from is None else _cut(row.envelope_from),
            dkim_results=tuple(
                (_cut(d.domain), _cut(d.selector), _cut(d.result)) for d in row.dkim_results
            ),
            spf_results=tuple((_cut(s.domain), _cut(s.result)) for s in row.spf_results),
        )
        for row in report.records
    )
    return ReceivedReport(
        reporter=_cut(report.org_name),
        email=_cut(report.email),
        report_id=_cut(report.report_id),
        begin=report.begin,
        end=report.end,
        domain=_cut(report.domain),
        policy="; ".join(f"{name}={_cut(value)}" for name, value in published if value),
        rows=rows,
        received=received,
        message_id=message_id,
        schema=report.schema,
        errors=tuple(_cut(error) for error in report.errors[:20]),
    )


def _stored(tx: Tx, report: ReceivedReport) -> bool:
    added = tx.dmarc.add_report(report)
    period = f"{_date(report.begin)}/{_date(report.end)}"
    log.info(
        "dmarc report %s reporter=%r id=%r domain=%s period=%s messages=%d message-id=%s",
        "stored" if added else "duplicate",
        report.reporter,
        report.report_id,
        one_line(report.domain),
        period,
        report.messages,
        one_line(report.message_id or "-"),
    )
    return True


def _refused(error: ReportError, message_id: str | None) -> bool:
    # One line, no traceback: the message is then delivered like any other.
    log.warning(
        "dmarc report unreadable message-id=%s: %s",
        one_line(message_id or "-"),
        one_line(error.reason),
    )
    return False


def collect(
    tx: Tx, message_bytes: bytes, received: float, *, domains: Collection[str] | None = None
) -> bool:
    """Keep the report `message_bytes` carries; False (logged) when it has none that reads.
    A report kept already (same reporter and ID) is True: there is nothing to deliver."""
    try:
        report = parse_message(message_bytes, received, domains=domains)
    except ReportError as error:
        return _refused(error, _message_id_of(message_bytes))
    return _stored(tx, report)


async def take_report(
    store: Store,
    content: bytes | ContentBuffer,
    received: float,
    *,
    domains: Collection[str] | None = None,
) -> bool:
    """`collect` for the server: the message is read and parsed on a worker thread (a report
    may be megabytes of XML), then kept in a group commit. False (logged): deliver the message
    as a normal one. StorageFailure rises (answer 451 and log, like any failed write)."""

    def parse() -> ReceivedReport | ReportError:
        data = content if isinstance(content, bytes) else content.contents()
        try:
            return parse_message(data, received, domains=domains)
        except ReportError as error:
            _refused(error, _message_id_of(data))
            return error

    parsed = await asyncio.to_thread(parse)
    if isinstance(parsed, ReportError):
        return False
    report = parsed
    return await store.write(lambda tx: _stored(tx, report))


def _message_id_of(message: bytes) -> str | None:
    head = message[: message.find(b"\r\n\r\n") if b"\r\n\r\n" in message else 65536]
    for line in head[:65536].splitlines():
        if line[:11].lower() == b"message-id:":
            return line[11:].strip().decode("ascii", "replace")[:MAX_TEXT]
    return None


def one_line(text: str) -> str:
    """Text from a hostile message made fit for one log line: controls shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:500])


def _date(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).date().isoformat()


# -- what we evaluated -------------------------------------------------------------------------


def record_text(record: DmarcRecord) -> str:
    """A DMARC record text `parse_record` reads back as `record` (DMARCbis §4.7 tags)."""
    tags = [f"v=DMARC1; p={record.p}"]
    if record.sp is not None:
        tags.append(f"sp={record.sp}")
    if record.np is not None:
        tags.append(f"np={record.np}")
    tags.append(f"adkim={record.adkim}; aspf={record.aspf}")
    if record.pct != 100:
        tags.append(f"pct={record.pct}")
    if record.t:
        tags.append("t=y")
    if record.psd != "u":
        tags.append(f"psd={record.psd}")
    tags.append(f"fo={record.fo}")
    if record.rua:
        tags.append("rua=" + ",".join(record.rua))
    if record.ruf:
        tags.append("ruf=" + ",".join(record.ruf))
    return "; ".join(tags)


def evaluation_record(
    outcome: DmarcOutcome,
    *,
    time: float,
    source_ip: str,
    header_from: str,
    spf: tuple[str, str] | None,
    dkim: Sequence[tuple[str, str, str]] = (),
    disposition: Disposition | None = None,
    override: str | None = None,
) -> EvaluationRecord | None:
    """What to count for the aggregate report about one message: `spf` is (domain, result)
    of the identity SPF checked, `dkim` (d=, s=, result) per signature. `disposition` is what
    was done when it differs from what DMARC asked (our [verify] settings, a trusted ARC
    sealer), with `override` the reason type ("local_policy", "trusted_forwarder", ...).
    None when no DMARC record applied: there is nobody to report to."""
    record = outcome.record
    if record is None or outcome.policy_domain is None:
        return None
    if disposition is None:
        disposition = "pass" if outcome.result == "pass" else outcome.policy
    return EvaluationRecord(
        time=time,
        policy_domain=outcome.policy_domain,
        header_from=header_from.lower().rstrip("."),
        source_ip=source_ip,
        result=outcome.result,
        disposition=disposition,
        spf_aligned=outcome.spf_aligned,
        dkim_aligned=outcome.dkim_aligned,
        spf=spf,
        dkim=tuple(dkim)[:100],  # aggregate reporting §2.1.3: at most 100 signatures a row
        override=override if override is not None else outcome.override,
        record=record_text(record),
        rua=record.rua,
        wants_reports=bool(record.rua),
    )


_DONE: dict[str, Disposition] = {"reject": "reject", "junk": "quarantine"}


def applied(
    outcome: DmarcOutcome, action: str, *, trusted_forwarder: bool = False
) -> tuple[Disposition, str | None]:
    """The disposition to report for what ingress did (`auth_policy.Decision.action`: deliver,
    junk, reject) and, when it is not what DMARC asked, the reason type (aggregate reporting
    §2.1): "trusted_forwarder" when a trusted ARC sealer let the message through, else
    "local_policy" (our [verify] settings); the outcome's own reason (t=y) when they agree."""
    if outcome.result == "pass":
        return "pass", None
    done = _DONE.get(action, "none")
    if done == outcome.policy:
        return done, outcome.override
    return done, "trusted_forwarder" if trusted_forwarder else "local_policy"


# -- sending -------------------------------------------------------------------------------


def utc_day(moment: float) -> int:
    return int(moment // DAY) * DAY


async def send_daily_reports(
    store: Store,
    lookup: DnsLookup,
    config: Config,
    now: float,
    *,
    wake: Callable[[], None] | None = None,
) -> list[str]:
    """Send one aggregate report per Policy Domain with evaluations of finished UTC days
    (those before the day of `now`, however many were missed) whose record asks for reports.
    Returns the queue IDs of the report messages queued. A DNS failure leaves a domain's
    evaluations for the next run (at most KEEP_EVALUATIONS_DAYS); `wake` starts outbound
    delivery once something was queued."""
    end = utc_day(now)
    await store.write(
        lambda tx: tx.dmarc.forget_evaluations(None, end - KEEP_EVALUATIONS_DAYS * DAY)
    )
    domains = await store.read(lambda tx: tx.dmarc.pending_report_domains(end))
    queued: list[str] = []
    for domain in domains:
        try:
            message_id = await _report_domain(store, lookup, config, domain, end, now)
        except DnsTemporaryError as error:
            log.warning("dmarc report domain=%s deferred to the next run: %s", domain, error)
            continue
        except StorageFailure as failure:
            log.warning("dmarc report domain=%s not sent: %s", domain, failure)
            continue
        except Exception:  # one domain's trouble does not keep the others' reports back
            log.exception("dmarc report domain=%s failed", domain)
            continue
        if message_id is not None:
            queued.append(message_id)
    if queued and wake is not None:
        wake()
    return queued


async def _report_domain(
    store: Store, lookup: DnsLookup, config: Config, domain: str, end: int, now: float
) -> str | None:
    evaluations = await store.read(lambda tx: tx.dmarc.evaluations(domain, 0, end))
    if not evaluations:
        return None

    async def drop(why: str) -> None:
        log.info("dmarc report domain=%s not sent: %s", domain, why)
        await store.write(lambda tx: tx.dmarc.forget_evaluations(domain, end))

    latest = max(evaluations, key=lambda e: e.time)
    try:
        applied = parse_record(latest.record)
        # The record as published now says where reports go (or that none are wanted).
        current = await discover(lookup, domain)
    except DmarcRecordError as error:
        await drop(f"unusable DMARC record: {error}")
        return None
    if current is None or current.domain != domain or not current.record.rua:
        await drop("its DMARC record asks for no aggregate reports now")
        return None
    # Aggregate reporting §3: addresses outside the domain must confirm they take its reports.
    verified = await report_destinations(lookup, domain, current.record.rua)
    # What DNS gave is percent-decoded: only RFC 5321 mailboxes (no CR/LF, no blanks) go on.
    destinations = tuple(address for address in verified if _mailbox(address))
    if not destinations:
        await drop("no report destination verified (" + ", ".join(current.record.rua) + ")")
        return None
    begin = min(utc_day(e.time) for e in evaluations)
    submitter = config.domains[0].lower()
    sender = report_address(config)
    report_id = f"{new_queue_id(now)}.{domain}"
    # Many rows make gzip and XML work: off the event loop.
    filename, _, data = await asyncio.to_thread(
        report_message_attachment,
        receiver=submitter,
        org_name=config.hostname,
        email=sender,
        report_id=report_id,
        begin=begin,
        end=end - 1,  # aggregate reporting §2.1: the period's last second, inclusive
        domain=domain,
        record=applied,
        rows=[_row(e) for e in evaluations],
    )
    content = report_message(
        sender=sender,
        recipients=destinations,
        subject=report_subject(domain, submitter, report_id),
        filename=filename,
        report=data,
        hostname=config.hostname,
        now=now,
        description=(
            f"A DMARC aggregate report from {config.hostname} about mail from {domain}, "
            f"{_date(begin)} to {_date(end - 1)} (UTC): "
            f"{sum(e.count for e in evaluations)} messages."
        ),
    )
    local_domains = frozenset(d.lower() for d in config.domains)

    def write(tx: Tx) -> QueuedMessage | None:
        tx.dmarc.forget_evaluations(domain, end)
        return queue_report(
            tx,
            content,
            destinations,
            sender=sender,
            hostname=config.hostname,
            local_domains=local_domains,
            now=now,
        )

    message = await store.write(write)
    log.info(
        "dmarc report sent domain=%s id=%s to=%s queue-id=%s",
        domain,
        report_id,
        ",".join(f"<{d}>" for d in destinations),
        message.id if message is not None else "-",
    )
    return message.id if message is not None else None


def _mailbox(address: str) -> bool:
    try:
        validate_mailbox(address, utf8=False)  # RFC 5321 §4.1.2
    except ClientError:
        log.info("dmarc report destination refused: not a mailbox: %s", one_line(address))
        return False
    return True


def _row(evaluation: EvaluationRecord) -> EvaluationRow:
    spf = evaluation.spf
    disposition = evaluation.disposition if evaluation.disposition in _DISPOSITIONS else "none"
    return EvaluationRow(
        source_ip=evaluation.source_ip,
        header_from=evaluation.header_from,
        disposition=cast(Disposition, disposition),
        dkim_aligned=evaluation.dkim_aligned,
        spf_aligned=evaluation.spf_aligned,
        envelope_from=spf[0] if spf is not None and spf[0] else None,
        dkim_results=tuple(DkimAuth(d, s or None, r) for d, s, r in evaluation.dkim),
        spf_results=(SpfAuth(spf[0], spf[1]),) if spf is not None else (),
        reasons=_reasons(evaluation.override),
        count=evaluation.count,
    )


def _reasons(override: str | None) -> tuple[OverrideReason, ...]:
    if override is None:
        return ()
    if override in REASON_TYPES:
        return (OverrideReason(override),)
    return (OverrideReason("other", override.replace("_", " ")),)


def report_message(
    *,
    sender: str,
    recipients: Sequence[str],
    subject: str,
    filename: str,
    report: bytes,
    hostname: str,
    now: float,
    description: str,
) -> bytes:
    """The report message (aggregate reporting §2.5): a short text and the gzip'd report as
    an `application/gzip` attachment, From our report address, To every destination."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    message["Message-ID"] = f"<{new_queue_id(now)}.dmarc@{hostname}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5: not a reply to anyone
    message.set_content(description + "\n")
    message.add_attachment(report, maintype="application", subtype="gzip", filename=filename)
    return message.as_bytes()


def queue_report(
    tx: Tx,
    content: bytes,
    destinations: Sequence[str],
    *,
    sender: str,
    hostname: str,
    local_domains: frozenset[str],
    now: float,
) -> QueuedMessage | None:
    """Queue a report message from `sender` (not `<>`: the report must pass DMARC at the
    receiver, so its MAIL FROM is in our domain and SPF can align) to `destinations`. A
    destination in our own domains is resolved like any local address; our own report
    address is collected here and now. None when nobody is left to deliver to."""
    recipients: list[Recipient] = []
    seen: set[str] = set()

    def add(rcpt: Recipient) -> None:
        if rcpt.address not in seen:
            seen.add(rcpt.address)
            recipients.append(rcpt)

    for address in destinations:
        domain = address.rpartition("@")[2].lower()
        if domain not in local_domains:
            add(Recipient(address, address, None))
            continue
        resolution = tx.accounts.resolve(address, local_domains)
        if resolution.empty and is_report_address(address, local_domains):
            collect(tx, content, now)
            continue
        for target, user_id in resolution.local_users:
            add(Recipient(target, address, user_id))
        for target in resolution.remote:
            add(Recipient(target, address, None))
    if not recipients:
        return None
    return queue_message(
        tx,
        content,
        recipients,
        sender=sender,
        hostname=hostname,
        now=now,
        deliver_local=deliver_before_queuing,
    )


async def run_daily(
    store: Store,
    lookup: DnsLookup,
    config: Config,
    *,
    wake: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    jitter: float = 1800.0,
) -> None:
    """The server's timer: reports for the days missed at once, then once a day, a little
    after midnight UTC (a random delay up to `jitter` seconds, so receivers everywhere do not
    all send at the same second). Runs until cancelled; a failure is logged and retried the
    next day."""
    while True:
        try:
            await send_daily_reports(store, lookup, config, clock(), wake=wake)
            await store.write(lambda tx: tx.dmarc.forget_reports(clock() - KEEP_REPORTS_DAYS * DAY))
        except asyncio.CancelledError:
            raise
        except StorageFailure as failure:
            log.warning("dmarc reports: %s", failure)
        except Exception:
            log.exception("dmarc reports failed; trying again tomorrow")
        now = clock()
        wait = utc_day(now) + DAY - now + random.uniform(0, jitter)
        await sleep(wait)
