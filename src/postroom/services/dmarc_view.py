"""The DMARC aggregate reports received as people see them, the same in `postroom dmarc reports`,
the web admin's `/admin/reports` and `GET /api/v1/dmarc/reports`: periods as ISO 8601 UTC
dates, a report as JSON (stable keys; times in Unix seconds), a page of reports by domain and
period, and per domain of ours what the last 30 days of reports say — messages by DMARC
result and the source IPs that failed most (who sends as the domain and fails).

Anyone can mail a report to `dmarc-reports@`, so every read is bounded: a page is `PAGE_SIZE`
reports, a summary reads the newest `SUMMARY_REPORTS` of a domain.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from postroom.storage.api import Tx
from postroom.storage.records import EvaluationDay, ReceivedReport, ReceivedRow

DAY = 86400
PAGE_SIZE = 50  # reports per page
SUMMARY_DAYS = 30
SUMMARY_REPORTS = 2000  # newest reports of a domain a summary reads at most
TOP_SOURCES = 10  # failing source IPs a summary names
EVALUATION_DAYS = 200  # (domain, day) rows of our unreported evaluations shown at most


def utc_date(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).date().isoformat()


def utc_time(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def period(report: ReceivedReport) -> str:
    """ISO 8601 interval of UTC dates (a one-day report's end is its last second)."""
    return f"{utc_date(report.begin)}/{utc_date(report.end)}"


def dmarc_counts(report: ReceivedReport) -> tuple[int, int]:
    """Messages that passed DMARC and that failed, as the reporter evaluated them."""
    passed = sum(row.count for row in report.rows if row.dmarc == "pass")
    return passed, report.messages - passed


def report_json(report: ReceivedReport, *, rows: bool = True) -> dict[str, object]:
    """Every field of a report; without its rows (a listing) when `rows` is False."""
    passed, failed = dmarc_counts(report)
    shaped: dict[str, object] = {
        "id": report.id,
        "reporter": report.reporter,
        "email": report.email,
        "report_id": report.report_id,
        "begin": report.begin,
        "end": report.end,
        "domain": report.domain,
        "policy": report.policy,
        "schema": report.schema,
        "errors": list(report.errors),
        "received": int(report.received),
        "message_id": report.message_id or None,
        "messages": report.messages,
        "passed": passed,
        "failed": failed,
    }
    if rows:
        shaped["rows"] = [row_json(row) for row in report.rows]
    return shaped


def row_json(row: ReceivedRow) -> dict[str, object]:
    """One row of a report: aligned results (`dkim`, `spf`, `dmarc`) and the raw ones."""
    return {
        "source_ip": row.source_ip,
        "count": row.count,
        "disposition": row.disposition,
        "dmarc": row.dmarc,
        "dkim": row.dkim,
        "spf": row.spf,
        "header_from": row.header_from,
        "envelope_from": row.envelope_from,
        "dkim_results": [
            {"domain": d, "selector": s or None, "result": r} for d, s, r in row.dkim_results
        ],
        "spf_results": [{"domain": d, "result": r} for d, r in row.spf_results],
    }


class FilterError(ValueError):
    """A listing asked for something that cannot be; the text says what and how."""


@dataclass(frozen=True)
class ReportFilter:
    """Which reports a listing shows: about `domain` (None: all), whose period overlaps the UTC
    dates `first`..`last` (inclusive, None: unbounded), page `page` (from 1)."""

    domain: str | None = None
    first: str | None = None
    last: str | None = None
    page: int = 1

    @classmethod
    def parse(cls, domain: str, first: str, last: str, page: str) -> ReportFilter:
        """From a form or query string ("" for a field not given); FilterError names the
        field."""
        name = domain.strip().rstrip(".").lower()
        if len(name) > 253:
            raise FilterError("domain: at most 253 characters")
        first, last = _iso_date("from", first), _iso_date("to", last)
        if first and last and first > last:
            raise FilterError("from: the first date comes before the last one (to)")
        number = page.strip() or "1"
        if not (number.isascii() and number.isdigit()) or not 1 <= int(number) <= 100_000:
            raise FilterError("page: a number from 1 to 100000")
        return cls(name or None, first or None, last or None, int(number))

    def bounds(self) -> tuple[int | None, int | None]:
        """[begin, end) in Unix seconds: from the first date's start to the last one's end."""
        begin = None if self.first is None else _day_start(self.first)
        end = None if self.last is None else _day_start(self.last) + DAY
        return begin, end

    def query(self, page: int) -> dict[str, str]:
        """This filter on another page, as query parameters (those set only)."""
        fields = {"domain": self.domain, "from": self.first, "to": self.last}
        shown = {key: value for key, value in fields.items() if value}
        return {**shown, "page": str(page)} if page > 1 else shown


def _iso_date(label: str, value: str) -> str:
    """A date given as YYYY-MM-DD, written the one way ISO 8601 does ("" stays "")."""
    if not value:
        return ""
    try:
        return datetime.strptime(value, "%Y-%m-%d").date().isoformat()
    except ValueError:
        raise FilterError(f"{label}: a date as YYYY-MM-DD, not {value[:40]!r}") from None


def _day_start(date: str) -> int:
    return int(datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class ReportPage:
    reports: list[ReceivedReport]
    more: bool  # an older page exists


def report_page(tx: Tx, wanted: ReportFilter) -> ReportPage:
    begin, end = wanted.bounds()
    found = tx.dmarc.report_page(
        wanted.domain, begin, end, PAGE_SIZE + 1, (wanted.page - 1) * PAGE_SIZE
    )
    return ReportPage(found[:PAGE_SIZE], len(found) > PAGE_SIZE)


@dataclass(frozen=True)
class FailingSource:
    ip: str
    failed: int  # messages from it that failed DMARC
    reporters: int  # how many reporters saw them


@dataclass(frozen=True)
class DomainSummary:
    """What the reports of the last `SUMMARY_DAYS` say about one of our domains."""

    domain: str
    reports: int
    results: tuple[tuple[str, int], ...]  # messages by DMARC result, most first
    dispositions: tuple[tuple[str, int], ...]  # messages by what the reporters did
    failing: tuple[FailingSource, ...]  # the source IPs that failed most
    capped: bool  # more than SUMMARY_REPORTS reports: the newest were read

    @property
    def messages(self) -> int:
        return sum(count for _, count in self.results)


def summaries(tx: Tx, domains: list[str], now: float) -> list[DomainSummary]:
    """One summary per domain, over the reports whose period reaches into the last
    `SUMMARY_DAYS` days."""
    since = int(now) - SUMMARY_DAYS * DAY
    found = []
    for domain in domains:
        reports = tx.dmarc.report_page(domain, since, None, SUMMARY_REPORTS + 1)
        found.append(summary(domain, reports[:SUMMARY_REPORTS], len(reports) > SUMMARY_REPORTS))
    return found


def summary(domain: str, reports: list[ReceivedReport], capped: bool) -> DomainSummary:
    results: Counter[str] = Counter()
    dispositions: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    seen_by: dict[str, set[str]] = {}
    for report in reports:
        for row in report.rows:
            results[row.dmarc] += row.count
            dispositions[row.disposition or "-"] += row.count
            if row.dmarc != "pass":
                failed[row.source_ip] += row.count
                seen_by.setdefault(row.source_ip, set()).add(report.reporter)
    failing = tuple(
        FailingSource(ip, count, len(seen_by[ip])) for ip, count in failed.most_common(TOP_SOURCES)
    )
    return DomainSummary(
        domain,
        len(reports),
        tuple(results.most_common()),
        tuple(dispositions.most_common()),
        failing,
        capped,
    )


def evaluation_days(tx: Tx) -> list[EvaluationDay]:
    """What our own aggregate reports will count: the evaluations not reported yet."""
    return tx.dmarc.evaluation_days(EVALUATION_DAYS)
