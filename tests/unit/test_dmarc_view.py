"""services/dmarc_view.py: the listing's filter from what a form or query string gives, a
domain's summary (messages by DMARC result, the sources failing most), a report as JSON."""

from __future__ import annotations

import pytest

from postroom.services.dmarc_view import (
    FailingSource,
    FilterError,
    ReportFilter,
    period,
    report_json,
    summary,
)
from postroom.storage.records import ReceivedReport, ReceivedRow

DAY = 86400
MONDAY = 1_714_953_600  # 2024-05-06T00:00:00Z


def report(reporter: str, *rows: ReceivedRow, begin: int = MONDAY) -> ReceivedReport:
    return ReceivedReport(
        reporter=reporter,
        email=f"dmarc@{reporter}",
        report_id="1",
        begin=begin,
        end=begin + DAY - 1,
        domain="example.org",
        policy="p=reject",
        rows=rows,
        received=begin + DAY,
        id=7,
    )


def test_a_filter_from_a_query_string() -> None:
    wanted = ReportFilter.parse(" Example.ORG. ", "2024-05-06", "2024-05-07", "3")
    assert wanted == ReportFilter("example.org", "2024-05-06", "2024-05-07", 3)
    assert wanted.bounds() == (MONDAY, MONDAY + 2 * DAY)
    assert wanted.query(4) == {
        "domain": "example.org",
        "from": "2024-05-06",
        "to": "2024-05-07",
        "page": "4",
    }
    assert wanted.query(1) == {"domain": "example.org", "from": "2024-05-06", "to": "2024-05-07"}
    assert ReportFilter.parse("", "2024-5-6", "", "") == ReportFilter(first="2024-05-06")
    assert ReportFilter.parse("", "", "", "") == ReportFilter()
    assert ReportFilter().bounds() == (None, None)


@pytest.mark.parametrize(
    ("domain", "first", "last", "page", "field"),
    [
        ("x" * 254, "", "", "", "domain:"),
        ("", "2024-5-6x", "", "", "from:"),
        ("", "", "2024-13-01", "", "to:"),
        ("", "2024-05-07", "2024-05-06", "", "from:"),
        ("", "2024-5-10", "2024-05-09", "", "from:"),  # compared as dates, not as texts
        ("", "", "", "0", "page:"),
        ("", "", "", "-1", "page:"),
        ("", "", "", "100001", "page:"),
        ("", "", "", "1e3", "page:"),
        ("", "", "", "\u00b2", "page:"),
    ],
)
def test_a_bad_filter_names_its_field(
    domain: str, first: str, last: str, page: str, field: str
) -> None:
    with pytest.raises(FilterError, match=f"^{field}"):
        ReportFilter.parse(domain, first, last, page)


def test_a_summary_counts_results_and_the_sources_failing_most() -> None:
    reports = [
        report(
            "google.com",
            ReceivedRow("192.0.2.1", 10, "none", "pass", "pass", "example.org"),
            ReceivedRow("203.0.113.9", 4, "reject", "fail", "fail", "example.org"),
            ReceivedRow("198.51.100.1", 1, "quarantine", "fail", "fail", "example.org"),
        ),
        report(
            "yahoo.com",
            ReceivedRow("203.0.113.9", 2, "reject", "fail", "fail", "example.org"),
            ReceivedRow("192.0.2.1", 3, "none", "fail", "pass", "example.org"),
        ),
    ]
    found = summary("example.org", reports, capped=False)
    assert (found.reports, found.messages) == (2, 20)
    assert found.results == (("pass", 13), ("fail", 7))
    assert found.dispositions == (("none", 13), ("reject", 6), ("quarantine", 1))
    assert found.failing == (
        FailingSource("203.0.113.9", 6, 2),
        FailingSource("198.51.100.1", 1, 1),
    )
    assert summary("example.org", [], capped=False).messages == 0


def test_a_report_as_json_with_and_without_rows() -> None:
    kept = report(
        "google.com",
        ReceivedRow(
            "192.0.2.1",
            10,
            "none",
            "pass",
            "fail",
            "example.org",
            dkim_results=(("example.org", "", "pass"),),
        ),
        ReceivedRow("203.0.113.9", 4, "reject", "fail", "fail", "example.org"),
    )
    assert period(kept) == "2024-05-06/2024-05-06"
    full = report_json(kept)
    assert (full["id"], full["messages"], full["passed"], full["failed"]) == (7, 14, 10, 4)
    rows = full["rows"]
    assert isinstance(rows, list)
    assert rows[0]["dkim_results"] == [
        {"domain": "example.org", "selector": None, "result": "pass"}
    ]
    assert report_json(kept, rows=False) == {k: v for k, v in full.items() if k != "rows"}
